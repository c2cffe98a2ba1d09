"""``train_vae --denoise MIN:MAX``: inputs resampled as if the sequence were shorter, clean targets.

The statistics are checked against what sampling ``n = L - k + 1`` k-mers from
the row's own frequencies must give; the stream is checked for determinism
and resume safety; a tiny run checks the flags end to end.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vae.data import BatchPlan, Denoiser, MatrixReader, RowStream, parse_length_range
from vae.kmers import GROUP_SLICES, K_ORDER, profile
from vae.simulate import fragments, random_genome

from .conftest import call_cli


def _rows(n=64, lengths=(20_000, 60_000), seed=0) -> np.ndarray:
    genome = random_genome(300_000, seed=seed, gc=0.45)
    return np.stack([profile(f) for f in fragments(genome, n, lengths[0], lengths[1], seed=seed + 1)])


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return _rows()


def test_length_range_parsing():
    assert parse_length_range("1000:5000") == (1000, 5000) and parse_length_range("7:7") == (7, 7)
    for bad in ("5000:1000", "0:10", "1000", "a:b", "1:2:3"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_length_range(bad)


def test_short_profiles_have_the_granularity_of_n_and_sum_to_one(rows):
    d = Denoiser(1000, 1000, fraction=1.0, seed=3)
    noisy = d(rows, 0, 0)
    assert noisy.dtype == rows.dtype and noisy.shape == rows.shape
    np.testing.assert_array_equal(noisy[:, 0], 1000)  # every row is long enough: all resampled to exactly 1000 bp
    for k in K_ORDER:
        g = noisy[:, GROUP_SLICES[k]].astype(np.float64)
        np.testing.assert_allclose(g.sum(axis=1), 1.0, atol=1e-5)
        counts = g * (1000 - k + 1)  # each frequency is a whole number of k-mers out of n
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
        if k == 6:  # 995 draws over 2080 columns: most 6-mers are absent, unlike in the 20-60 kb originals
            assert (g == 0).mean() > 0.5 > (rows[:, GROUP_SLICES[6]] == 0).mean()


def test_long_profiles_approach_the_clean_one_and_are_unbiased(rows):
    long = Denoiser(2_000_000, 2_000_000, fraction=1.0, seed=1)(_rows(8, (2_000_000, 2_000_001)), 0, 0)
    ref = _rows(8, (2_000_000, 2_000_001))
    assert np.abs(long[:, GROUP_SLICES[4]] - ref[:, GROUP_SLICES[4]]).max() < 2e-4
    # The mean of many short resamplings is the clean profile (multinomial: E[count] = n * freq).
    d = Denoiser(500, 500, fraction=1.0, seed=2)
    one = np.repeat(rows[:1], 400, axis=0)
    mean = np.mean([d(one, 0, b)[:, 1:].astype(np.float64).mean(axis=0) for b in range(5)], axis=0)
    sl = slice(GROUP_SLICES[3].start - 1, GROUP_SLICES[1].stop - 1)
    np.testing.assert_allclose(mean[sl], rows[0, 1:][sl], atol=3e-3)


def test_lengths_are_log_uniform_below_each_rows_length():
    rows = _rows(400, (3000, 30_000), seed=5)
    d = Denoiser(1000, 20_000, fraction=1.0, seed=4)
    noisy = np.concatenate([d(rows, 0, b) for b in range(10)])
    clean_len = np.tile(rows[:, 0], 10)
    L = noisy[:, 0]
    assert np.all(L >= 1000) and np.all(L <= np.minimum(20_000, clean_len))
    # Rows of >= 20 kb: log10 L is uniform on [3, log10 20000]: quartiles at the quarter points.
    u = (np.log(L[clean_len >= 20_000]) - np.log(1000)) / (np.log(20_000) - np.log(1000))
    np.testing.assert_allclose(np.quantile(u, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75], atol=0.05)


def test_fraction_and_short_rows_pass_through(rows):
    d = Denoiser(1000, 5000, fraction=0.25, seed=0)
    noisy = d(rows, 2, 7)
    changed = np.any(noisy != rows, axis=1)
    assert changed.sum() == 16  # round(0.25 x 64), all rows are >= 1000 bp
    short = rows.copy()
    short[:, 0] = 999  # shorter than MIN: no row is touched
    np.testing.assert_array_equal(Denoiser(1000, 5000, fraction=1.0)(short, 0, 0), short)
    # A group with no k-mer stays all zero (no phantom counts in its last column).
    empty = rows[:4].copy()
    empty[:, GROUP_SLICES[6]] = 0
    out = Denoiser(1000, 1000, fraction=1.0)(empty, 0, 0)
    assert np.all(out[:, GROUP_SLICES[6]] == 0) and np.allclose(out[:, GROUP_SLICES[5]].sum(axis=1), 1, atol=1e-5)
    # Only the groups the model reads are resampled (--kmers 1-5 leaves the 6-mers).
    out = Denoiser(1000, 1000, fraction=1.0, ks=(5, 4, 3, 2, 1))(rows, 0, 0)
    np.testing.assert_array_equal(out[:, GROUP_SLICES[6]], rows[:, GROUP_SLICES[6]])
    assert not np.array_equal(out[:, GROUP_SLICES[5]], rows[:, GROUP_SLICES[5]])


def test_stream_pairs_are_seeded_and_resume_safe(rows, tmp_path):
    np.save(tmp_path / "m.npy", rows.astype(np.float16))
    plan = BatchPlan(np.arange(64), 16, shuffle=True, seed=9, block_rows=4)
    d = Denoiser(1000, 8000, fraction=0.5, seed=9)
    with MatrixReader(str(tmp_path / "m.npy")) as r:
        full = list(RowStream(r, plan, workers=3, denoiser=d).batches(0, epochs=2))
        again = list(RowStream(r, plan, workers=1, denoiser=d).batches(0, epochs=2))
        resumed = list(RowStream(r, plan, workers=2, denoiser=d).batches(0, epochs=2, skip=3))
        clean = list(RowStream(r, plan, workers=2).batches(0, epochs=2))
    assert len(full) == 8
    for (x, y), (x2, y2), c in zip(full, again, clean):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, c)  # the target is the clean batch
        assert x.dtype == np.float16 and np.any(x != y)
    assert len(resumed) == 5
    for (x, _), (x2, _) in zip(full[3:], resumed):
        np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(full[0][0][:, 1:], full[4][0][:, 1:])  # another epoch, other noise


keras = pytest.importorskip("keras", reason="the training tests need TensorFlow/Keras (pip install -e .[train])")

from vae.cli import train_vae  # noqa: E402
from vae.model import build_vae  # noqa: E402
from vae.train import TrainOptions, train  # noqa: E402


def test_train_step_reconstructs_the_clean_target():
    vae = build_vae(latent=2, hidden=(8,))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 4, 2772)).astype(np.float32)
    vae.kl_weight.assign(0.0)
    pred = vae(x)
    loss = float(vae.compute_loss(x=x, y=y, y_pred=pred))
    assert loss == pytest.approx(np.mean(np.sum((y - np.asarray(pred[0])) ** 2, axis=1)), rel=1e-5)
    assert loss != pytest.approx(float(vae.compute_loss(x=x, y_pred=pred)), rel=1e-3)


def test_denoising_run_end_to_end(rows, tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.concatenate([rows, _rows(64, seed=7)]))
    run = tmp_path / "run"
    opts = TrainOptions(input=str(tmp_path / "m.npy"), run_dir=str(run), hidden=(16,), latent=3, batch_size=32,
                        epochs=2, warmup_epochs=1, lr=1e-3, quiet=True, denoise="1000:5000", denoise_fraction=0.5)
    r = train(opts)
    assert np.isfinite(r.history[-1]["loss"]) and np.isfinite(r.history[-1]["val_loss"])
    hp = json.loads((run / "config.json").read_text())["hyperparameters"]
    assert hp["denoise"] == "1000:5000" and hp["denoise_fraction"] == 0.5
    assert "denoising: 0.5 of each batch" in (run / "train.log").read_text()
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "3", "--quiet"]) == 0
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "4", "--denoise", "500:900", "--quiet"]) == 2
    assert "--denoise 500:900 differs from the run's 1000:5000" in capsys.readouterr().err


@pytest.mark.parametrize("args,msg", [
    (["--denoise", "5000:1000"], "--denoise: expected MIN:MAX"),
    (["--denoise", "1000:5000", "--denoise-fraction", "0"], "--denoise-fraction must be in (0, 1]"),
    (["--denoise-fraction", "0.3"], "--denoise-fraction needs --denoise"),
])
def test_bad_denoise_options_are_one_line(rows, tmp_path, capsys, args, msg):
    np.save(tmp_path / "m.npy", rows)
    assert call_cli(train_vae, ["-i", tmp_path / "m.npy", "-o", tmp_path / "r", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and not os.path.exists(tmp_path / "r")
