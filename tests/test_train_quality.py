"""BatchNorm momentum from the steps per epoch, ``--group-weights``, ``--contrast``, and the training options together."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="needs TensorFlow/Keras (pip install -e .[train])")

from vae.cli import train_vae  # noqa: E402 -- after the Keras skip
from vae.kmers import FEATURE_SLICES, N_FEATURES, feature_columns, profile  # noqa: E402
from vae.model import build_vae, contrastive_loss, nearest_rows_mask  # noqa: E402
from vae.simulate import fragments, random_genome  # noqa: E402
from vae.train import TrainOptions, bn_momentum_for, train  # noqa: E402
from vae.transform import clr  # noqa: E402

from .conftest import call_cli  # noqa: E402


def test_bn_momentum_follows_the_steps_per_epoch():
    assert bn_momentum_for(1) == 0.5 and bn_momentum_for(4) == 0.5 and bn_momentum_for(6) == pytest.approx(2 / 3)
    assert bn_momentum_for(100) == pytest.approx(0.98) and bn_momentum_for(200) == 0.99 and bn_momentum_for(10**6) == 0.99


def _moving_mean_error(momentum: float) -> float:
    """After one epoch of 4 steps: |moving mean - mean of the first Dense's outputs| / |that mean|."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(512, N_FEATURES)) + rng.normal(size=N_FEATURES) * 2).astype(np.float32)  # non-zero means
    vae = build_vae(latent=4, hidden=(32,), beta=0.05, bn_momentum=momentum, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-4))
    vae.fit(x, batch_size=128, epochs=1, verbose=0, shuffle=False)
    dense, bn = vae.encoder.get_layer("enc0_dense"), vae.encoder.get_layer("enc0_bn")
    actual = np.asarray(dense(x)).mean(axis=0)
    return float(np.linalg.norm(np.asarray(bn.moving_mean) - actual) / np.linalg.norm(actual))


def test_moving_statistics_track_the_data_after_one_short_epoch():
    """The cause of validation losses several times the training loss on small runs, and its fix."""
    assert _moving_mean_error(bn_momentum_for(4)) < 0.15
    assert _moving_mean_error(0.99) > 0.9  # Keras' default: still ~96 % the initial zeros after 4 steps


def test_group_weights_scale_each_groups_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, N_FEATURES)).astype(np.float32)
    plain = build_vae(latent=2, hidden=(8,), beta=0.05, seed=0)
    weighted = build_vae(latent=2, hidden=(8,), beta=0.05, seed=0, group_weights={6: 0.2, 3: 2.0})
    plain.kl_weight.assign(0.0)
    weighted.kl_weight.assign(0.0)
    pred = plain(x)
    sq = (x - np.asarray(pred[0])) ** 2
    w = np.ones(N_FEATURES)
    w[FEATURE_SLICES[6]], w[FEATURE_SLICES[3]] = 0.2, 2.0
    assert float(plain.compute_loss(x=x, y_pred=pred)) == pytest.approx(sq.sum(axis=1).mean(), rel=1e-5)
    assert float(weighted.compute_loss(x=x, y_pred=pred)) == pytest.approx((sq * w).sum(axis=1).mean(), rel=1e-5)
    # With --kmers 2-6 the weights follow the modelled columns.
    cols = feature_columns(range(2, 7))
    part = build_vae(latent=2, hidden=(8,), beta=0.05, seed=0, columns=cols, group_weights={6: 0.5})
    part.kl_weight.assign(0.0)
    recon = rng.normal(size=(6, cols.size)).astype(np.float32)
    wp = np.where(cols < FEATURE_SLICES[6].stop, 0.5, 1.0)
    got = float(part.compute_loss(x=x, y_pred=(recon, pred[1], pred[2])))
    assert got == pytest.approx((((x[:, cols] - recon) ** 2) * wp).sum(axis=1).mean(), rel=1e-5)
    # The weights survive saving (JSON turns the keys into strings).
    restored = type(weighted).from_config(json.loads(json.dumps(weighted.get_config())))
    assert restored.group_weights == {3: 2.0, 6: 0.2}


def _info_nce_reference(a: np.ndarray, b: np.ndarray, temperature: float, exclude=None,
                        noisy_negatives: bool = False) -> np.ndarray:
    """InfoNCE by loops in float64: -log softmax_j(-|a_i - b_j|^2 / (t x mean_{i!=j} |a_i - b_j|^2)) at j = i,
    the softmax over the b_j not excluded (and, with ``noisy_negatives``, the a_j, j != i, not excluded)."""
    n = a.shape[0]
    a = a.astype(np.float64)
    d = np.array([[np.sum((a[i] - b[j]) ** 2) for j in range(n)] for i in range(n)])
    scale = temperature * d[~np.eye(n, dtype=bool)].mean()
    out = np.empty(n)
    for i in range(n):
        candidates = [d[i, j] for j in range(n) if j == i or exclude is None or not exclude[i][j]]
        if noisy_negatives:
            candidates += [np.sum((a[i] - a[j]) ** 2) for j in range(n)
                           if j != i and (exclude is None or not exclude[i][j])]
        logits = -np.array(candidates) / scale
        m = logits.max()
        out[i] = -(-d[i, i] / scale - m - np.log(np.exp(logits - m).sum()))
    return out


def test_contrastive_loss_matches_a_reference_and_rewards_aligned_pairs():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    for t in (0.2, 1.0, 3.0):
        np.testing.assert_allclose(np.asarray(contrastive_loss(a, b, t)), _info_nce_reference(a, b, t), rtol=1e-4,
                                   atol=1e-5)
    # Scale-free: the same configuration at 100x the scale costs the same.
    np.testing.assert_allclose(np.asarray(contrastive_loss(100 * a, 100 * b, 1.0)),
                               np.asarray(contrastive_loss(a, b, 1.0)), rtol=1e-4)
    # Pairs that coincide cost less than chance (log n); shuffled partners cost more.
    spread = rng.normal(size=(7, 5)).astype(np.float32)
    aligned, shuffled = (float(np.mean(contrastive_loss(spread, b, 0.2))) for b in (spread, spread[::-1].copy()))
    assert aligned < 0.5 * np.log(7) < np.log(7) < shuffled


def _nearest_reference(x: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The pairs (i, j): j among the k rows nearest to row i, other than i (no ties in random data)."""
    n = x.shape[0]
    out = set()
    for i in range(n):
        d = sorted((float(np.sum((x[i].astype(np.float64) - x[j]) ** 2)), j) for j in range(n) if j != i)
        out |= {(i, j) for _, j in d[:k]}
    return out


@pytest.mark.parametrize("n,k", [(9, 1), (9, 3), (4, 3), (4, 10)])
def test_nearest_rows_mask_matches_a_reference(n, k):
    x = np.random.default_rng(n + k).normal(size=(n, 6)).astype(np.float32)
    mask = np.asarray(nearest_rows_mask(x, k))
    assert set(zip(*np.nonzero(mask))) == _nearest_reference(x, k)  # k >= n: every other row
    assert not mask.diagonal().any()


def test_contrastive_loss_leaves_excluded_rows_out_of_the_negatives():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)
    exclude = nearest_rows_mask(b, 2)
    got = np.asarray(contrastive_loss(a, b, 0.5, exclude))
    np.testing.assert_allclose(got, _info_nce_reference(a, b, 0.5, np.asarray(exclude)), rtol=1e-4, atol=1e-5)
    # Fewer negatives: never a higher loss than with all of them.
    assert (got <= np.asarray(contrastive_loss(a, b, 0.5)) + 1e-6).all()
    # The noisy views as negatives too, with and without the exclusion.
    for mask in (None, exclude):
        both = np.asarray(contrastive_loss(a, b, 0.5, mask, noisy_negatives=True))
        ref = _info_nce_reference(a, b, 0.5, None if mask is None else np.asarray(mask), noisy_negatives=True)
        np.testing.assert_allclose(both, ref, rtol=1e-4, atol=1e-5)
        assert (both >= np.asarray(contrastive_loss(a, b, 0.5, mask)) - 1e-6).all()  # more negatives: never lower


def test_contrast_term_is_added_to_training_steps_only():
    rng = np.random.default_rng(1)
    noisy = rng.normal(size=(6, N_FEATURES)).astype(np.float32)
    clean = (noisy + rng.normal(size=noisy.shape) * 0.1).astype(np.float32)
    plain = build_vae(latent=3, hidden=(8,), beta=0.05, seed=0)
    vae = build_vae(latent=3, hidden=(8,), beta=0.05, seed=0, contrast=2.0, contrast_temperature=0.5)
    for m in (plain, vae):
        m.kl_weight.assign(0.0)
    pred = vae(noisy, training=True)
    base = float(plain.compute_loss(x=noisy, y=clean, y_pred=pred))
    z_clean = np.asarray(vae.encoder(clean, training=True)[0])
    expected = base + 2.0 * _info_nce_reference(np.asarray(pred[1]), z_clean, 0.5).mean()
    assert float(vae.compute_loss(x=noisy, y=clean, y_pred=pred, training=True)) == pytest.approx(expected, rel=1e-4)
    # Validation (training=False) and clean-only batches (no y) score the VAE loss alone.
    assert float(vae.compute_loss(x=noisy, y=clean, y_pred=pred, training=False)) == pytest.approx(base, rel=1e-5)
    restored = type(vae).from_config(json.loads(json.dumps(vae.get_config())))
    assert (restored.contrast, restored.contrast_temperature, restored.contrast_exclude) == (2.0, 0.5, 0)
    # --contrast-exclude: each row's nearest clean inputs (the reconstruction target) drop out of its negatives.
    masked = build_vae(latent=3, hidden=(8,), beta=0.05, seed=0, contrast=2.0, contrast_temperature=0.5,
                       contrast_exclude=2)
    masked.kl_weight.assign(0.0)
    pred = masked(noisy, training=True)
    z_clean = np.asarray(masked.encoder(clean, training=True)[0])
    exclude = np.asarray(nearest_rows_mask(clean, 2))
    expected = float(plain.compute_loss(x=noisy, y=clean, y_pred=pred)) + \
        2.0 * _info_nce_reference(np.asarray(pred[1]), z_clean, 0.5, exclude).mean()
    assert float(masked.compute_loss(x=noisy, y=clean, y_pred=pred, training=True)) == pytest.approx(expected, rel=1e-4)
    assert type(masked).from_config(json.loads(json.dumps(masked.get_config()))).contrast_exclude == 2
    both = build_vae(latent=3, hidden=(8,), beta=0.05, seed=0, contrast=2.0, contrast_temperature=0.5,
                     contrast_noisy_negatives=True)
    both.kl_weight.assign(0.0)
    pred = both(noisy, training=True)
    z_clean = np.asarray(both.encoder(clean, training=True)[0])
    expected = float(plain.compute_loss(x=noisy, y=clean, y_pred=pred)) + \
        2.0 * _info_nce_reference(np.asarray(pred[1]), z_clean, 0.5, noisy_negatives=True).mean()
    assert float(both.compute_loss(x=noisy, y=clean, y_pred=pred, training=True)) == pytest.approx(expected, rel=1e-4)
    assert type(both).from_config(json.loads(json.dumps(both.get_config()))).contrast_noisy_negatives is True
    with pytest.raises(ValueError, match="needs a contrast_temperature"):
        build_vae(latent=3, hidden=(8,), beta=0.05, contrast=1.0)


@pytest.mark.parametrize("kwargs,msg", [
    ({"contrast": 1.0}, "--contrast needs --denoise"),
    ({"contrast": -1.0, "denoise": "1000:4000"}, "--contrast must be >= 0"),
    ({"contrast_exclude": 4}, "--contrast-exclude needs --contrast"),
    ({"contrast_exclude": -1}, "--contrast-exclude must be >= 0"),
    ({"contrast_noisy_negatives": True}, "--contrast-noisy-negatives needs --contrast"),
    ({"contrast": 1.0, "denoise": "1000:4000", "contrast_exclude": 255, "batch_size": 256},
     "leaves no negatives in a batch of 256"),
])
def test_bad_contrast(kwargs, msg):
    from vae.errors import InputError
    from vae.train import _check_hyperparameters

    with pytest.raises(InputError, match=msg):
        _check_hyperparameters(TrainOptions(**kwargs))


@pytest.mark.parametrize("text,msg", [
    ("6:0.2", "expected K=W"), ("7=1", "K in 1..6"), ("6=-1", "weight >= 0"), ("6=1,6=2", "given twice"),
    ("6=0.5", "not modelled (--kmers 1-5)"), ("1=0,2=0,3=0,4=0,5=0", "nothing would be reconstructed"),
])
def test_bad_group_weights(text, msg):
    from vae.errors import InputError
    from vae.train import _check_hyperparameters

    kmers = "1-5"
    with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        _check_hyperparameters(TrainOptions(group_weights=text, kmers=kmers))


def test_all_options_together_and_resume(tmp_path, capsys):
    """--kmers, --denoise, --contrast, --group-weights, --dropout and the derived BatchNorm momentum in one run,
    then resumed."""
    rows = []
    for g in range(3):
        genome = random_genome(150_000, seed=g, gc=0.35 + 0.15 * g)
        rows += [profile(f) for f in fragments(genome, 60, 2000, 20_000, seed=g)]
    np.save(tmp_path / "m.npy", np.stack(rows))
    run = tmp_path / "run"
    r = train(TrainOptions(input=str(tmp_path / "m.npy"), run_dir=str(run), hidden=(16,), latent=3, batch_size=32,
                           epochs=2, warmup_epochs=1, lr=1e-3, quiet=True, kmers="2-6", denoise="1000:5000",
                           group_weights="6=0.2", dropout=0.1, contrast=0.5, contrast_exclude=3,
                           contrast_noisy_negatives=True))
    assert all(np.isfinite(r.history[-1][k]) for k in ("loss", "val_loss", "contrast"))
    assert r.history[-1]["contrast"] > 0
    cfg = json.loads((run / "config.json").read_text())
    hp = cfg["hyperparameters"]
    assert (hp["kmers"], hp["denoise"], hp["group_weights"], hp["dropout"], hp["contrast"], hp["contrast_exclude"],
            hp["contrast_noisy_negatives"]) == ("2-6", "1000:5000", "6=0.2", 0.1, 0.5, 3, True)
    assert cfg["model"]["bn_momentum"] == pytest.approx(0.6)  # 162 training rows: 5 steps of 32
    assert r.vae.group_weights == {6: 0.2} and r.vae.get_layer("encoder").get_layer("enc0_dropout").rate == 0.1
    assert "BatchNorm momentum 0.6" in (run / "train.log").read_text()
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "3", "--quiet"]) == 0
    vae = keras.saving.load_model(run / "final" / "vae.keras")
    assert (vae.contrast, vae.contrast_exclude, vae.contrast_noisy_negatives) == (0.5, 3, True)
    assert vae.group_weights == {6: 0.2} and vae.columns == feature_columns(range(2, 7)).tolist()
    assert "x contrast" in (run / "train.log").read_text()
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "4", "--group-weights", "6=1", "--quiet"]) == 2
    assert "--group-weights 6=1 differs from the run's 6=0.2" in capsys.readouterr().err
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "4", "--contrast", "1", "--quiet"]) == 2
    assert "--contrast 1.0 differs from the run's 0.5" in capsys.readouterr().err
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "4", "--contrast-exclude", "5", "--quiet"]) == 2
    assert "--contrast-exclude 5 differs from the run's 3" in capsys.readouterr().err
    z = clr(np.stack(rows[:5]))
    assert np.isfinite(np.asarray(vae.encoder(z)[0])).all()
