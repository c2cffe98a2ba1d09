"""Issue 10: bad or awkward input across every command -- one line, exit 2, nothing written, no input destroyed.

The general rules run over a table of every command: an output that is (or
resolves to, through a symbolic or hard link) one of its inputs is refused, so
are two outputs that are the same file; the refusal is one line, exit status 2,
and leaves the folder exactly as it was. Then one test per defect of the issue.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from tests.conftest import REPO, call_cli
from vae import cli
from vae.count import CountOptions, count_files
from vae.kmers import N_COLUMNS
from vae.matrix import atomic_text, temp_path_for

ENCODER_JSON = REPO / "Models" / "default" / "encoder.json"
ENCODER_NPZ = REPO / "Models" / "default" / "encoder.npz"
ENCODER_KERAS = REPO / "Models" / "default" / "encoder.keras"


def _dna(rng, n):
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One small file of every kind the commands read, in one folder."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    with open(d / "x.fa", "w") as fh:
        for i in range(40):
            fh.write(f">c{i}\n{_dna(rng, 400)}\n")
    count_files([str(d / "x.fa")], str(d / "ids.txt"), str(d / "kmers.npy"), CountOptions(threads=1))
    n = 40
    emb = np.concatenate([rng.integers(300, 5000, size=(n, 1)), rng.normal(size=(n, 8))], axis=1).astype(np.float32)
    np.save(d / "emb.npy", emb)
    np.save(d / "map.npy", rng.normal(size=(n, 2)).astype(np.float32))
    with open(d / "labels.tsv", "w") as fh:
        fh.write("id\tgenus\n" + "".join(f"c{i}\tg{i % 3}\n" for i in range(n)))
    with open(d / "groups.tsv", "w") as fh:
        fh.write("".join(f"c{i}\t{'a' if i % 2 else 'b'}\n" for i in range(n)))
    with open(d / "cl.composition.csv", "w") as fh:  # an input named like an output of compare_groups -o cl
        fh.write("".join(f"c{i}\t{i % 2}\n" for i in range(n)))
    with open(d / "q.txt", "w") as fh:
        fh.write("c1\nc2\n")
    shutil.copy(ENCODER_JSON, d / "enc.json")
    shutil.copy(ENCODER_NPZ, d / "enc.npz")
    shutil.copy(ENCODER_KERAS, d / "weird.npz")  # an encoder whose name export_encoder would write to
    os.symlink(d / "kmers.npy", d / "link.npy")
    os.symlink(d / "x.fa", d / "xlink.fa")
    os.link(d / "emb.npy", d / "hard.npy")
    with open(d / "c.npy", "wb") as fh:  # c.txt -> c.npy: concatenate's two outputs are one file
        fh.write(b"not an input")
    os.symlink(d / "c.npy", d / "c.txt")
    return d


def _snapshot(d) -> dict[str, str]:
    """Every entry of the folder (links as links) and a hash of every file's bytes."""
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.islink(p):
            out[name] = "link:" + os.readlink(p)
        elif os.path.isdir(p):
            out[name] = "dir"
        else:
            with open(p, "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
    return out


#: command, argv (relative to the inputs folder), what the error must say.
#: "is the input": an output names an input; "same file": two outputs are one file.
CASES = [
    ("calculate_kmer_frequencies", ["-i", "x.fa", "-id", "new.txt", "-k", "x.fa"], "is the input"),
    ("calculate_kmer_frequencies", ["-i", "x.fa", "-id", "x.fa", "-k", "new.npy"], "is the input"),
    ("calculate_kmer_frequencies", ["-i", "x.fa", "-id", "o.npy", "-k", "o.npy"], "same file"),
    ("calculate_kmer_frequencies", ["-i", "x.fa", "-id", "ids2.txt", "-k", "./sub/../xlink.fa"], "is the input"),
    ("concatenate_matrices", ["-i", "kmers.npy", "-id", "ids.txt", "-o", "kmers"], "is the input"),
    ("concatenate_matrices", ["-i", "kmers.npy", "-id", "ids.txt", "-o", "c"], "same file"),
    ("train_vae", ["-i", "kmers.npy", "-o", "kmers.npy"], "is the input"),
    ("embedding", ["-i", "kmers.npy", "-o", "kmers.npy", "-m", "enc.json"], "is the input"),
    ("embedding", ["-i", "kmers.npy", "-o", "link.npy", "-m", "enc.json"], "is the input"),
    ("embedding", ["-i", "x.fa", "-o", "e.npy", "--ids-out", "x.fa", "-m", "enc.json"], "is the input"),
    ("embedding", ["-i", "kmers.npy", "-o", "enc.npz", "-m", "enc.json"], "is the input"),
    ("embedding", ["-i", "x.fa", "-o", "e.npy", "--ids-out", "e.npy", "-m", "enc.json"], "same file"),
    ("export_encoder", ["-m", "weird.npz", "-o", "weird"], "is the input"),
    ("verify_local_distances", ["-i", "kmers.npy", "--json", "kmers.npy", "-e", "enc.json"], "is the input"),
    ("evaluate_labels", ["-i", "kmers.npy", "-id", "ids.txt", "-l", "labels.tsv", "--json", "labels.tsv", "-e", "enc.json"],
     "is the input"),
    ("tsne", ["-e", "emb.npy", "-o", "emb.npy"], "is the input"),
    ("tsne", ["-e", "emb.npy", "-o", "hard.npy"], "is the input"),
    ("tsne", ["-e", "emb.npy", "-id", "ids.txt", "-o", "m.npy", "--png", "ids.txt"], "is the input"),
    ("tsne", ["-e", "emb.npy", "-o", "m.npy", "--png", "m.json"], "same file"),
    ("cluster", ["-c", "map.npy", "-id", "ids.txt", "-o", "ids.txt"], "is the input"),
    ("cluster", ["-c", "map.npy", "-id", "ids.txt", "-o", "cl.tsv", "--summary", "cl.tsv"], "same file"),
    ("compare_groups", ["-c", "map.npy", "-id", "ids.txt", "--groups-tsv", "groups.tsv", "--clusters", "cl.composition.csv",
                        "-o", "cl"], "is the input"),
    ("query_neighbors", ["--build-index", "idx", "-e", "emb.npy", "-id", "ids.txt", "--ids-file", "q.txt", "-o", "q.txt"],
     "is the input"),
    ("query_neighbors", ["--build-index", "emb.npy", "-e", "emb.npy", "-id", "ids.txt"], "is the input"),
]


@pytest.mark.parametrize("command,argv,says", CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_no_output_may_be_an_input_or_another_output(files, command, argv, says, capsys, monkeypatch):
    os.makedirs(files / "sub", exist_ok=True)
    monkeypatch.chdir(files)
    before = _snapshot(files)
    code = call_cli(getattr(cli, command), argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error:") and says in lines[0], err
    assert "Traceback" not in err and ".tmp-" not in err
    assert _snapshot(files) == before  # nothing written, nothing destroyed, nothing left behind


def test_every_command_is_in_the_table():
    commands = {name for name in dir(cli) if callable(getattr(cli, name)) and hasattr(cli, f"{name}_parser")} - {"demo"}
    assert commands == {c[0] for c in CASES}


def test_an_output_that_is_a_folder_is_named_plainly(files, tmp_path, capsys):
    (tmp_path / "o.npy").mkdir()
    code = call_cli(cli.calculate_kmer_frequencies, ["-i", files / "x.fa", "-id", tmp_path / "o.txt", "-k", tmp_path / "o.npy"])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and ".tmp-" not in err
    assert sorted(os.listdir(tmp_path)) == ["o.npy"]


# --------------------------------------------------------------------------- temporaries and committing together


def test_two_outputs_never_share_a_temporary(tmp_path):
    p = str(tmp_path / "o.npy")
    assert temp_path_for(p) != temp_path_for(p)


def test_commit_together_writes_all_or_nothing(tmp_path):
    from vae.matrix import commit_together

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError), commit_together():
        with atomic_text(str(a)) as fh:
            fh.write("a")
        assert not a.exists()  # held back until the group ends
        raise RuntimeError("fails after the first output")
    assert os.listdir(tmp_path) == []
    # a rename that fails half-way takes back the renames already done
    b.mkdir()
    with pytest.raises(OSError), commit_together():
        with atomic_text(str(a)) as fh:
            fh.write("a")
        with atomic_text(str(b)) as fh:
            fh.write("b")
    assert sorted(os.listdir(tmp_path)) == ["b.txt"] and not os.listdir(b)
    with commit_together():
        with atomic_text(str(tmp_path / "c.txt")) as fh:
            fh.write("c")
    assert (tmp_path / "c.txt").read_text() == "c"


def _disk_full(*_args, **_kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_concatenate_leaves_no_ids_without_matrix_on_disk_full(files, tmp_path, monkeypatch, capsys):
    import vae.matrix

    monkeypatch.setattr(vae.matrix.os, "fsync", _disk_full)  # the matrix's commit fails after the IDs are written
    code = call_cli(cli.concatenate_matrices, ["-i", files / "kmers.npy", "-id", files / "ids.txt", "-o", tmp_path / "c", "--quiet"])
    assert code == 1 and "disk full" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_counting_leaves_no_matrix_without_ids_on_disk_full(files, tmp_path, monkeypatch, capsys):
    import vae.matrix

    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".txt"):
            _disk_full()
        real_replace(src, dst)

    monkeypatch.setattr(vae.matrix.os, "replace", replace)
    code = call_cli(cli.calculate_kmer_frequencies, ["-i", files / "x.fa", "-id", tmp_path / "o.txt", "-k", tmp_path / "o.npy",
                                                     "--quiet", "--threads", "1"])
    assert code == 1, capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_tsne_and_cluster_commit_their_outputs_together(files, tmp_path, monkeypatch, capsys):
    import vae.plots

    monkeypatch.setattr(vae.plots, "save_figure", _disk_full)  # the figure fails after the map is written
    code = call_cli(cli.tsne, ["-e", files / "emb.npy", "-o", tmp_path / "m.npy", "--quiet", "--n-iter", "50",
                               "--early-iter", "20", "--threads", "1"])
    assert code == 1 and os.listdir(tmp_path) == [], capsys.readouterr().err
    code = call_cli(cli.cluster, ["-c", files / "map.npy", "-id", files / "ids.txt", "-o", tmp_path / "cl.tsv", "--threads", "1"])
    assert code == 1 and os.listdir(tmp_path) == [], capsys.readouterr().err


# --------------------------------------------------------------------------- non-finite results, tracebacks


def test_embedding_refuses_nan_negative_and_out_of_range_rows(files, tmp_path, capsys):
    x = np.load(files / "kmers.npy")
    for i, bad in enumerate((np.nan, -0.5, 7.0)):
        y = x.copy()
        y[5, 100] = bad
        np.save(tmp_path / f"bad{i}.npy", y)
        out = tmp_path / f"e{i}.npy"
        code = call_cli(cli.embedding, ["-i", tmp_path / f"bad{i}.npy", "-o", out, "-m", files / "enc.json", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "row 5" in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_tsne_of_identical_points_writes_nothing(tmp_path, capsys):
    np.save(tmp_path / "same.npy", np.tile(np.array([[1000, 0.5, 0.5, 0.5]], np.float32), (30, 1)))
    code = call_cli(cli.tsne, ["-e", tmp_path / "same.npy", "-o", tmp_path / "m.npy", "--quiet", "--threads", "1",
                               "--n-iter", "30", "--early-iter", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err, err
    assert sorted(os.listdir(tmp_path)) == ["same.npy"]


@pytest.mark.parametrize("command,argv", [
    ("concatenate_matrices", ["-i", "{z}", "-id", "{ids}", "-o", "{out}/c"]),
    ("train_vae", ["-i", "{z}", "-o", "{out}/run"]),
    ("tsne", ["-e", "{z}", "-o", "{out}/m.npy"]),
    ("cluster", ["-c", "{z}", "-id", "{ids}", "-o", "{out}/c.tsv"]),
    ("query_neighbors", ["--build-index", "{out}/idx", "-e", "{z}", "-id", "{ids}"]),
    ("verify_local_distances", ["-i", "{z}", "-e", "{enc}"]),
    ("embedding", ["-i", "{z}", "-o", "{out}/e.npy", "-m", "{enc}"]),
])
def test_a_zip_given_as_a_matrix_is_one_line(files, tmp_path, command, argv, capsys):
    z = tmp_path / "m.npz"
    np.savez(z, a=np.zeros((40, N_COLUMNS), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(z=z, ids=files / "ids.txt", out=out, enc=files / "enc.json") for a in argv]
    code = call_cli(getattr(cli, command), argv)
    err = capsys.readouterr().err
    assert code == 2 and ".npz archive" in err and "Traceback" not in err, err
    assert os.listdir(out) == []


def test_nan_matrix_in_the_evaluations_is_one_line(files, tmp_path, capsys):
    x = np.load(files / "kmers.npy")
    x[3, 10] = np.nan
    np.save(tmp_path / "nan.npy", x)
    for command, argv in (("verify_local_distances", ["-i", tmp_path / "nan.npy", "-e", files / "enc.json", "--queries", "5",
                                                      "-k", "3", "--bootstrap", "0"]),
                          ("evaluate_labels", ["-i", tmp_path / "nan.npy", "-id", files / "ids.txt", "-l", files / "labels.tsv",
                                               "-e", files / "enc.json"])):
        code = call_cli(getattr(cli, command), argv + ["--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "NaN" in err and "Traceback" not in err, (command, err)


def test_portable_export_parts_must_belong_together(files, tmp_path, capsys):
    shutil.copy(files / "enc.json", tmp_path / "e.json")
    np.savez(tmp_path / "e.npz", **{k: v[..., :3] for k, v in np.load(files / "enc.npz").items()})  # another export's weights
    shutil.copy(files / "enc.json", tmp_path / "t.json")
    data = (files / "enc.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])  # truncated
    for name in ("e.json", "t.json"):
        code = call_cli(cli.embedding, ["-i", files / "kmers.npy", "-o", tmp_path / "o.npy", "-m", tmp_path / name])
        err = capsys.readouterr().err
        assert code == 2 and "SHA-256" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.npy").exists()


def test_export_tolerance_must_be_non_negative(files, capsys):
    code = call_cli(cli.export_encoder, ["-m", ENCODER_KERAS, "-o", files / "never", "--tolerance", "-1"])
    assert code == 2 and "--tolerance" in capsys.readouterr().err
    assert not (files / "never.json").exists()


# --------------------------------------------------------------------------- train_vae --resume: refuse or be exact


def _fake_run(run_dir, matrix):
    """A run folder as train_vae writes it before its first epoch ends (config + split, no resume/)."""
    from vae.data import make_split
    from vae.matrix import fingerprint
    from vae.train import TrainOptions, _hyperparameters

    os.makedirs(run_dir)
    m = np.load(matrix, mmap_mode="r")
    cfg = {"input": {"path": str(matrix), "shape": list(m.shape), "dtype": m.dtype.name, "fingerprint": fingerprint(str(matrix))},
           "hyperparameters": _hyperparameters(TrainOptions(input=str(matrix), run_dir=str(run_dir))), "resumes": []}
    with open(os.path.join(run_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    make_split(m.shape[0], 0.1, 42).save(os.path.join(run_dir, "split.npz"))
    return cfg


def test_resume_refuses_when_resume_state_is_missing_or_damaged(files, tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run, files / "kmers.npy")
    before = _snapshot(run)
    code = call_cli(cli.train_vae, ["-o", run, "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no completed epoch to resume" in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(run) == before  # not restarted, config untouched
    (run / "resume").mkdir()
    (run / "resume" / "state.json").write_text("{ not json")
    before = _snapshot(run)
    code = call_cli(cli.train_vae, ["-o", run, "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "damaged resume state" in err and "Traceback" not in err, err
    (run / "resume" / "state.json").write_text(json.dumps({"epoch": 2, "model": "vae-epoch00002.keras"}))
    code = call_cli(cli.train_vae, ["-o", run, "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "is missing" in err, err
    (run / "resume" / "vae-epoch00002.keras").write_bytes(b"PK\x03\x04 truncated")
    before = _snapshot(run)
    code = call_cli(cli.train_vae, ["-o", run, "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "damaged or truncated checkpoint" in err, err
    assert _snapshot(run) == before


def test_verify_run_dir_refuses_a_reshuffled_matrix(files, tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run, files / "kmers.npy")
    x = np.load(files / "kmers.npy")
    np.save(tmp_path / "shuffled.npy", x[np.random.default_rng(1).permutation(x.shape[0])])
    code = call_cli(cli.verify_local_distances, ["-i", tmp_path / "shuffled.npy", "--run-dir", run, "-e", files / "enc.json",
                                                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not the matrix the run" in err, err


def _history(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as fh:
        keep = ("epoch", "loss", "recon", "kl", "val_loss", "val_recon", "val_kl", "mse", "lr", "best")
        return [{k: r[k] for k in keep} for r in csv.DictReader(fh)]


def test_resume_reproduces_the_uninterrupted_run_and_checks_the_input(tmp_path, capsys):
    from tests.test_train import TINY, synthetic_genomes
    from vae.train import TrainOptions, train

    x, _ = synthetic_genomes(n_genomes=2, n_frag=90, length=1000)
    np.save(tmp_path / "t.npy", x)
    kw = dict(TINY, dropout=0.1, warmup_epochs=1, input=str(tmp_path / "t.npy"))  # dropout: its RNG must resume too
    train(TrainOptions(run_dir=str(tmp_path / "straight"), epochs=2, **kw))
    train(TrainOptions(run_dir=str(tmp_path / "resumed"), epochs=1, **kw))
    train(TrainOptions(run_dir=str(tmp_path / "resumed"), epochs=2, resume=True, **kw))
    straight, resumed = _history(tmp_path / "straight"), _history(tmp_path / "resumed")
    assert len(straight) == len(resumed) == 2
    assert straight == resumed  # every value, every epoch, to the 6 digits history.csv keeps
    # a different matrix of the same shape (reshuffled) is refused
    np.save(tmp_path / "shuffled.npy", x[np.random.default_rng(1).permutation(x.shape[0])])
    before = _snapshot(tmp_path / "resumed")
    code = call_cli(cli.train_vae, ["-o", tmp_path / "resumed", "--resume", "-i", tmp_path / "shuffled.npy", "--epochs", "4",
                                    "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not the matrix the run" in err, err
    assert _snapshot(tmp_path / "resumed") == before


# --------------------------------------------------------------------------- input that is not DNA, --chop, smaller items


def test_protein_and_cr_only_fasta_are_refused(tmp_path, capsys):
    (tmp_path / "p.fa").write_text(">dna\n" + "ACGTTGCA" * 50 + "\n>prot\nMKVLAAGIVGLLLAEEQPKFSTRWDNHCYQ\n")
    (tmp_path / "cr.fa").write_bytes(b">a\rACGTACGTACGT\r>b\rGGGCCCAAATTT\r")
    for name, says in (("p.fa", "prot is not nucleotide"), ("cr.fa", "CR only")):
        code = call_cli(cli.calculate_kmer_frequencies, ["-i", tmp_path / name, "-id", tmp_path / "o.txt", "-k", tmp_path / "o.npy",
                                                         "--quiet", "--threads", "1"])
        err = capsys.readouterr().err
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.txt").exists()
    # N-rich DNA is DNA; a record of only N is counted as a zero row and reported
    (tmp_path / "n.fa").write_text(">a\n" + "N" * 300 + "ACGT" * 10 + "\n>b\nNNNNNNNN\n>a\nACGTACGTAAAT\n")
    # (not --quiet: that means errors only, and these are warnings)
    code = call_cli(cli.calculate_kmer_frequencies, ["-i", tmp_path / "n.fa", "-id", tmp_path / "o.txt", "-k", tmp_path / "o.npy",
                                                     "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "1 with no A/C/G/T base" in err and "1 duplicate IDs" in err, err


def test_chop_shorter_than_the_longest_kmer_is_refused(files, tmp_path, capsys):
    code = call_cli(cli.calculate_kmer_frequencies, ["-i", files / "x.fa", "-id", tmp_path / "o.txt", "-k", tmp_path / "o.npy",
                                                     "--chop", "1"])
    assert code == 2 and "--chop 1" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_concatenate_refuses_what_the_pipeline_would_reject(files, tmp_path, capsys):
    np.save(tmp_path / "f64.npy", np.load(files / "kmers.npy").astype(np.float64))
    np.save(tmp_path / "narrow.npy", np.zeros((40, 5), np.float32))
    for name, says in (("f64.npy", "float64"), ("narrow.npy", "5 columns")):
        code = call_cli(cli.concatenate_matrices, ["-i", tmp_path / name, "-id", files / "ids.txt", "-o", tmp_path / "o"])
        err = capsys.readouterr().err
        assert code == 2 and says in err, err
        assert not (tmp_path / "o.npy").exists()


def test_conflicting_duplicate_labels_are_refused(files, tmp_path, capsys):
    (tmp_path / "l.tsv").write_text("id\tgenus\nc1\tA\nc2\tB\nc1\tC\n")
    code = call_cli(cli.evaluate_labels, ["-i", files / "kmers.npy", "-id", files / "ids.txt", "-l", tmp_path / "l.tsv",
                                          "-e", files / "enc.json", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "c1 appears again with other labels" in err, err


def test_duplicate_ids_are_flagged_by_cluster(files, tmp_path, capsys):
    (tmp_path / "dup.txt").write_text("".join(f"c{i % 39}\n" for i in range(40)))
    code = call_cli(cli.cluster, ["-c", files / "map.npy", "-id", tmp_path / "dup.txt", "-o", tmp_path / "cl.tsv", "--no-plot",
                                  "--threads", "1"])
    assert code == 0 and "1 duplicate IDs" in capsys.readouterr().err


def test_tsne_says_when_it_lowers_the_perplexity(files, tmp_path, capsys):
    code = call_cli(cli.tsne, ["-e", files / "emb.npy", "-o", tmp_path / "m.npy", "--perplexity", "1000", "--no-plot",
                               "--threads", "1", "--n-iter", "20", "--early-iter", "10"])
    assert code == 0 and "perplexity 1000" in capsys.readouterr().err


# --------------------------------------------------------------------------- messages


def test_damaged_keras_file_and_a_whole_vae_are_named_plainly(files, tmp_path):
    import zipfile

    from tests.conftest import run_cli

    (tmp_path / "bad.keras").write_bytes(ENCODER_KERAS.read_bytes()[:3000])  # truncated
    with zipfile.ZipFile(tmp_path / "vae.keras", "w") as z:  # what train_vae saves as vae.keras, in outline
        z.writestr("config.json", json.dumps({"class_name": "VAE", "config": {}}))
    for name, says in (("bad.keras", "damaged or truncated"), ("vae.keras", "a whole VAE, not an encoder")):
        proc = run_cli("embedding", "-i", files / "kmers.npy", "-o", tmp_path / "e.npy", "-m", tmp_path / name, "--engine", "keras")
        err = proc.stderr.decode()
        assert proc.returncode == 2 and says in err and len(err.strip().splitlines()) == 1, err  # no TensorFlow banner
    assert not (tmp_path / "e.npy").exists()


def test_query_by_fasta_names_the_default_model(files, tmp_path, capsys):
    code = call_cli(cli.query_neighbors, ["--build-index", tmp_path / "idx", "-e", files / "emb.npy", "-id", files / "ids.txt",
                                          "--fasta", files / "x.fa", "--engine", "numpy", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "(the default model)" in err and "None" not in err, err


def test_training_disk_full_says_what_resume_holds(tmp_path, monkeypatch, capsys):
    import vae.train

    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    (run / "resume" / "state.json").write_text(json.dumps({"epoch": 7, "model": "vae-epoch00007.keras"}))
    monkeypatch.setattr(vae.train, "train", _disk_full)
    code = call_cli(cli.train_vae, ["-i", tmp_path / "x.npy", "-o", run])
    err = capsys.readouterr().err
    assert code == 1 and "resume holds epoch 7" in err and "no output was written" not in err, err
