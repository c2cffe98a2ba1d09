"""Command-line parsers built from options dataclasses.

Every command is an options dataclass (defaults, choices, validation: one
place) plus a ``run(opts)`` in the module that owns the work; the library never
sees argparse. A field becomes a command-line option through :func:`option`::

    @dataclass
    class ExportOptions:
        model: str = option(flags=("-m", "--model"), required=True, metavar="ENCODER.keras", help="the encoder")
        tolerance: float = option(1e-4, help="largest |numpy - keras| accepted")
        quiet: bool = QUIET

        def __post_init__(self):   # validation, as InputError (one line, exit 2)
            ...

    p = argparse.ArgumentParser(...); add_options(p, ExportOptions)
    opts = from_namespace(ExportOptions, p.parse_args(argv))

The argparse type comes from the annotation (``int``, ``float``, ``str``,
``bool`` -> a switch, ``tuple[int, ...]``/``list[str]`` -> ``nargs="+"``,
``X | None`` -> ``X``); flags default to ``--field-name``. :func:`to_argv` is
the inverse (the demo shows the command line equivalent to the options it ran).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Sequence

_MISSING = dataclasses.MISSING
#: Metadata key under which :func:`option` stores the command-line description of a field.
CLI = "cli"


def option(default: Any = _MISSING, *, flags: Sequence[str] = (), help: str = "", choices: Sequence[Any] | None = None,
           metavar: str | None = None, nargs: str | int | None = None, required: bool = False,
           type: Callable[[str], Any] | None = None, action: str | None = None, group: str | None = None,
           default_factory: Callable[[], Any] | Any = _MISSING) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring).

    ``type`` overrides the converter derived from the annotation (for a value
    syntax such as ``2000,5000``: a sequence field with a ``type`` is one
    comma-separated token); ``action`` is argparse's (``"append"``,
    ``"store_false"``); ``group`` puts the option under that heading in --help.
    A ``required`` option needs no default (it is None until parsed).
    """
    if default is _MISSING and default_factory is _MISSING:
        if not required:
            raise TypeError("an option needs a default unless it is required")
        default = None
    meta = {CLI: dict(flags=tuple(flags), help=help, choices=tuple(choices) if choices is not None else None,
                      metavar=metavar, nargs=nargs, required=required, type=type, action=action, group=group)}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: The ``--quiet`` switch every command has: nothing but errors on stderr (vae.cli.run applies it).
QUIET_HELP = "nothing but errors on stderr (no progress, summaries or warnings)"


def quiet_option() -> Any:
    """The shared ``--quiet`` field."""
    return option(False, help=QUIET_HELP)


def _cli_fields(cls) -> list[tuple[dataclasses.Field, dict]]:
    return [(f, f.metadata[CLI]) for f in dataclasses.fields(cls) if CLI in f.metadata]


def _unwrap(tp: Any) -> tuple[Any, bool, Any]:
    """(base type, is a sequence, element type) of an annotation, with ``| None`` removed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
        return str, False, None
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return origin, True, (args[0] if args else str)
    return tp, False, None


def _flags(f: dataclasses.Field, meta: dict) -> tuple[str, ...]:
    return meta["flags"] or ("--" + f.name.replace("_", "-"),)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None


def add_options(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    """Add one argparse option per :func:`option` field of dataclass ``cls`` (dest = the field name)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for f, meta in _cli_fields(cls):
        base, is_seq, elem = _unwrap(hints[f.name])
        default = _default(f)
        kw: dict[str, Any] = dict(dest=f.name, help=meta["help"])
        if meta["action"] in ("store_true", "store_false") or (base is bool and meta["action"] is None):
            kw["action"] = meta["action"] or ("store_false" if default else "store_true")
            kw["default"] = default
        else:
            if meta["action"]:
                kw["action"] = meta["action"]
            conv = meta["type"] or (elem if is_seq else base)
            if conv is not None and conv is not str and callable(conv):
                kw["type"] = conv
            if is_seq and meta["action"] != "append" and meta["type"] is None:
                kw["nargs"] = meta["nargs"] or "+"
            elif meta["nargs"] is not None:
                kw["nargs"] = meta["nargs"]
            kw["default"] = list(default) if isinstance(default, tuple) else default
            if meta["choices"] is not None:
                kw["choices"] = list(meta["choices"])
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
            if meta["required"]:
                kw["required"] = True
        target = parser
        if meta["group"]:
            target = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        target.add_argument(*_flags(f, meta), **kw)
    return parser


def from_namespace(cls, ns: argparse.Namespace, **overrides: Any):
    """The options ``cls`` from parsed arguments (sequences become the annotated tuple/list); runs its validation."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f, meta in _cli_fields(cls):
        v = getattr(ns, f.name)
        base, is_seq, _ = _unwrap(hints[f.name])
        if is_seq and v is not None:
            if meta["type"] is not None and meta["nargs"] is not None:
                # ``nargs`` tokens each parsed by a list type ("0.5 1,2"): one flat sequence.
                v = [x for item in v for x in (item if isinstance(item, (list, tuple)) else [item])]
            v = tuple(v) if base is tuple else list(v)
        values[f.name] = v
    values.update(overrides)
    return cls(**values)


def float_list(text: str) -> list[float]:
    """argparse type: ``0.5,1,2`` -> [0.5, 1.0, 2.0] (a field with ``nargs="+"`` also takes ``0.5 1 2``)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, e.g. 0.5 1 2 or 0.5,1,2; got {text!r}") from None


def to_argv(opts) -> list[str]:
    """The command-line arguments that give ``opts`` (options left at their default are omitted)."""
    hints = typing.get_type_hints(type(opts))
    argv: list[str] = []
    for f, meta in _cli_fields(type(opts)):
        v, default = getattr(opts, f.name), _default(f)
        base, is_seq, _ = _unwrap(hints[f.name])
        if v == default and not meta["required"]:
            continue
        flag = _flags(f, meta)[-1]
        if meta["action"] in ("store_true", "store_false") or (base is bool and meta["action"] is None):
            argv.append(flag)  # only differs from the default when switched
        elif meta["action"] == "append":
            for item in v:
                argv += _pair(flag, str(item))
        elif is_seq and meta["type"] is not None:
            argv += _pair(flag, ",".join(map(str, v)))  # one token parsed by the custom type (e.g. "2000,5000")
        elif is_seq:
            argv += [flag, *map(str, v)]
        elif v is not None:
            argv += _pair(flag, str(v))
    return argv


def _pair(flag: str, value: str) -> list[str]:
    # A value that starts with '-' (e.g. -1e+06) would be read as an option: attach it to its flag.
    if value.startswith("-"):
        return [f"{flag}={value}" if flag.startswith("--") else flag + value]
    return [flag, value]


# ---------------------------------------------------------------- validation helpers (used in __post_init__)
def flag_of(cls_or_opts, name: str) -> str:
    """The long flag of field ``name`` (for error messages)."""
    cls = cls_or_opts if isinstance(cls_or_opts, type) else type(cls_or_opts)
    for f, meta in _cli_fields(cls):
        if f.name == name:
            return _flags(f, meta)[-1]
    return "--" + name.replace("_", "-")


def check_non_negative(opts, *names: str) -> None:
    """InputError (one line) when one of the integer options ``names`` is below 0 (argparse used to refuse them)."""
    from .errors import InputError

    for name in names:
        v = getattr(opts, name)
        if v is not None and v < 0:
            raise InputError(f"{flag_of(opts, name)} must be >= 0, got {v}")


def comma_floats(text: str) -> list[float]:
    """argparse type of a sorted list of positive lengths written ``2000,5000,10000``."""
    try:
        values = sorted(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated lengths in bp, e.g. 2000,5000,10000; got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("length bin edges must be > 0")
    return values
