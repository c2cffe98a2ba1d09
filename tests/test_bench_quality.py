"""The quality benchmark (bench/bench_quality.py): fragments, baselines and metrics are what they claim to be."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

from vae.kmers import FEATURE_SLICES, N_CANONICAL, N_COLUMNS, encode, profile

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "bench_quality.py")
bq = importlib.util.module_from_spec(_spec)
sys.modules["bench_quality"] = bq  # dataclasses look their module up there
_spec.loader.exec_module(bq)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One tiny end-to-end run (synthetic genomes), with a planted linear 'model' in the portable format."""
    work = str(tmp_path_factory.mktemp("qb"))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2772, 8)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    mdir = os.path.join(work, "planted")
    os.makedirs(mdir)
    np.savez(os.path.join(mdir, "encoder.npz"), w0=w, b0=b)
    with open(os.path.join(mdir, "encoder.json"), "w") as fh:
        json.dump({"format": "kmer-vae-portable-encoder", "version": 1, "input_dim": 2772, "latent": 8,
                   "layers": [{"kind": "dense", "weights": "w0", "bias": "b0"}]}, fh)
    out = bq.quick(work, log=lambda m: None, models=[os.path.join(mdir, "encoder.json")])
    return work, out, w, b


def test_fragments_fall_in_their_bins_on_both_strands(quick_run):
    work, _, _, _ = quick_run
    ev = bq.read_eval(work)
    bins = ((1000, 2000), (5000, 10000))
    assert ev.rows.shape[1] == N_COLUMNS
    for b, (lo, hi) in enumerate(bins):
        lengths = ev.length[ev.bin == b]
        assert lengths.size and lengths.min() >= lo and lengths.max() < hi
    # Column 0 is the fragment length; every group of a fragment sums to 1.
    np.testing.assert_array_equal(ev.rows[:, 0], ev.length)
    for sl in FEATURE_SLICES.values():
        np.testing.assert_allclose(ev.rows[:, 1:][:, sl].sum(axis=1), 1.0, atol=1e-4)
    held = ev.heldout
    assert set(ev.genome[held]) == {"G1", "G5"} and not set(ev.genome[~held]) & {"G1", "G5"}
    assert ((ev.bin[held] == 0).sum(), (ev.bin[held] == 1).sum()) == (24, 24)  # 12 per genome and bin
    plus, minus = (ev.strand == "+").sum(), (ev.strand == "-").sum()
    assert abs(int(plus) - int(minus)) <= 4 and minus > 0


def test_reverse_complement_codes():
    seq = "ACGTTGCANNACCGGT"
    rc = seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))
    np.testing.assert_array_equal(bq.reverse_complement(encode(seq)), encode(rc))
    codes = encode(seq * 50)
    rows = bq.count_pieces(codes, [(0, 400), (0, 400)], [1, -1])
    # A profile is strand-blind: both strands of the same piece give the same row, the one `profile` gives.
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_allclose(rows[0], profile((seq * 50)[:400]), atol=1e-7)


def test_log_uniform_lengths():
    rng = np.random.default_rng(1)
    x = bq.log_uniform(rng, 1000, 50000, 20000)
    assert x.min() >= 1000 and x.max() < 50000
    # Log-uniform: the median is the geometric mean of the ends, and each decade gets its share.
    assert abs(np.median(x) / math.sqrt(1000 * 50000) - 1) < 0.05
    assert abs((x < 10000).mean() - math.log(10) / math.log(50)) < 0.02
    assert (bq.log_uniform(rng, 5000, 5000, 3) == 5000).all()


def _reference_clr(rows: np.ndarray, ks, layout_order: bool = False) -> np.ndarray:
    """Per-group CLR written out from the definition (Jeffreys pseudocount 0.5/n_k), groups in increasing k
    (or in the matrix's column order: what a model reads)."""
    parts = []
    for k in sorted(ks, key=(lambda k: FEATURE_SLICES[k].start) if layout_order else None):
        sl = FEATURE_SLICES[k]
        g = np.log(rows[:, 1:][:, sl].astype(np.float64) + 0.5 / N_CANONICAL[k])
        parts.append(g - g.mean(axis=1, keepdims=True))
    return np.concatenate(parts, axis=1)


def test_clr_baselines_are_the_clr_of_their_groups(quick_run):
    work, _, _, _ = quick_run
    ev = bq.read_eval(work)
    spaces = bq.baseline_spaces(ev, None, (), log=lambda m: None)
    assert set(spaces) == {"CLR k<=6", "CLR k<=5", "CLR k<=4"}
    for name, ks in bq.CLR_BASELINES.items():
        assert spaces[name].shape[1] == sum(N_CANONICAL[k] for k in ks)
        np.testing.assert_allclose(spaces[name], _reference_clr(ev.rows, ks), atol=2e-5)


def test_pca_baseline_is_fitted_on_training_rows_only(quick_run):
    work, _, _, _ = quick_run
    ev = bq.read_eval(work)
    spaces = bq.baseline_spaces(ev, os.path.join(work, "train_1-50k.npy"), (5,), log=lambda m: None)
    from sklearn.decomposition import PCA

    train = np.load(os.path.join(work, "train_1-50k.npy"))
    ref = PCA(n_components=5).fit(_reference_clr(train, (1, 2, 3, 4)))
    got = spaces["PCA-5 of CLR k<=4"]
    want = ref.transform(_reference_clr(ev.rows, (1, 2, 3, 4)))
    # Components are defined up to sign.
    for j in range(5):
        s = np.sign(np.dot(got[:, j], want[:, j]))
        np.testing.assert_allclose(s * got[:, j], want[:, j], atol=2e-3)


def _planted(labels_genome, labels_genus, heldout, vectors, bins):
    n = len(labels_genome)
    codes = {}
    for rank, lab in (("genome", labels_genome), ("genus", labels_genus), ("family", labels_genus),
                      ("phylum", labels_genus)):
        codes[rank] = np.array(lab, dtype=np.int64)
    return bq.EvalSet(np.zeros((n, N_COLUMNS), np.float32), codes, np.array(heldout), np.array(bins),
                      np.full(n, 1000), np.array(["+"] * n), np.array([f"g{g}" for g in labels_genome])), \
        np.asarray(vectors, np.float32)


def test_knn_scores_on_a_planted_line():
    # Points on a line; held-out queries are rows 0-3 (genomes 0 and 1), pool rows 4-5 belong to genome 2.
    # Row 0 at 0.0: nearest others 0.1 (row 1, genome 0), then 0.25 (row 4, genome 2)...
    x = [[0.0], [0.1], [5.0], [5.1], [0.25], [5.3]]
    genome = [0, 0, 1, 1, 2, 3]
    genus = [0, 0, 1, 1, 0, -5]  # row 4: same genus as genome 0; row 5: NA (negative code) matches nothing
    ev, v = _planted(genome, genus, [True, True, True, True, False, False], x, [0, 0, 1, 1, 0, 1])
    s = bq.knn_scores(v, ev, bins=2, ks=(1, 2))
    # k=1: every query's nearest is its genome mate.
    assert s["genome@1"]["all"] == 1.0
    # k=2: row 0 -> (1, 4): 1/2; row 1 -> (0, 4): 1/2; row 2 -> (3, 5): 1/2; row 3 -> (2, 5): 1/2.
    assert s["genome@2"]["all"] == 0.5
    # genus: rows 0, 1 get row 4 (same genus): 1; rows 2, 3 get row 5 (NA): 1/2.
    assert s["genus@2"]["0"] == 1.0 and s["genus@2"]["1"] == 0.5 and s["genus@2"]["all"] == 0.75


def test_paired_differences_against_a_reference():
    # Three genomes, two bins: the model gains 0.2 on genome a's queries, 0 on b's, loses 0.1 on c's.
    groups = np.array(["a"] * 4 + ["b"] * 2 + ["c"] * 2)
    bins = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    base = np.linspace(0.1, 0.8, 8)
    model = base + np.select([groups == "a", groups == "c"], [0.2, -0.1], 0.0)
    d = bq.paired_differences(model, base, groups, bins, draws=500, seed=1)
    assert d["all"]["mean"] == pytest.approx((4 * 0.2 - 2 * 0.1) / 8)
    assert d["0"]["mean"] == pytest.approx((2 * 0.2 - 0.1) / 4)
    # Resampling whole genomes: the interval spans "only c" (-0.1) to "only a" (+0.2) at most, and is not a point.
    lo, hi = d["all"]["ci95"]
    assert -0.1 - 1e-9 <= lo < d["all"]["mean"] < hi <= 0.2 + 1e-9
    # A constant gain has a zero-width interval at that gain.
    same = bq.paired_differences(base + 0.05, base, groups, bins, draws=200)
    assert same["1"]["ci95"] == pytest.approx([0.05, 0.05]) and same["1"]["mean"] == pytest.approx(0.05)


def test_cluster_scores_planted_and_random():
    rng = np.random.default_rng(3)
    genome = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 5)) * 20
    x = centres[genome] + rng.normal(size=(120, 5))
    ev, v = _planted(genome, genome, [True] * 120, x, rng.integers(0, 2, 120))
    s = bq.cluster_scores(v, ev, bins=2, restarts=2)
    assert s["kmeans_ari"]["all"] == 1.0 and s["kmeans_nmi"]["all"] == pytest.approx(1.0)
    assert s["kmeans_ari"]["0"] == 1.0 and s["kmeans_ari"]["1"] == 1.0
    ev2, v2 = _planted(genome, genome, [True] * 120, rng.normal(size=(120, 5)), [0] * 120)
    assert abs(bq.cluster_scores(v2, ev2, bins=1, restarts=2)["kmeans_ari"]["all"]) < 0.1
    if bq.leiden_or_none() is None:
        assert s["leiden_ari"]["all"] is None
    else:
        assert s["leiden_ari"]["all"] > 0.9


def test_quick_run_scores_the_model_as_its_own_projection(quick_run):
    work, _, w, b = quick_run
    assert os.path.exists(os.path.join(work, "quick.md")) and os.path.exists(os.path.join(work, "quick.json"))
    with open(os.path.join(work, "quick.json")) as fh:
        saved = json.load(fh)
    names = set(saved["spaces"])
    assert {"planted", "CLR k<=6", "CLR k<=5", "CLR k<=4", "PCA-128 of CLR k<=6", "PCA-8 of CLR k<=4"} <= names
    # The planted encoder is embedded with the library (load_encoder + z_mean_of): its space is CLR @ w + b.
    ev = bq.read_eval(work)
    ref = bq.score_space((_reference_clr(ev.rows, range(1, 7), layout_order=True) @ w + b).astype(np.float32), ev, 2, restarts=2)
    for key in ("genome@10", "genus@10", "phylum@1"):
        assert saved["spaces"]["planted"][key] == pytest.approx(ref[key], abs=1e-9)
    for s in saved["spaces"].values():
        for b_ in ("all", "0", "1"):
            # A fragment's genome mates share its genus: genus agreement can only be higher.
            assert s["genus@10"][b_] >= s["genome@10"][b_] - 1e-12
            assert 0.0 <= s["genome@1"][b_] <= 1.0
    # Synthetic genera differ strongly in composition: the raw CLR finds the genus of long fragments.
    assert saved["spaces"]["CLR k<=6"]["genus@10"]["1"] > 0.9
    # The model is compared query by query with the best baseline of each paired measure.
    for measure in bq.PAIRED_MEASURES:
        p = saved["paired"][measure]
        assert p["baseline"] != "planted" and set(p["models"]) == {"planted"}
        gap = saved["spaces"]["planted"][measure]["all"] - saved["spaces"][p["baseline"]][measure]["all"]
        assert p["models"]["planted"]["all"]["mean"] == pytest.approx(gap, abs=1e-9)
    with open(os.path.join(work, "quick.md")) as fh:
        text = fh.read()
    assert "| space | genome@1 |" in text and "model minus the best baseline" in text


def test_bad_held_out_name_is_one_line_error(tmp_path, capsys):
    (tmp_path / "genomes.tsv").write_text("file\tgenus\tfamily\tclass\tphylum\nA.fna.gz\tx\ty\tz\tw\n")
    with pytest.raises(bq.InputError, match="held-out genomes not in .*: B$"):
        bq.prepare(bq.PrepareOptions(work=str(tmp_path / "w"), genomes=str(tmp_path),
                                     taxonomy=str(tmp_path / "genomes.tsv"), heldout=("B",)))
    assert bq.main(["--work", str(tmp_path / "w"), "eval", "no-such-model"]) == 2
    assert "error:" in capsys.readouterr().err


def test_train_passes_flags_after_double_dash_to_train_vae(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bq, "train", lambda *a, **k: calls.append((a, k)) or 0)
    assert bq.main(["--work", "/nonexistent", "train", "k15-l128", "--epochs", "3", "--", "--contrast", "1"]) == 0
    assert calls[-1][1]["extra"] == ["--contrast", "1"] and calls[-1][0][2] == 3
    assert bq.main(["--work", "/nonexistent", "train", "k15-l128"]) == 0 and calls[-1][1]["extra"] == []
    with pytest.raises(SystemExit):
        bq.main(["--work", "/nonexistent", "recipes", "--", "--contrast", "1"])
    assert "train command only" in capsys.readouterr().err
    cmd = bq.train_command("k15-l128", "/w", 3, extra=["--contrast", "1"])
    assert cmd[-2:] == ["--contrast", "1"] and cmd[cmd.index("--epochs") + 1] == "3"
