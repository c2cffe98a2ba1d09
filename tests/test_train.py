"""vae.train / train_vae: learning on synthetic genomes, warm-up and trackers, resume, Ctrl-C, bad input.

Models are tiny (hidden 64-32, latent 8) and runs a few epochs of a few
thousand rows, so the whole file runs in a couple of minutes on two cores.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vae.cli import train_vae  # noqa: E402
from vae.data import load_split, make_split  # noqa: E402
from vae.kmers import profile  # noqa: E402
from vae.simulate import fragments, random_genome  # noqa: E402
from vae.train import (  # noqa: E402
    HISTORY_COLUMNS,
    TrainerState,
    TrainOptions,
    end_of_epoch,
    import_keras,
    kl_weight_for_epoch,
    train,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden=(64, 32), latent=8, batch_size=128, lr=1e-3, quiet=True)


def synthetic_genomes(n_genomes=4, n_frag=500, length=2000, seed=0):
    """Fragments (random strand) of genomes with distinct composition, as k-mer rows + genome labels, shuffled."""
    rows, labels = [], []
    for g in range(n_genomes):
        genome = random_genome(100_000, seed=seed + g, gc=0.3 + 0.4 * g / max(1, n_genomes - 1))
        rows.append(np.stack([profile(f) for f in fragments(genome, n_frag, length, length, seed=seed + 100 + g)]))
        labels.append(np.full(n_frag, g))
    x, y = np.concatenate(rows), np.concatenate(labels)
    perm = np.random.default_rng(seed).permutation(y.shape[0])
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def genomes(tmp_path_factory):
    d = tmp_path_factory.mktemp("genomes")
    x, y = synthetic_genomes()
    np.save(d / "train.npy", x)
    np.save(d / "train16.npy", x.astype(np.float16))
    return {"path": str(d / "train.npy"), "path16": str(d / "train16.npy"), "x": x, "labels": y, "dir": d}


def read_history(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(genomes, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "run1")
    opts = TrainOptions(input=genomes["path"], run_dir=run_dir, epochs=8, warmup_epochs=2, **TINY)
    result = train(opts)
    return run_dir, result


# --------------------------------------------------------------------------- pure logic


def test_kl_weight_warms_up_linearly_then_stays_at_beta():
    w = [kl_weight_for_epoch(e, 0.05, 5) for e in range(8)]
    np.testing.assert_allclose(w, [0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.05])
    assert kl_weight_for_epoch(0, 0.05, 0) == 0.05


def test_trackers_ignore_warm_up_and_start_afresh_after_it():
    opts = TrainOptions(warmup_epochs=3, patience=2, lr_factor=0.5, min_lr=1e-5, early_stopping=4)
    st = TrainerState(lr=1e-4)
    # warm-up epochs have the lowest losses (near-zero KL): none may become "best"
    vals = [10.0, 11.0, 12.0, 50.0, 40.0, 41.0, 42.0, 43.0, 44.0]
    outs = [end_of_epoch(st, e, v, opts) for e, v in enumerate(vals)]
    assert [o.tracking for o in outs] == [False] * 3 + [True] * 6
    assert [o.is_best for o in outs] == [False, False, False, True, True, False, False, False, False]
    assert st.best_val == 40.0 and st.best_epoch == 5
    # plateau: after 2 epochs without improvement the LR halves, and the counter restarts
    assert [o.new_lr for o in outs[3:]] == [1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5]
    # early stopping 4 epochs after the best (epoch 5) -> at epoch 9
    assert [o.stop for o in outs] == [False] * 8 + [True]


def test_plateau_never_cuts_below_min_lr():
    opts = TrainOptions(warmup_epochs=0, patience=1, lr_factor=0.1, min_lr=3e-5)
    st = TrainerState(lr=1e-4)
    for e, v in enumerate([5.0, 6.0, 6.0, 6.0]):
        end_of_epoch(st, e, v, opts)
    assert st.lr == pytest.approx(3e-5)


# --------------------------------------------------------------------------- a real (small) run


def test_training_lowers_val_loss_and_groups_genomes(trained, genomes):
    run_dir, result = trained
    hist = read_history(run_dir)
    assert [int(r["epoch"]) for r in hist] == list(range(1, 9))
    post = [float(r["val_loss"]) for r in hist[2:]]  # after warm-up: same KL weight, comparable
    assert post[-1] < post[0] and all(b <= a * 1.02 for a, b in zip(post, post[1:])), post
    # The reconstruction term is comparable from the first epoch on (validation tracks training
    # from the start: BatchNorm momentum from the steps per epoch, tests/test_train_quality.py).
    recon = [float(r["val_recon"]) for r in hist]
    assert recon[-1] < 0.8 * recon[0], recon
    mse = [float(r["mse"]) for r in hist]
    assert mse[-1] < mse[0]
    # z_mean of validation rows: fragments of one genome closer together than to other genomes
    keras = import_keras()
    from vae.transform import clr

    encoder = keras.saving.load_model(os.path.join(run_dir, "encoder.keras"))
    val = load_split(run_dir).val
    z = np.asarray(encoder(clr(genomes["x"][val]), training=False)[0])
    lab = genomes["labels"][val]
    d = np.linalg.norm(z[:, None, :] - z[None, :, :], axis=-1)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(lab.shape[0], dtype=bool)
    ratio = d[same & off].mean() / d[~same].mean()
    assert ratio < 0.5, ratio


def test_run_folder_contents(trained, genomes):
    run_dir, _ = trained
    for sub in ("best", "final"):
        for name in ("vae", "encoder", "decoder"):
            assert os.path.isfile(os.path.join(run_dir, sub, f"{name}.keras"))
    for f in ("encoder.keras", "config.json", "split.npz", "train.log", "history.csv", "training_curves.png",
              "resume/state.json"):
        assert os.path.isfile(os.path.join(run_dir, f)), f
    assert not [f for f in os.listdir(run_dir) if "tmp" in f]
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    hp = cfg["hyperparameters"]
    assert hp["latent"] == 8 and hp["hidden"] == [64, 32] and hp["beta"] == 0.05 and hp["warmup_epochs"] == 2
    for k in ("epochs", "lr", "batch_size", "val_fraction", "max_samples", "seed", "dropout", "patience",
              "lr_factor", "min_lr", "early_stopping", "mixed_precision"):
        assert k in hp
    assert cfg["input"]["shape"] == [2000, 2773] and cfg["input"]["dtype"] == "float32"
    assert cfg["input"]["path"] == os.path.abspath(genomes["path"])
    assert cfg["split"]["seed"] == 42
    assert {"tensorflow", "keras", "numpy", "python"} <= set(cfg["versions"])
    # the best encoder is the one users get
    assert open(os.path.join(run_dir, "encoder.keras"), "rb").read() == \
        open(os.path.join(run_dir, "best", "encoder.keras"), "rb").read()


def test_history_and_log_report_every_epoch(trained):
    run_dir, result = trained
    hist = read_history(run_dir)
    assert list(hist[0].keys()) == HISTORY_COLUMNS
    for k in (6, 5, 4, 3, 2, 1):
        assert all(float(r[f"mse_{k}"]) > 0 for r in hist)
    # kl weight per epoch: linear warm-up over 2 epochs, then beta
    np.testing.assert_allclose([float(r["kl_weight"]) for r in hist], [0, 0.025] + [0.05] * 6)
    # the training loss is what was minimised: recon + weight * KL of the training batches
    for r in hist:
        assert float(r["loss"]) == pytest.approx(float(r["recon"]) + float(r["kl_weight"]) * float(r["kl"]), rel=1e-3)
    # best is only ever claimed after warm-up
    assert [r["best"] for r in hist[:2]] == ["0", "0"] and "1" in [r["best"] for r in hist[2:]]
    assert result.best_epoch >= 3
    log = open(os.path.join(run_dir, "train.log")).read()
    for e in range(1, 9):
        assert f"epoch {e}/8" in log
    assert "samples/s" in log and "lr " in log and "6:" in log and "1:" in log


def test_split_is_saved_and_matches_the_seed(trained, genomes):
    run_dir, _ = trained
    s = load_split(run_dir)
    ref = make_split(genomes["x"].shape[0], 0.1, 42)
    np.testing.assert_array_equal(s.val, ref.val)
    np.testing.assert_array_equal(s.train, ref.train)


# --------------------------------------------------------------------------- resume


def test_resume_continues_epochs_optimiser_and_history(genomes, tmp_path):
    keras = import_keras()
    run_dir = str(tmp_path / "run")
    opts = TrainOptions(input=genomes["path16"], run_dir=run_dir, epochs=3, warmup_epochs=1, patience=1, **TINY)
    first = train(opts)
    steps = 1800 // 128
    split_bytes = open(os.path.join(run_dir, "split.npz"), "rb").read()
    rows_before = open(os.path.join(run_dir, "history.csv")).read()
    state = TrainerState.from_json(open(os.path.join(run_dir, "resume", "state.json")).read())
    assert state.epoch == 3 and state.batches == 3 * steps

    # the resume checkpoint holds the optimiser state of the end of epoch 3
    ckpt = keras.saving.load_model(os.path.join(run_dir, "resume", state.model))
    assert int(ckpt.optimizer.iterations.numpy()) == 3 * steps
    for a, b in zip(first.vae.optimizer.variables, ckpt.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(first.vae.weights, ckpt.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert float(ckpt.optimizer.learning_rate.numpy()) == pytest.approx(state.lr)

    # resume without repeating -i or any option but --epochs
    code = _cli(["-o", run_dir, "--resume", "--epochs", "5", "--quiet"])
    assert code == 0
    hist = read_history(run_dir)
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3, 4, 5]
    assert [r["session"] for r in hist] == ["0", "0", "0", "1", "1"]
    assert open(os.path.join(run_dir, "history.csv")).read().startswith(rows_before)  # appended, not rewritten
    # warm-up not repeated: full KL weight from epoch 4 on; LR continues from the saved one
    assert [float(r["kl_weight"]) for r in hist[3:]] == [0.05, 0.05]
    assert float(hist[3]["lr"]) == pytest.approx(state.lr, rel=1e-6)
    final = keras.saving.load_model(os.path.join(run_dir, "final", "vae.keras"))
    assert int(final.optimizer.iterations.numpy()) == 5 * steps  # continued, not restarted
    new_state = TrainerState.from_json(open(os.path.join(run_dir, "resume", "state.json")).read())
    assert new_state.epoch == 5 and new_state.session == 1 and new_state.best_val <= state.best_val
    assert open(os.path.join(run_dir, "split.npz"), "rb").read() == split_bytes  # split reused
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["hyperparameters"]["epochs"] == 5 and cfg["resumes"][0]["at_epoch"] == 3
    # options that define the model cannot change on resume
    code, err = _cli_err(["-o", run_dir, "--resume", "--epochs", "6", "--latent", "16"])
    assert code == 2 and "--latent 16 differs from the run's 8" in err


def test_ctrl_c_keeps_the_last_epoch_for_resume(genomes, tmp_path):
    run_dir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(REPO, "bin", "train_vae"), "-i", genomes["path"], "-o", run_dir,
           "--hidden", "64", "32", "--latent", "8", "--batch-size", "128", "--epochs", "200", "--warmup-epochs", "1",
           "--quiet"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    hist = os.path.join(run_dir, "history.csv")
    deadline = time.time() + 120
    while not (os.path.exists(hist) and open(hist).read().count("\n") >= 2):
        assert p.poll() is None and time.time() < deadline, p.stderr.read() if p.poll() is not None else "timeout"
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130, err
    assert "--resume" in err.splitlines()[-1]
    state = TrainerState.from_json(open(os.path.join(run_dir, "resume", "state.json")).read())
    assert state.epoch >= 1 and os.path.isfile(os.path.join(run_dir, "resume", state.model))
    assert not os.path.exists(os.path.join(run_dir, "final"))
    done = state.epoch
    assert _cli(["-o", run_dir, "--resume", "--epochs", str(done + 1), "--quiet"]) == 0
    assert [int(r["epoch"]) for r in read_history(run_dir)][-1] == done + 1


def test_max_samples_and_mixed_precision_run(genomes, tmp_path):
    run_dir = str(tmp_path / "run")
    opts = TrainOptions(input=genomes["path"], run_dir=run_dir, epochs=1, warmup_epochs=0, max_samples=600,
                        steps_per_epoch=2, mixed_precision=True, **TINY)
    result = train(opts)
    try:
        s = load_split(run_dir)
        assert s.train.shape[0] + s.val.shape[0] == 600 and s.max_samples == 600
        assert np.isfinite(float(result.history[0]["val_loss"]))
        assert result.vae.optimizer.iterations.numpy() > 0
    finally:
        import_keras().mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- bad input


def _cli(argv) -> int:
    with pytest.raises(SystemExit) as e:
        train_vae(argv)
    return e.value.code


def _cli_err(argv) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = _cli(argv)
    return code, buf.getvalue()


def _bad(tmp_path, name, x) -> str:
    path = str(tmp_path / name)
    np.save(path, x)
    return path


@pytest.mark.parametrize("case", ["columns", "nan", "negative", "few_rows", "missing", "garbage", "few_after_split"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, genomes):
    x = genomes["x"][:400].copy()
    args = ["--batch-size", "128"]
    if case == "columns":
        path, expect = _bad(tmp_path, "a.npy", x[:, :2700]), "expected 2773"
    elif case == "nan":
        x[17, 5] = np.nan
        x[300, 6] = np.inf
        path, expect = _bad(tmp_path, "a.npy", x), "2 NaN/Inf values (first in row 17)"
    elif case == "negative":
        x[42, 100] = -1e-3
        path, expect = _bad(tmp_path, "a.npy", x), "1 negative value (first in row 42)"
    elif case == "few_rows":
        path, expect = _bad(tmp_path, "a.npy", x[:100]), "fewer than one batch"
    elif case == "few_after_split":
        path, expect = _bad(tmp_path, "a.npy", x[:140]), "fewer than one batch"
    elif case == "missing":
        path, expect = str(tmp_path / "nope.npy"), "no such file"
    else:
        (tmp_path / "a.npy").write_bytes(b"\x93NUMPY garbage")
        path, expect = str(tmp_path / "a.npy"), "not a readable .npy"
    run_dir = tmp_path / "run"
    code, err = _cli_err(["-i", path, "-o", str(run_dir), *args])
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("train_vae: error:") and expect in lines[0], err
    assert not run_dir.exists()


def test_run_dir_errors(genomes, tmp_path, trained):
    # an existing run without --resume
    code, err = _cli_err(["-i", genomes["path"], "-o", trained[0]])
    assert code == 2 and "already holds a train_vae run" in err and "--resume" in err
    # a folder with other things in it
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = _cli_err(["-i", genomes["path"], "-o", str(other)])
    assert code == 2 and "already holds other files" in err
    assert os.listdir(other) == ["notes.txt"]
    # cannot be created: its parent is a file
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _cli_err(["-i", genomes["path"], "-o", str(blocker / "run")])
    assert code == 2 and "not a writable folder" in err
    # --resume with nothing to resume
    code, err = _cli_err(["-o", str(tmp_path / "empty"), "--resume"])
    assert code == 2 and "nothing to resume" in err


def test_divergence_stops_with_one_line_and_keeps_no_broken_checkpoint(genomes, tmp_path):
    run_dir = str(tmp_path / "run")
    code, err = _cli_err(["-i", genomes["path"], "-o", run_dir, "--hidden", "64", "32", "--latent", "8",
                          "--batch-size", "128", "--epochs", "3", "--warmup-epochs", "0", "--lr", "1e8",
                          "--steps-per-epoch", "5", "--quiet"])
    assert code == 2 and "training diverged in epoch 1" in err and "--lr" in err
    assert not os.path.exists(os.path.join(run_dir, "resume")) and not os.path.exists(os.path.join(run_dir, "final"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_dir(genomes, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _cli_err(["-i", genomes["path"], "-o", str(ro / "run")])
        assert code == 2 and "not a writable folder" in err
    finally:
        ro.chmod(0o755)


def test_help_explains_itself():
    code, out = 0, ""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = _cli(["--help"])
    out = buf.getvalue()
    assert code == 0
    for flag in ("--latent", "--beta", "--warmup-epochs", "--resume", "--hidden", "--max-samples", "--early-stopping",
                 "--mixed-precision", "384", "0.05", "1024"):
        assert flag in out
