"""The one check every command makes before it writes: no output may be one of its inputs, or another output.

A user who types one wrong path must not lose the input that took hours to compute
(``embedding -i x.npy -o x.npy``), and two outputs given the same name must not
overwrite each other. Paths are compared as files, not as strings: through
symbolic links, ``..`` and hard links (same device and inode) when the file exists,
by their resolved path otherwise.
"""
from __future__ import annotations

import os
from typing import Iterable

from .errors import InputError

PathLike = str | os.PathLike | None


def _identity(path: str) -> tuple:
    """What makes two paths the same file: (device, inode) when it exists, else the resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def _flat(paths: Iterable[PathLike]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if p is None or p is False or p == "" or p == "-":  # absent option, or stdin/stdout
            continue
        if isinstance(p, (list, tuple)):
            out += _flat(p)
        else:
            out.append(os.fspath(p))
    return out


def check_paths(inputs: Iterable[PathLike], outputs: Iterable[PathLike], folders: Iterable[PathLike] = ()) -> None:
    """Refuse, with one line, an output that is an input, two outputs that are one file, or an output that is a folder.

    ``inputs``/``outputs`` may hold None (an option not given), '-' (stdin/stdout:
    skipped) and nested lists. ``folders`` are outputs that are folders (a run
    folder, an index): refused when they are, or contain, an input file.
    Called first, so nothing is written when it fails.
    """
    ins, outs, dirs = _flat(inputs), _flat(outputs), _flat(folders)
    seen_in = {}
    for p in ins:
        seen_in.setdefault(_identity(p), p)
    seen_out: dict[tuple, str] = {}
    for p in outs:
        ident = _identity(p)
        if ident in seen_in:
            src = seen_in[ident]
            same = src if src == p else f"{src} (the same file as {p})"
            raise InputError(f"output {p} is the input {same}: refusing to overwrite an input; choose another output name")
        if ident in seen_out:
            raise InputError(f"outputs {seen_out[ident]} and {p} are the same file: give each output its own name")
        seen_out[ident] = p
        if os.path.isdir(p):
            raise InputError(f"output {p} is a folder: give a file name")
    for d in dirs:
        ident = _identity(d)
        if ident in seen_in:
            raise InputError(f"output folder {d} is the input {seen_in[ident]}: choose another output name")
        if ident in seen_out:
            raise InputError(f"outputs {seen_out[ident]} and {d} are the same path: give each output its own name")


def encoder_files(path: PathLike) -> list[str]:
    """An encoder argument and the files that make it up (X.keras, X.json, X.npz): all are inputs."""
    if not path:
        return []
    p = os.fspath(path)
    stem = p
    for suffix in (".json", ".npz", ".keras"):
        if p.endswith(suffix):
            stem = p[: -len(suffix)]
    return [p, stem + ".json", stem + ".npz", stem + ".keras"]
