"""`verify_local_distances` and `evaluate_labels` on spaces whose answer is known.

The k-mer matrix is made of fragments of three synthetic genomes (distinct
composition). Toy "encoders" stand in for a trained one: the identity (its
space is the CLR space: Spearman 1, perfect neighbours) and a random one
(vectors unrelated to the input: Spearman about 0, neighbours no better than
random pairs, labels at chance). No TensorFlow needed.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from vae import evaluate as ev
from vae.cli import evaluate_labels, verify_local_distances
from vae.embed import NumpyEncoder
from vae.errors import InputError
from vae.kmers import N_FEATURES, profile
from vae.simulate import fragments, random_genome

from .conftest import call_cli

GENOMES = {"gA": (0.35, 1), "gB": (0.5, 2), "gC": (0.65, 3)}
GENUS = {"gA": "G1", "gB": "G1", "gC": "G2"}


class RandomEncoder:
    """z_mean unrelated to the input: a fixed random vector per distinct row (seeded by its content)."""

    input_dim, latent, source = N_FEATURES, 16, "random"

    def z_mean(self, x: np.ndarray) -> np.ndarray:
        return np.stack([np.random.default_rng(abs(hash(r.tobytes())) % (2**32)).normal(size=self.latent) for r in x]).astype(np.float32)


def identity_encoder() -> NumpyEncoder:
    return NumpyEncoder([], input_dim=N_FEATURES, latent=N_FEATURES, source="identity")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    ids, rows = [], []
    for name, (gc, seed) in GENOMES.items():
        genome = random_genome(60_000, seed=seed, gc=gc)
        for j, frag in enumerate(fragments(genome, 60, 1500, 12_000, seed=seed)):
            ids.append(f"{name}_contig.{j + 1}")  # chop-style piece names: labels are given per contig
            rows.append(profile(frag))
    m = np.stack(rows)
    np.save(d / "kmers.npy", m)
    (d / "kmers.txt").write_text("".join(i + "\n" for i in ids))
    lines = ["id\tgenome\tgenus\tphylum"] + [f"{g}_contig\t{g}\t{GENUS[g]}\tNA" for g in GENOMES]
    (d / "labels.tsv").write_text("\n".join(lines) + "\n")
    # A portable "encoder" file: a random linear map to 8 dimensions.
    w = np.random.default_rng(0).normal(size=(N_FEATURES, 8)).astype(np.float32)
    np.savez(d / "lin.npz", w=w, b=np.zeros(8, np.float32))
    spec = {"format": "kmer-vae-portable-encoder", "version": 1, "input_dim": N_FEATURES, "latent": 8,
            "layers": [{"kind": "dense", "name": "z_mean", "weights": "w", "bias": "b"}]}
    (d / "lin.json").write_text(json.dumps(spec))
    return d


def test_weighted_spearman_equals_scipy_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 300).astype(float)  # many ties
    y = x + rng.normal(0, 5, 300)
    w = rng.integers(0, 4, 300).astype(float)
    expanded_x, expanded_y = np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))
    assert ev.spearman_weighted(x, y, w) == pytest.approx(stats.spearmanr(expanded_x, expanded_y)[0], abs=1e-10)
    assert ev._weighted_pearson(x, y, w)[0] == pytest.approx(stats.pearsonr(expanded_x, expanded_y)[0], abs=1e-10)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_is_exact_and_excludes_self(metric, monkeypatch):
    from scipy.spatial.distance import cdist

    monkeypatch.setattr(ev, "_CHUNK_ELEMENTS", 500)  # force query and pool chunking
    monkeypatch.setattr(ev, "_POOL_CHUNK", 16)
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    nb = ev.self_knn(x, 7, metric)
    d = cdist(x.astype(np.float64), x.astype(np.float64), metric)
    np.fill_diagonal(d, np.inf)
    expected = np.argsort(d, axis=1, kind="stable")[:, :7]
    assert np.array_equal(np.sort(nb, axis=1), np.sort(expected, axis=1))
    assert not (nb == np.arange(300)[:, None]).any()


def _verify(data, encoder, **kw):
    m = np.load(data / "kmers.npy")
    source = ev.split_rows(m.shape[0], query_fraction=0.3, seed=1)
    opts = ev.VerifyOptions(k=20, n_queries=40, n_boot=100, **kw)
    return ev.verify_local_distances(str(data / "kmers.npy"), encoder, source, opts, log=lambda m: None)


def test_identity_space_is_the_clr_space(data):
    r = _verify(data, identity_encoder())
    vae, clr_ = r["spaces"]["VAE"], r["spaces"]["CLR"]
    assert vae["spearman"].value == pytest.approx(1.0, abs=1e-9) and clr_["spearman"].value == pytest.approx(1.0, abs=1e-9)
    assert vae["top_mse"] == pytest.approx(clr_["top_mse"])
    # The CLR neighbours are the nearest in CLR-MSE: no space can do better; random pairs are far worse.
    assert r["spaces"]["PCA"]["top_mse"][1] >= clr_["top_mse"][1] - 1e-9
    assert clr_["top_mse"][20] < 0.7 * r["random_mse"]
    assert r["pool_size"] == 180 and r["queries"] == 40 and r["clr_by_construction"]


def test_random_space_has_no_correlation(data):
    r = _verify(data, RandomEncoder())
    s = r["spaces"]["VAE"]["spearman"]
    assert abs(s.value) < 0.15 and s.low < 0.05
    # Its neighbours are as far as random pairs (within noise), unlike CLR's.
    assert r["spaces"]["VAE"]["top_mse"][20] > 0.8 * r["random_mse"]
    assert r["spaces"]["CLR"]["top_mse"][20] < 0.7 * r["random_mse"]


def test_pool_size_and_length_bins(data):
    r = _verify(data, identity_encoder(), pool_size=100, length_edges=(3000, 6000))
    assert r["pool_size"] == 100
    bins = r["spaces"]["VAE"]["bins"]
    assert [(b["min_length"], b["max_length"]) for b in bins] == [(0.0, 3000.0), (3000.0, 6000.0), (6000.0, None)]
    assert sum(b["queries"] for b in bins) == 40
    assert all(math.isfinite(b["pearson"].value) for b in bins if b["queries"] >= ev.MIN_BIN_QUERIES)


def test_verify_cli_text_and_json(data, tmp_path, capsys):
    code = call_cli(verify_local_distances, ["-i", data / "kmers.npy", "-e", data / "lin.json", "--queries", "30", "-k", "10",
                                             "--bootstrap", "50", "--json", tmp_path / "r.json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "pool size: 180 rows" in out and "by construction" in out and "random pairs" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r["spaces"]) == {"VAE", "PCA", "CLR"}
    assert r["spaces"]["PCA"]["dim"] == 8 and r["pca"]["fitted_on"] == "the training rows"
    assert len(r["spaces"]["VAE"]["spearman"]["ci95"]) == 2 and r["top_n"] == [1, 5, 10]


def test_queries_come_from_the_runs_validation_split(data, tmp_path):
    data_mod = pytest.importorskip("vae.data", reason="vae.data (the trainer's split) is not in this checkout")
    n = np.load(data / "kmers.npy").shape[0]
    split = data_mod.make_split(n, 0.2, seed=5)
    split.save(str(tmp_path / data_mod.SPLIT_FILE))
    src = ev.split_rows(n, run_dir=str(tmp_path))
    assert np.array_equal(src.val, split.val) and np.array_equal(src.train, split.train)
    with pytest.raises(InputError, match="split was made for a matrix of"):
        ev.split_rows(n + 1, run_dir=str(tmp_path))


def test_val_ids_and_errors(data, capsys):
    ids = (data / "kmers.txt").read_text().split()
    (data / "val.txt").write_text("\n".join(ids[:10]) + "\n")
    src = ev.split_rows(len(ids), val_ids=str(data / "val.txt"), ids=ids)
    assert list(src.val) == list(range(10))
    base = ["-i", data / "kmers.npy", "-e", data / "lin.json", "--quiet"]
    cases = [
        (base + ["--val-ids", data / "val.txt"], "--val-ids needs the matrix's IDs file"),
        (base + ["-k", "500"], "lower -k"),
        (base + ["--query-fraction", "1.5"], "between 0 and 1"),
        (["-i", data / "missing.npy", "-e", data / "lin.json"], "no such file"),
    ]
    for argv, message in cases:
        assert call_cli(verify_local_distances, argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        verify_local_distances([str(a) for a in base] + ["--length-bins", "a,b"])
    assert "comma-separated" in capsys.readouterr().err


def test_labels_read_with_piece_suffix_and_missing_values(data):
    ids = (data / "kmers.txt").read_text().split()
    lab = ev.read_labels(str(data / "labels.tsv"), ids)
    assert lab.ranks == ["genome", "genus", "phylum"] and lab.rows.shape[0] == len(ids) == lab.matched_by_prefix
    assert set(lab.values["genus"]) == {"G1", "G2"} and set(lab.values["phylum"]) == {None}
    with pytest.raises(InputError, match="no column 'species'"):
        ev.read_labels(str(data / "labels.tsv"), ids, ["species"])
    with pytest.raises(InputError, match="none of its IDs match"):
        ev.read_labels(str(data / "labels.tsv"), ["x", "y"])


def test_purity():
    assert ev.purity(np.array([0, 0, 1, 1]), np.array([5, 5, 7, 7])) == 1.0
    assert ev.purity(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 0])) == 0.5


def test_label_agreement_on_labelled_blobs(data):
    """Synthetic genomes of distinct composition: the identity (CLR) space separates them, a random one does not."""
    kw = dict(log=lambda m: None, pca_fit_rows=1000)
    good = ev.evaluate_labels(str(data / "kmers.npy"), str(data / "kmers.txt"), str(data / "labels.tsv"), identity_encoder(), **kw)
    g = good["ranks"]["genome"]["spaces"]
    assert g["VAE"]["knn@1"] > 0.9 and g["VAE"]["knn@10"] > 0.85 and g["VAE"]["ari"] > 0.8 and g["VAE"]["purity"] > 0.9
    assert g["VAE"] == pytest.approx(g["CLR"])
    assert good["ranks"]["phylum"]["spaces"] == {} and "skipped" in good["ranks"]["phylum"]["note"]
    bad = ev.evaluate_labels(str(data / "kmers.npy"), str(data / "kmers.txt"), str(data / "labels.tsv"), RandomEncoder(), **kw)
    b = bad["ranks"]["genome"]["spaces"]["VAE"]
    assert abs(b["knn@10"] - 1 / 3) < 0.1 and abs(b["ari"]) < 0.1


def test_evaluate_labels_cli(data, tmp_path, capsys):
    code = call_cli(evaluate_labels, ["-i", data / "kmers.npy", "-id", data / "kmers.txt", "-l", data / "labels.tsv",
                                      "-e", data / "lin.json", "--ranks", "genome,genus", "--json", tmp_path / "l.json",
                                      "--quiet", "--metric", "cosine"])
    out = capsys.readouterr().out
    assert code == 0 and "knn@1" in out and "purity" in out and "VAE" in out and "CLR" in out
    r = json.loads((tmp_path / "l.json").read_text())
    assert list(r["ranks"]) == ["genome", "genus"] and r["ranks"]["genus"]["labels"] == 2
    assert call_cli(evaluate_labels, ["-i", data / "kmers.npy", "-id", data / "kmers.txt", "-l", data / "missing.tsv",
                                      "-e", data / "lin.json"]) == 2
    assert "missing.tsv: no such file" in capsys.readouterr().err


def test_bootstrap_ci_equals_explicit_resampling():
    """The weighted shortcut gives the same CIs as expanding every bootstrap sample and asking scipy."""
    rng = np.random.default_rng(3)
    nq, k, n_boot = 12, 4, 30
    dist = rng.random((nq, k))
    mse = dist + rng.normal(0, 0.3, (nq, k))
    p, s = ev.correlations(dist, mse, n_boot, seed=9)
    counts = np.random.default_rng(9).multinomial(nq, np.full(nq, 1.0 / nq), size=n_boot)
    ps, ss = [], []
    for c in counts:
        idx = np.repeat(np.arange(nq), c)
        x, y = dist[idx].ravel(), mse[idx].ravel()
        ps.append(stats.pearsonr(x, y)[0])
        ss.append(stats.spearmanr(x, y)[0])
    assert [p.low, p.high] == pytest.approx(list(np.percentile(ps, [2.5, 97.5])), abs=1e-9)
    assert [s.low, s.high] == pytest.approx(list(np.percentile(ss, [2.5, 97.5])), abs=1e-9)
    assert p.value == pytest.approx(stats.pearsonr(dist.ravel(), mse.ravel())[0], abs=1e-12)
