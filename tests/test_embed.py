"""`embedding` and `export_encoder`: z_mean inference, the portable NumPy engine, streaming, and the light path.

A tiny encoder (latent 8, hidden 32/16) with non-trivial BatchNorm statistics
stands in for the real one; the shipped Models/default encoder is checked in
one test, skipped with a reason when absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vae import embed
from vae.errors import InputError
from vae.kmers import N_FEATURES, profile
from vae.simulate import random_genome, write_fasta

from .conftest import REPO, call_cli, run_cli

keras = pytest.importorskip("keras", reason="the Keras engine tests need TensorFlow/Keras (pip install -e .[train])")

from vae.cli import embedding, export_encoder  # noqa: E402
from vae.model import build_encoder  # noqa: E402

LATENT = 8


def _randomise_batchnorm(model, rng: np.random.Generator) -> None:
    """Non-trivial moving statistics, so BatchNorm folding is really exercised."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 1.0, n), rng.uniform(0.2, 3.0, n)])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("embed")
    enc = build_encoder(latent=LATENT, hidden=(32, 16), seed=3)
    _randomise_batchnorm(enc, np.random.default_rng(0))
    enc.save(d / "tiny.keras")
    embed.export_encoder(str(d / "tiny.keras"))
    records = [(f"c{i}", random_genome(int(n), seed=i)) for i, n in enumerate(np.linspace(300, 6000, 37))]
    write_fasta(str(d / "contigs.fa"), records)
    rows = np.stack([profile(s) for _, s in records])
    np.save(d / "kmers.npy", rows)
    (d / "kmers.txt").write_text("".join(f"{i}\n" for i, _ in records))
    return d


@pytest.fixture(scope="module")
def keras_encoder(work):
    return embed.load_encoder(str(work / "tiny.keras"), "keras")


@pytest.fixture(scope="module")
def numpy_encoder(work):
    return embed.load_encoder(str(work / "tiny.json"), "numpy")


def test_z_mean_is_deterministic_bit_for_bit(work, keras_encoder, numpy_encoder):
    rows = np.load(work / "kmers.npy")
    for enc in (keras_encoder, numpy_encoder):
        a, b = embed.embed_rows(enc, rows), embed.embed_rows(enc, rows)
        assert a.dtype == np.float32 and a.shape == (rows.shape[0], 1 + LATENT)
        assert np.array_equal(a, b)
        assert np.array_equal(a[:, 0], rows[:, 0])


def test_keras_engine_returns_z_mean_not_a_sample(work, keras_encoder):
    """The full encoder's first output (z_mean) equals the engine's, and its sampled z does not."""
    rows = np.load(work / "kmers.npy")
    from vae.transform import clr

    z_mean, _, z = keras_encoder.full_model.predict_on_batch(clr(rows))
    ours = keras_encoder.z_mean(clr(rows))
    np.testing.assert_allclose(ours, z_mean, atol=1e-6)
    assert not np.allclose(ours, z, atol=1e-3)


def test_numpy_engine_matches_keras(work, keras_encoder, numpy_encoder):
    spec = json.loads((work / "tiny.json").read_text())
    assert [op.get("folded") for op in spec["layers"] if op["kind"] == "dense"] == ["enc0_bn", "enc1_bn", None]
    assert {op["negative_slope"] for op in spec["layers"] if op["kind"] == "activation"} == {0.2}
    rows = np.load(work / "kmers.npy")
    a = embed.embed_rows(keras_encoder, rows)
    b = embed.embed_rows(numpy_encoder, rows)
    assert np.abs(a - b).max() < 1e-4
    # Large-valued input too (BatchNorm statistics matter most away from zero).
    x = np.random.default_rng(1).normal(0, 3, size=(64, N_FEATURES)).astype(np.float32)
    assert np.abs(keras_encoder.z_mean(x) - numpy_encoder.z_mean(x)).max() < 1e-4


def test_fold_batchnorm_equals_dense_then_batchnorm():
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    gamma, beta, mean, var, eps = rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.1, 2, 4), 1e-3
    x = rng.normal(size=(10, 6))
    expected = gamma * ((x @ w + b) - mean) / np.sqrt(var + eps) + beta
    w2, b2 = embed.fold_batchnorm(w, b, gamma, beta, mean, var, eps)
    np.testing.assert_allclose(x @ w2 + b2, expected, rtol=1e-5, atol=1e-5)


def test_legacy_style_encoder_without_named_outputs(tmp_path):
    """An encoder built like the original scripts (default layer names, z_mean the first output) loads and exports."""
    from vae.layers import ClipLayer, Sampling

    inp = keras.Input(shape=(N_FEATURES,))
    h = keras.layers.Dense(16)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.LeakyReLU(negative_slope=0.3)(h)
    h = keras.layers.Dropout(0.1)(h)
    mu = keras.layers.Dense(4, name="mu")(h)
    lv = ClipLayer()(keras.layers.Dense(4)(h))
    z = Sampling()([mu, lv])
    model = keras.Model(inp, [mu, lv, z])
    _randomise_batchnorm(model, np.random.default_rng(2))
    model.save(tmp_path / "old.keras")
    k = embed.load_encoder(str(tmp_path / "old.keras"), "keras")
    n = embed.load_encoder(str(tmp_path / "old.keras"), "numpy")  # converted in memory: no export beside it
    x = np.random.default_rng(3).normal(size=(20, N_FEATURES)).astype(np.float32)
    assert k.latent == n.latent == 4
    assert np.abs(k.z_mean(x) - n.z_mean(x)).max() < 1e-4
    np.testing.assert_allclose(k.z_mean(x), model.predict_on_batch(x)[0], atol=1e-6)


def test_export_refuses_unsupported_layers(tmp_path):
    inp = keras.Input(shape=(N_FEATURES,))
    h = keras.layers.Dense(8, activation="softmax")(inp)
    out = keras.layers.Dense(3, name="z_mean")(h)
    keras.Model(inp, out).save(tmp_path / "odd.keras")
    with pytest.raises(InputError, match="softmax"):
        embed.export_encoder(str(tmp_path / "odd.keras"))


def test_streaming_in_small_batches_equals_one_batch(work, numpy_encoder, tmp_path):
    rows = np.load(work / "kmers.npy")
    n = embed.embed_matrix_file(numpy_encoder, str(work / "kmers.npy"), str(tmp_path / "e.npy"), batch_size=5)
    assert n == rows.shape[0]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), embed.embed_rows(numpy_encoder, rows), rtol=1e-5, atol=1e-5)
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]


def test_width_mismatch_is_a_clear_error(work, tmp_path):
    enc = embed.NumpyEncoder([], input_dim=100, latent=100, source="narrow.json")
    with pytest.raises(InputError, match=r"takes 100 input features but a k-mer matrix provides 2772"):
        embed.embed_matrix_file(enc, str(work / "kmers.npy"), str(tmp_path / "e.npy"))
    narrow = build_encoder(latent=2, hidden=(4,), input_dim=100)
    narrow.save(tmp_path / "narrow.keras")
    code = call_cli(embedding, ["-m", tmp_path / "narrow.keras", "-i", work / "kmers.npy", "-o", tmp_path / "e.npy", "--quiet"])
    assert code == 2 and not (tmp_path / "e.npy").exists()


def test_filter_stdin_to_stdout_round_trip(work):
    """The original form: `embedding -m encoder.keras < kmers.npy > emb.npy` (keras), and the numpy engine."""
    data = (work / "kmers.npy").read_bytes()
    rows = np.load(work / "kmers.npy")
    import io

    for model, engine in (("tiny.keras", "keras"), ("tiny.json", "numpy")):
        proc = run_cli("embedding", "-m", work / model, "--engine", engine, "--batch-size", "10", input=data, check=True)
        out = np.load(io.BytesIO(proc.stdout), allow_pickle=False)
        ref = embed.embed_rows(embed.load_encoder(str(work / model), engine), rows)
        assert out.shape == (rows.shape[0], 1 + LATENT) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Truncated stdin: a clear error, not a short file.
    proc = run_cli("embedding", "-m", work / "tiny.json", input=data[: len(data) - 5000])
    assert proc.returncode == 2 and b"truncated" in proc.stderr
    proc = run_cli("embedding", "-m", work / "tiny.json", input=b">c1\nACGT\n")
    assert proc.returncode == 2 and b"-i FILE" in proc.stderr


def test_fasta_input_equals_count_then_embed(work, tmp_path):
    from vae.cli import calculate_kmer_frequencies

    assert call_cli(calculate_kmer_frequencies, ["-i", work / "contigs.fa", "-id", tmp_path / "k.txt", "-k", tmp_path / "k.npy",
                                                 "--chop", "1000", "--quiet"]) == 0
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", tmp_path / "k.npy", "-o", tmp_path / "a.npy", "--quiet"]) == 0
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", work / "contigs.fa", "-o", tmp_path / "b.npy",
                                "--chop", "1000", "--quiet", "--batch-size", "16"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "b.txt").read_text() == (tmp_path / "k.txt").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary counting files left behind"


def test_error_messages(work, tmp_path, monkeypatch, capsys):
    cases = [
        (["-m", tmp_path / "missing.keras", "-i", work / "kmers.npy", "-o", tmp_path / "e.npy"], "no such encoder file"),
        (["-m", work / "tiny.json", "-i", tmp_path / "nope.npy", "-o", tmp_path / "e.npy"], "no such file"),
        (["-m", work / "tiny.json", "-i", work / "contigs.fa"], "needs --ids-out"),
        (["-m", work / "tiny.json", "-i", work / "kmers.npy", "-o", tmp_path / "no_dir" / "e.npy"], "does not exist"),
        (["-m", work / "tiny.json", "--engine", "keras", "-i", work / "kmers.npy", "-o", tmp_path / "e.npy"], "numpy engine only"),
        (["-m", work / "tiny.json", "-i", work / "kmers.npy", "-o", tmp_path / "e.npy", "--chop", "500"], "for FASTA input"),
    ]
    for argv, message in cases:
        assert call_cli(embedding, ["--quiet", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 10), np.float32))
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", bad, "-o", tmp_path / "e.npy", "--quiet"]) == 2
    assert "has 10 columns, expected 2773" in capsys.readouterr().err
    # A folder: its encoder.keras (numpy engine: the export beside it), or a clear error.
    (tmp_path / "run").mkdir()
    for suffix in (".json", ".npz"):
        (tmp_path / "run" / ("encoder" + suffix)).write_bytes((work / ("tiny" + suffix)).read_bytes())
    assert embed.load_encoder(str(tmp_path / "run"), "auto").source.endswith("encoder.json")
    with pytest.raises(InputError, match="a folder without encoder.keras"):
        embed.load_encoder(str(tmp_path), "numpy")
    monkeypatch.setattr(embed, "DEFAULT_MODEL_DIR", tmp_path / "no_models")
    with pytest.raises(InputError, match="no default model"):
        embed.load_encoder(None, "numpy")
    assert not (tmp_path / "e.npy").exists()


def test_export_encoder_cli(work, tmp_path, capsys):
    assert call_cli(export_encoder, ["-m", work / "tiny.keras", "-o", tmp_path / "exp"]) == 0
    assert "max |numpy - keras|" in capsys.readouterr().err
    assert (tmp_path / "exp.npz").exists() and (tmp_path / "exp.json").exists()
    with np.load(tmp_path / "exp.npz", allow_pickle=False) as z:
        assert all(z[k].dtype == np.float32 for k in z.files)


def test_light_path_never_imports_tensorflow(work, tmp_path):
    """With TensorFlow and Keras made unimportable, counting and numpy-engine embedding (auto) still work."""
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'):
                    raise ImportError('blocked for the light-path test: ' + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(REPO)!r})
        from vae import embed
        assert not embed.keras_available()
        from vae.cli import embedding
        for argv in (["-m", {str(work / 'tiny.keras')!r}, "-i", {str(work / 'contigs.fa')!r}, "-o", {str(tmp_path / 'light.npy')!r}],
                     ["-m", {str(work / 'tiny.json')!r}, "-i", {str(work / 'kmers.npy')!r}, "-o", {str(tmp_path / 'light2.npy')!r}]):
            try:
                embedding(argv)
            except SystemExit as e:
                assert e.code == 0, e.code
        heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]
        assert not heavy, heavy
        print("light ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "light ok" in proc.stdout and "numpy engine" in proc.stderr
    ref = embed.embed_rows(embed.load_encoder(str(work / "tiny.keras"), "keras"), np.load(work / "kmers.npy"))
    assert np.abs(np.load(tmp_path / "light.npy") - ref).max() < 1e-4
    assert np.abs(np.load(tmp_path / "light2.npy") - ref).max() < 1e-4


def test_stale_export_is_not_used(work, tmp_path, capsys):
    """A portable export beside a .keras it was not made from is ignored (converted afresh), with a warning."""
    other = build_encoder(latent=LATENT, hidden=(32, 16), seed=99)
    other.save(tmp_path / "tiny.keras")
    for suffix in (".json", ".npz"):
        (tmp_path / ("tiny" + suffix)).write_bytes((work / ("tiny" + suffix)).read_bytes())
    enc = embed.load_encoder(str(tmp_path / "tiny.keras"), "numpy")
    assert "was not exported from" in capsys.readouterr().err
    x = np.random.default_rng(0).normal(size=(5, N_FEATURES)).astype(np.float32)
    np.testing.assert_allclose(enc.z_mean(x), other.predict_on_batch(x)[0], atol=1e-4)


def test_default_model_numpy_matches_keras():
    """The shipped encoder: both engines agree within 1e-4 on real-looking profiles."""
    d = embed.DEFAULT_MODEL_DIR
    if not (d / embed.KERAS_NAME).exists() or not (d / embed.SPEC_NAME).exists():
        pytest.skip(f"no shipped default model in {d}")
    rows = np.stack([profile(random_genome(n, seed=n)) for n in (1000, 2500, 5000, 20000)])
    k, n = embed.load_encoder(None, "keras"), embed.load_encoder(None, "numpy")
    assert k.input_dim == N_FEATURES and k.latent == n.latent
    assert np.abs(embed.embed_rows(k, rows) - embed.embed_rows(n, rows)).max() < 1e-4


def test_many_inputs_to_a_folder_with_one_encoder_load(work, tmp_path, monkeypatch):
    """`embedding -i a.fa b.npy c.fa.gz -o DIR/`: each output equals the single-input command; the encoder loads once."""
    import gzip

    (tmp_path / "s2.fa.gz").write_bytes(gzip.compress((work / "contigs.fa").read_bytes()))
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", work / "contigs.fa", "-o", tmp_path / "contigs1.npy",
                                "--min-length", "1000", "--quiet"]) == 0
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", work / "kmers.npy", "-o", tmp_path / "kmers1.npy", "--quiet"]) == 0
    loads = []
    real = embed.load_encoder
    monkeypatch.setattr(embed, "load_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    out = tmp_path / "emb"
    assert call_cli(embedding, ["-m", work / "tiny.json", "-i", work / "contigs.fa", work / "kmers.npy", tmp_path / "s2.fa.gz",
                                "-o", f"{out}/", "--min-length", "1000", "--quiet", "--batch-size", "7"]) == 0
    assert len(loads) == 1
    assert sorted(os.listdir(out)) == ["contigs.npy", "contigs.txt", "kmers.npy", "kmers.txt", "s2.npy", "s2.txt"]
    ref_fa, ref_m = np.load(tmp_path / "contigs1.npy"), np.load(tmp_path / "kmers1.npy")
    np.testing.assert_allclose(np.load(out / "contigs.npy"), ref_fa, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "s2.npy"), ref_fa, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "kmers.npy"), ref_m, rtol=1e-5, atol=1e-5)
    assert (out / "contigs.txt").read_text() == (out / "s2.txt").read_text() == (tmp_path / "contigs1.txt").read_text()
    assert (out / "kmers.txt").read_text() == (work / "kmers.txt").read_text()
    assert ref_fa.shape[0] < ref_m.shape[0]  # --min-length applied to the FASTA inputs only


def test_many_inputs_errors_before_any_output(work, tmp_path, capsys):
    out = tmp_path / "emb"
    out.mkdir()
    (out / "kmers.npy").write_bytes((work / "kmers.npy").read_bytes())
    cases = [
        (["-i", work / "kmers.npy", work / "contigs.fa", work / "kmers.npy"], "would both write kmers.npy"),
        (["-i", out / "kmers.npy"], "would overwrite this input"),
        (["-i", work / "kmers.npy", tmp_path / "nope.fa"], "no such file"),
        (["-i", work / "kmers.npy", "--ids-out", tmp_path / "x.txt"], "--ids-out is for a single output"),
    ]
    for argv, msg in cases:
        assert call_cli(embedding, ["-m", work / "tiny.json", *argv, "-o", f"{out}/", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("embedding: error:") and msg in err[-1], (argv, err)
        assert sorted(os.listdir(out)) == ["kmers.npy"]
