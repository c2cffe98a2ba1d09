"""Parsers built from options dataclasses (vae.options), and export_encoder converted to that pattern."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vae.errors import InputError
from vae.options import add_options, from_namespace, option, quiet_option, to_argv


def _edges(text: str) -> list[float]:
    return sorted(float(v) for v in text.split(","))


@dataclass
class Demo:
    """A bit of every kind of option."""

    input: str = option(flags=("-i", "--input"), required=True, metavar="X.npy", help="the input")
    output: str | None = option(None, flags=("-o", "--output"), help="where to")
    k: int = option(10, flags=("-k",), help="neighbours")
    rate: float = option(0.5, help="a rate")
    metric: str = option("euclidean", choices=("euclidean", "cosine"), help="distance")
    hidden: tuple[int, ...] = option((1024, 512), metavar="W", help="widths")
    names: list[str] = option(default_factory=list, flags=("--name",), action="append", help="repeatable")
    edges: list[float] = option(default_factory=lambda: [2000.0, 5000.0], type=_edges, help="comma-separated")
    seed: int | None = option(None, group="reproducibility", help="a seed")
    quiet: bool = quiet_option()
    internal: int = 3  # not an option: no flag

    def __post_init__(self):
        if self.k < 1:
            raise InputError(f"-k must be >= 1, not {self.k}")


def parse(argv: list[str]) -> Demo:
    p = add_options(argparse.ArgumentParser(prog="demo"), Demo)
    return from_namespace(Demo, p.parse_args(argv))


def test_defaults_come_from_the_dataclass():
    assert parse(["-i", "x.npy"]) == Demo(input="x.npy")
    opts = parse(["-i", "x.npy"])
    assert opts.hidden == (1024, 512) and isinstance(opts.hidden, tuple) and opts.names == [] and opts.seed is None


def test_every_kind_of_option_parses():
    opts = parse(["-i", "a", "-o", "b", "-k", "3", "--rate", "0.25", "--metric", "cosine", "--hidden", "64", "32", "16",
                  "--name", "x", "--name", "y", "--edges", "500,100", "--seed", "7", "--quiet"])
    assert opts == Demo(input="a", output="b", k=3, rate=0.25, metric="cosine", hidden=(64, 32, 16), names=["x", "y"],
                        edges=[100.0, 500.0], seed=7, quiet=True)


@pytest.mark.parametrize("argv", [[], ["-i", "a", "--metric", "manhattan"], ["-i", "a", "-k", "x"],
                                  ["-i", "a", "--hidden"], ["-i", "a", "--internal", "4"]])
def test_bad_command_lines_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and "usage: demo" in capsys.readouterr().err


def test_validation_is_the_dataclass_own():
    with pytest.raises(InputError, match="-k must be >= 1"):
        parse(["-i", "a", "-k", "0"])
    with pytest.raises(InputError, match="-k must be >= 1"):
        Demo(input="a", k=0)  # the same check without any command line


def test_help_shows_flags_choices_metavars_groups():
    text = add_options(argparse.ArgumentParser(prog="demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter),
                       Demo).format_help()
    for piece in ("-i X.npy, --input X.npy", "{euclidean,cosine}", "--hidden W [W ...]", "reproducibility:",
                  "nothing but errors on stderr", "(default: 10)"):
        assert piece in text, piece
    assert "--internal" not in text


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 10**6), rate=st.floats(-1e6, 1e6, allow_nan=False), metric=st.sampled_from(["euclidean", "cosine"]),
       hidden=st.lists(st.integers(1, 4096), min_size=1, max_size=4).map(tuple),
       names=st.lists(st.text("abcxyz_", min_size=1, max_size=5), max_size=3),
       edges=st.lists(st.integers(1, 10**6).map(float), min_size=1, max_size=4).map(sorted),
       seed=st.none() | st.integers(-5, 5), quiet=st.booleans(), output=st.none() | st.just("out.npy"))
def test_to_argv_round_trips(k, rate, metric, hidden, names, edges, seed, quiet, output):
    opts = Demo(input="in.npy", output=output, k=k, rate=rate, metric=metric, hidden=hidden, names=names, edges=edges,
                seed=seed, quiet=quiet)
    assert parse(to_argv(opts)) == opts


def test_an_option_needs_a_default_unless_required():
    with pytest.raises(TypeError):
        option(help="no default")


# ---------------------------------------------------------------- the converted command: export_encoder


def test_export_encoder_pattern(tmp_path, capsys):
    """argv -> ExportOptions (validation) -> vae.encoder.run; --quiet is quiet; errors are one line, exit 2."""
    pytest.importorskip("keras")
    from vae import encoder
    from vae.cli import export_encoder, export_encoder_parser
    from vae.model import build_encoder

    from .conftest import call_cli

    build_encoder(latent=4, hidden=(16, 8), seed=3).save(tmp_path / "e.keras")
    assert call_cli(export_encoder, ["-m", tmp_path / "e.keras", "-o", tmp_path / "x", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert z.files
    result = encoder.run(encoder.ExportOptions(model=str(tmp_path / "e.keras"), output=str(tmp_path / "y"), quiet=True))
    assert result.latent == 4 and result.max_diff <= 1e-4 and (tmp_path / "y.json").exists()
    # The parser's defaults are the dataclass's.
    assert export_encoder_parser().get_default("tolerance") == encoder.ExportOptions.tolerance
    assert call_cli(export_encoder, ["-m", tmp_path / "e.keras", "--tolerance", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "export_encoder: error: --tolerance must be a finite number >= 0, not -1\n"
