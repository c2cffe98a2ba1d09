"""Issue 9 (items 3-6): commands are options dataclasses + run(opts); one owner per artifact name; one split,
one file-open error mapping, one thread count. Light: nothing here imports TensorFlow."""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from vae import cli, count, data, embed, evaluate, matrix, train
from vae.artifacts import RunFolder
from vae.errors import InputError, input_error, reading
from vae.options import from_namespace, to_argv
from vae.runtime import n_threads

from .conftest import call_cli

REPO = Path(__file__).resolve().parents[1]

# (parser, options class, minimal argv) of each command of this half of the refactor.
COMMANDS = [
    (cli.calculate_kmer_frequencies_parser, count.CountOptions, ["-i", "a.fa", "-id", "i.txt", "-k", "k.npy"]),
    (cli.concatenate_matrices_parser, matrix.ConcatOptions, ["-i", "a.npy", "-id", "a.txt", "-o", "out"]),
    (cli.train_vae_parser, train.TrainOptions, ["-i", "m.npy"]),
    (cli.embedding_parser, embed.EmbedOptions, []),
    (cli.verify_local_distances_parser, evaluate.VerifyCommand, ["-i", "m.npy"]),
    (cli.evaluate_labels_parser, evaluate.LabelsCommand, ["-i", "m.npy", "-id", "m.txt", "-l", "l.tsv"]),
]


@pytest.mark.parametrize("make_parser, cls, argv", COMMANDS, ids=lambda c: getattr(c, "__name__", ""))
def test_command_line_defaults_are_the_dataclass_defaults(make_parser, cls, argv):
    """Parsing only the required options gives the options a library caller gets from the dataclass itself."""
    opts = from_namespace(cls, make_parser().parse_args(argv))
    required = {f.name: getattr(opts, f.name) for f in dataclasses.fields(cls)
                if getattr(opts, f.name) is not None and f.default is None and f.default_factory is dataclasses.MISSING}
    assert opts == cls(**required)
    # ... and to_argv is its inverse (the demo records the command line of the options it ran).
    assert from_namespace(cls, make_parser().parse_args(to_argv(opts))) == opts


def test_non_default_options_round_trip():
    t = train.TrainOptions(input="m.npy", run_dir="r", latent=8, hidden=(16, 8), beta=0.5, lr=3e-3, resume=True,
                           kmers="1-5", denoise="500:2000", group_weights="6=0.2", min_lr=1e-7, devices=0)
    assert from_namespace(train.TrainOptions, cli.train_vae_parser().parse_args(to_argv(t))) == t
    v = evaluate.VerifyCommand(input="m.npy", length_bins=[1000.0, 3000.0], neighbours=5, metric="cosine", json="-")
    assert from_namespace(evaluate.VerifyCommand, cli.verify_local_distances_parser().parse_args(to_argv(v))) == v
    c = count.CountOptions(inputs=["a.fa", "b.fa"], ids="i", kmers="k", chop_text="1000:8000", seed=7, dtype="float16")
    assert (c.chop, c.chop_max) == (1000, 8000)
    assert from_namespace(count.CountOptions, cli.calculate_kmer_frequencies_parser().parse_args(to_argv(c))) == c


@pytest.mark.parametrize("entry, argv, flag", [
    (cli.calculate_kmer_frequencies, ["-i", "a.fa", "-id", "i.txt", "-k", "k.npy", "--threads", "-1"], "--threads"),
    (cli.train_vae, ["-i", "m.npy", "--max-samples", "-5"], "--max-samples"),
    (cli.embedding, ["-i", "m.npy", "--chop", "-2"], "--chop"),
    (cli.verify_local_distances, ["-i", "m.npy", "-k", "-3"], "-k/--neighbours"),
    (cli.evaluate_labels, ["-i", "m.npy", "-id", "m.txt", "-l", "l.tsv", "--max-rows", "-1"], "--max-rows"),
])
def test_negative_counts_are_one_line_errors(entry, argv, flag, capsys, tmp_path, monkeypatch):
    """Ranges are validated by the dataclass (InputError): status 2, one line naming the option, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert call_cli(entry, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "must be >= 0" in err and flag.split("/")[-1] in err
    assert os.listdir(tmp_path) == []


def test_no_entry_point_shares_a_name_with_a_library_function():
    scripts = re.findall(r'^\S+ = "vae\.cli:(\w+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert "train_vae" in scripts and "verify_local_distances" in scripts
    defined = {}
    for path in (REPO / "vae").glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                defined.setdefault(node.name, path.name)
    assert {s: defined[s] for s in scripts if s in defined} == {}


def test_cli_holds_no_command_bodies_of_this_half():
    """The commands moved to their modules; their cli functions only build parsers and call run."""
    tree = ast.parse((REPO / "vae" / "cli.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for gone in ("_calculate_kmer_frequencies", "_concatenate_matrices", "_train_vae", "_embedding",
                 "_embedding_to_dir", "_embed_stdin_to_file", "_verify_local_distances", "_evaluate_labels",
                 "_encoder_for_evaluation", "_add_encoder_args", "_check_run_input", "_edges", "_warn_large_output"):
        assert gone not in names


def test_run_folder_names_are_those_train_writes():
    r = RunFolder("runs/a")
    assert (r.config, r.split, r.history, r.log, r.encoder) == (
        "runs/a/config.json", "runs/a/split.npz", "runs/a/history.csv", "runs/a/train.log", "runs/a/encoder.keras")
    assert (r.best, r.final, r.resume, r.state) == ("runs/a/best", "runs/a/final", "runs/a/resume",
                                                    "runs/a/resume/state.json")
    assert data.SPLIT_FILE == os.path.basename(r.split)
    # No module spells the encoder's file name itself: vae.artifacts owns it.
    for path in (REPO / "vae").glob("*.py"):
        if path.name not in ("artifacts.py", "demo.py"):  # demo: the other half of the refactor
            assert '"encoder.keras"' not in path.read_text(), path.name


def test_query_fraction_split_is_the_training_split():
    """evaluate's --query-fraction draws its held-out rows with data.make_split: the rows of the former
    rng.permutation rule, so results of earlier versions stay comparable."""
    for n, f, seed in ((1000, 0.1, 42), (37, 0.3, 1), (5, 0.5, 7)):
        src = evaluate.split_rows(n, query_fraction=f, seed=seed)
        split = data.make_split(n, f, seed)
        np.testing.assert_array_equal(src.val, split.val)
        perm = np.random.default_rng(seed).permutation(n)  # the independent reference: the old rule
        n_val = max(1, int(round(f * n)))
        np.testing.assert_array_equal(src.val, np.sort(perm[:n_val]))
        np.testing.assert_array_equal(src.train, np.sort(perm[n_val:]))
    with pytest.raises(InputError, match="--query-fraction must be between 0 and 1"):
        evaluate.split_rows(10, query_fraction=1.0)


def test_file_open_errors_map_to_one_line(tmp_path):
    missing, folder, text = tmp_path / "nope.txt", tmp_path / "d", tmp_path / "bad.txt"
    folder.mkdir()
    text.write_bytes(b"\xff\xfe\x00bad")
    assert str(input_error(missing, FileNotFoundError(2, "x"), missing=" (hint)")) == f"{missing}: no such file (hint)"
    assert str(input_error(folder, IsADirectoryError(21, "x"))) == f"{folder}: is a directory, not a file"
    assert str(input_error(text, PermissionError(13, "x"))) == f"{text}: permission denied"
    assert str(input_error(text, ValueError("bad header"), "not a readable split")) == f"{text}: not a readable split (bad header)"
    with pytest.raises(InputError, match="no such file$"):
        matrix.read_ids(str(missing))
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        matrix.read_ids(str(text))
    with pytest.raises(InputError, match=r"no such file \(not a train_vae run folder\?\)"):
        data.load_split(str(tmp_path))
    with pytest.raises(InputError, match="not a readable .npy matrix"):
        matrix.open_matrix(str(text))
    with pytest.raises(InputError, match="no such file"):
        evaluate.read_labels(str(missing), ["a"])
    with pytest.raises(KeyError), reading(text):  # other errors are not the mapping's business
        raise KeyError("x")


def test_thread_count_is_the_affinity():
    assert n_threads(3) == 3
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert n_threads() == n_threads(0) == want
    assert train._auto_workers() == max(2, min(8, want // 2))


def test_light_modules_import_no_tensorflow():
    """The options and the parsers of every command in this half load without TensorFlow."""
    import subprocess

    code = ("import sys; from vae import cli; "
            "[f() for f in (cli.calculate_kmer_frequencies_parser, cli.concatenate_matrices_parser, cli.train_vae_parser,"
            " cli.embedding_parser, cli.verify_local_distances_parser, cli.evaluate_labels_parser)]; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
