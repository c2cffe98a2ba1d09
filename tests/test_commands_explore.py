"""tsne, cluster, compare_groups, query_neighbors, demo: parsers built from their options dataclasses (issue 9)."""
from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path

import pytest

from vae import cli, cluster, compare, demo, neighbors, tsne
from vae.options import from_namespace, to_argv

from .conftest import call_cli

REPO = Path(__file__).resolve().parents[1]

# (parser, options class, minimal argv) of each command of this half of the refactor.
COMMANDS = [
    (cli.tsne_parser, tsne.TsneOptions, ["-e", "e.npy", "-o", "m.npy"]),
    (cli.cluster_parser, cluster.ClusterOptions, ["-id", "i.txt", "-o", "c.tsv"]),
    (cli.compare_groups_parser, compare.CompareOptions, ["-c", "m.npy", "-id", "i.txt", "-o", "cmp"]),
    (cli.query_neighbors_parser, neighbors.QueryOptions, ["--index", "idx"]),
    (cli.demo_parser, demo.DemoOptions, []),
]


@pytest.mark.parametrize("make_parser, cls, argv", COMMANDS, ids=lambda c: getattr(c, "__name__", ""))
def test_command_line_defaults_are_the_dataclass_defaults(make_parser, cls, argv):
    """Parsing only the required options gives what a library caller gets from the dataclass; to_argv is the inverse."""
    opts = from_namespace(cls, make_parser().parse_args(argv))
    given = {f.name: getattr(opts, f.name) for f in dataclasses.fields(cls)
             if f.default is None and f.default_factory is dataclasses.MISSING and getattr(opts, f.name) is not None}
    assert opts == cls(**given)
    assert from_namespace(cls, make_parser().parse_args(to_argv(opts))) == opts
    assert "--quiet" in make_parser().format_help()  # every command has it


def test_non_default_options_round_trip():
    cases = [
        (cli.tsne_parser, tsne.TsneOptions(embeddings="e.npy", output="m.npy", length_column=False, exaggeration=-1.5,
                                           affinity="uniform", max_points=10, ids="i.txt", no_plot=True, quiet=True)),
        (cli.cluster_parser, cluster.ClusterOptions(ids="i", output="o", input="e.npy", method="leiden",
                                                    resolutions=[0.5, 2.0], fasta=["a.fa", "b.fa"], bins_dir="b",
                                                    mutual=True, min_cluster_size=7)),
        (cli.compare_groups_parser, compare.CompareOptions(coords="m", ids="i", output="o", prefix=["w=W_", "s=S_"],
                                                           regex=["x=^X"], smooth=0.0, balanced=True)),
        (cli.query_neighbors_parser, neighbors.QueryOptions(build_index="idx", embeddings="e", row_ids="r", ids=["a", "b"],
                                                            metric="cosine", hnsw_m=8, k=3, fasta="q.fa", model="m.json")),
        (cli.demo_parser, demo.DemoOptions(output="d", quick=True, simulated=True, seed=3)),
    ]
    for make_parser, opts in cases:
        assert from_namespace(type(opts), make_parser().parse_args(to_argv(opts))) == opts


@pytest.mark.parametrize("entry, argv, flag", [
    (cli.tsne, ["-e", "e.npy", "-o", "m.npy", "--n-iter", "-1"], "--n-iter"),
    (cli.cluster, ["-c", "m.npy", "-id", "i.txt", "-o", "c.tsv", "--ef", "-2"], "--ef"),
    (cli.compare_groups, ["-c", "m.npy", "-id", "i.txt", "-o", "cmp", "--bins", "-3"], "--bins"),
    (cli.query_neighbors, ["--index", "idx", "--ids", "a", "--M", "-1"], "--M"),
])
def test_negative_counts_are_one_line_errors(entry, argv, flag, capsys, tmp_path, monkeypatch):
    """Ranges are validated by the dataclass (InputError): status 2, one line naming the option, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert call_cli(entry, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "must be >= 0" in err and flag in err
    assert os.listdir(tmp_path) == []


def test_cli_holds_no_command_bodies_of_this_half():
    tree = ast.parse((REPO / "vae" / "cli.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for gone in ("_tsne", "_peak_rss_gb", "_stem", "_add_plot_args", "_cluster", "_floats", "_compare_groups",
                 "_query_neighbors", "_demo"):
        assert gone not in names
