"""``train_vae --kmers A-B``: encoders of some k-mer groups take the usual matrix everywhere.

The encoder records its columns (``KmerColumns`` in the .keras file, ``columns``
in the portable export), so embedding (both engines), export_encoder,
verify_local_distances, evaluate_labels and query_neighbors need no flag; encoders
of all 2772 features (the original scripts' kind) keep working.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vae import embed
from vae.errors import InputError
from vae.kmers import FEATURE_SLICES, GROUP_SLICES, N_FEATURES, feature_columns, groups_in, parse_k_range, profile
from vae.simulate import fragments, random_genome, write_fasta

from .conftest import call_cli

keras = pytest.importorskip("keras", reason="needs TensorFlow/Keras (pip install -e .[train])")

from vae.cli import embedding, evaluate_labels, export_encoder, query_neighbors, train_vae, verify_local_distances  # noqa: E402
from vae.layers import KmerColumns, encoder_columns  # noqa: E402
from vae.model import build_encoder, build_vae  # noqa: E402
from vae.train import TrainOptions, group_mse, train  # noqa: E402

TINY = dict(hidden=(32, 16), latent=4, batch_size=64, lr=1e-3, quiet=True)


def test_k_ranges_and_their_columns():
    assert parse_k_range("1-5") == (1, 5) and parse_k_range("4") == (4, 4) and parse_k_range(" 2-6 ") == (2, 6)
    for bad in ("0-5", "1-7", "5-1", "a-b", "1-2-3", ""):
        with pytest.raises(ValueError, match="k range"):
            parse_k_range(bad)
    cols = feature_columns(range(1, 6))
    assert cols.size == 692 == N_FEATURES - 2080
    # Independent reference: every matrix column of groups 1..5 (the length column is matrix column 0).
    expected = [c - 1 for k in range(1, 6) for c in range(GROUP_SLICES[k].start, GROUP_SLICES[k].stop)]
    assert sorted(cols.tolist()) == sorted(expected) and np.all(np.diff(cols) > 0)
    assert feature_columns(range(1, 7)).tolist() == list(range(N_FEATURES))
    where = groups_in(cols)
    assert sorted(where) == [1, 2, 3, 4, 5] and sum(p.size for p in where.values()) == 692
    assert all(np.array_equal(cols[where[k]], np.arange(FEATURE_SLICES[k].start, FEATURE_SLICES[k].stop)) for k in where)


def test_group_mse_of_a_partial_reconstruction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, N_FEATURES))
    cols = feature_columns([3, 4])
    recon = x[:, cols] + 1.0
    recon[:, groups_in(cols)[3]] += 1.0  # the 3-mers off by 2, the 4-mers by 1
    mse, per = group_mse(x, recon, cols)
    assert per[3] == pytest.approx(4.0) and per[4] == pytest.approx(1.0)
    assert all(np.isnan(per[k]) for k in (1, 2, 5, 6))
    assert mse == pytest.approx((32 * 4 + 136 * 1) / 168)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("kmers15")
    enc = build_encoder(latent=6, hidden=(16,), seed=1, columns=feature_columns(range(1, 6)))
    rng = np.random.default_rng(0)
    for layer in enc.layers:  # non-trivial BatchNorm statistics, so folding is exercised
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 1, n), rng.uniform(0.2, 3, n)])
    enc.save(d / "enc15.keras")
    records, ids, labels = [], [], []
    for g in range(3):
        genome = random_genome(40_000, seed=g, gc=0.35 + 0.15 * g)
        for j, frag in enumerate(fragments(genome, 20, 1500, 6000, seed=10 + g)):
            records.append((f"g{g}_c.{j + 1}", frag))
    write_fasta(str(d / "contigs.fa"), records)
    rows = np.stack([profile(s) for _, s in records])
    np.save(d / "kmers.npy", rows)
    (d / "kmers.txt").write_text("".join(i + "\n" for i, _ in records))
    (d / "labels.tsv").write_text("id\tgenome\n" + "".join(f"g{g}_c\tg{g}\n" for g in range(3)))
    return d


def test_encoder_round_trips_and_export_records_the_columns(work, tmp_path):
    loaded = embed.load_encoder(str(work / "enc15.keras"), "keras")
    assert loaded.input_dim == N_FEATURES and encoder_columns(loaded.full_model) == feature_columns(range(1, 6)).tolist()
    assert call_cli(export_encoder, ["-m", work / "enc15.keras", "-o", tmp_path / "p"]) == 0
    spec = json.loads((tmp_path / "p.json").read_text())
    assert spec["version"] == 2 and spec["input_dim"] == N_FEATURES and spec["columns"] == list(range(2080, 2772))
    w = np.load(tmp_path / "p.npz")
    assert w[spec["layers"][0]["weights"]].shape == (692, 16)  # the first matmul sees 692 features only
    numpy_enc = embed.load_encoder(str(tmp_path / "p.json"), "numpy")
    x = embed.clr_batch(np.load(work / "kmers.npy"))
    assert np.abs(numpy_enc.z_mean(x) - loaded.z_mean(x)).max() < 1e-4
    # The 6-mer columns are not read at all: change them and nothing moves.
    x2 = x.copy()
    x2[:, FEATURE_SLICES[6]] = np.random.default_rng(1).normal(size=(x.shape[0], 2080))
    np.testing.assert_array_equal(numpy_enc.z_mean(x2), numpy_enc.z_mean(x))
    np.testing.assert_allclose(loaded.z_mean(x2), loaded.z_mean(x), atol=1e-6)


def test_old_readers_refuse_and_bad_columns_are_clear(work, tmp_path):
    spec, arrays = embed.portable_from_keras(embed._load_keras_model(str(work / "enc15.keras")))
    for bad, msg in (([], "columns"), ([0, N_FEATURES], "feature indices in 0..2771"), ("x", "columns")):
        with pytest.raises(InputError, match=msg):
            embed.NumpyEncoder.from_export({**spec, "columns": bad}, arrays)
    # A version-1 file (no columns) still reads as an all-features encoder.
    full = build_encoder(latent=3, hidden=(8,), seed=0)
    s1, a1 = embed.portable_from_keras(full)
    assert s1["version"] == 1 and "columns" not in s1
    assert embed.NumpyEncoder.from_export(s1, a1).columns is None


def test_consumers_take_the_usual_matrix(work, tmp_path, capsys):
    m, fa = work / "kmers.npy", work / "contigs.fa"
    outs = {}
    for engine in ("keras", "numpy"):
        out = tmp_path / f"e_{engine}.npy"
        assert call_cli(embedding, ["-m", work / "enc15.keras", "-i", m, "-o", out, "--engine", engine, "--quiet"]) == 0
        outs[engine] = np.load(out)
    assert outs["keras"].shape == (60, 7)
    assert np.abs(outs["keras"] - outs["numpy"]).max() < 1e-4
    assert call_cli(embedding, ["-m", work / "enc15.keras", "-i", fa, "-o", tmp_path / "f.npy", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), outs["keras"], atol=1e-4)
    assert call_cli(verify_local_distances, ["-i", m, "-e", work / "enc15.keras", "--queries", "10", "-k", "5",
                                             "--bootstrap", "0", "--quiet"]) == 0
    assert call_cli(evaluate_labels, ["-i", m, "-id", work / "kmers.txt", "-l", work / "labels.tsv",
                                      "-e", work / "enc15.keras", "--quiet"]) == 0
    capsys.readouterr()
    assert call_cli(query_neighbors, ["--build-index", tmp_path / "idx", "-e", tmp_path / "e_keras.npy",
                                      "-id", work / "kmers.txt", "--fasta", fa, "-m", work / "enc15.keras", "-k", 1]) == 0
    # Each contig's nearest neighbour is itself: the query went through the same 1-5 encoder.
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith(("#", "query"))]
    assert len(lines) == 60 and all(parts[0] == parts[2] for parts in lines)


def test_full_width_encoders_still_embed(work, tmp_path):
    """An encoder of all 2772 features with no KmerColumns (the original scripts' kind) is unchanged."""
    enc = build_encoder(latent=3, hidden=(8,), seed=2)
    assert not any(isinstance(layer, KmerColumns) for layer in enc.layers) and encoder_columns(enc) is None
    enc.save(tmp_path / "full.keras")
    rows = np.load(work / "kmers.npy")
    for engine in ("keras", "numpy"):
        z = embed.embed_matrix(rows, str(tmp_path / "full.keras"), engine=engine)
        np.testing.assert_allclose(z, enc.predict_on_batch(embed.clr_batch(rows))[0], atol=1e-4)


def test_train_1_5_model_and_resume(work, tmp_path, capsys):
    run = tmp_path / "run"
    r = train(TrainOptions(input=str(work / "kmers.npy"), run_dir=str(run), epochs=2, warmup_epochs=1,
                           kmers="1-5", val_fraction=0.2, batch_size=16, **{k: v for k, v in TINY.items() if k != "batch_size"}))
    vae = r.vae
    assert vae.decoder.outputs[0].shape[-1] == 692 and vae.columns == list(range(2080, 2772))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hyperparameters"]["kmers"] == "1-5" and cfg["model"]["n_inputs"] == 692
    h = r.history[-1]
    assert np.isnan(h["mse_6"]) and all(np.isfinite(h[f"mse_{k}"]) for k in range(1, 6))
    saved = keras.saving.load_model(run / "encoder.keras")
    assert encoder_columns(saved) == list(range(2080, 2772))
    # --resume keeps the range; a different one is refused in one line.
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "3", "--quiet"]) == 0
    assert call_cli(train_vae, ["-o", run, "--resume", "--epochs", "4", "--kmers", "2-6", "--quiet"]) == 2
    assert "--kmers 2-6 differs from the run's 1-5" in capsys.readouterr().err
    assert len(json.loads((run / "config.json").read_text())["resumes"]) == 1


@pytest.mark.parametrize("bad", ["0-5", "3-2", "1-7", "x"])
def test_bad_kmers_is_one_line(work, tmp_path, capsys, bad):
    assert call_cli(train_vae, ["-i", work / "kmers.npy", "-o", tmp_path / "r", "--kmers", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_vae: error: --kmers: expected a k range") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_loss_reconstructs_only_the_modelled_columns():
    """The reconstruction term is the SSE over the 692 columns of 1-5 (the 6-mers contribute nothing)."""
    vae = build_vae(latent=2, hidden=(8,), columns=feature_columns(range(1, 6)))
    x = np.random.default_rng(0).normal(size=(4, N_FEATURES)).astype(np.float32)
    recon, z_mean, z_log_var = vae(x)
    vae.kl_weight.assign(0.0)
    loss = float(vae.compute_loss(x=x, y_pred=(recon, z_mean, z_log_var)))
    expected = np.mean(np.sum((x[:, 2080:] - np.asarray(recon)) ** 2, axis=1))
    assert loss == pytest.approx(expected, rel=1e-5)
    x2 = x.copy()
    x2[:, :2080] += 5.0  # 6-mer columns: neither read nor reconstructed
    assert float(vae.compute_loss(x=x2, y_pred=(recon, z_mean, z_log_var))) == pytest.approx(loss, rel=1e-5)
