"""t-SNE, HDBSCAN, group comparison, plots and the exploration commands (tsne, cluster, compare_groups).

Synthetic embeddings of well-separated Gaussian blobs have a known answer:
the map must keep blobs together, HDBSCAN must find them, and compositions
must add up. Sizes are small so the whole file runs in well under a minute.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import adjusted_rand_score

from vae import cli, explore, plots
from vae.errors import InputError

N, D, K = 1500, 16, 5


def make_blobs(n=N, d=D, k=K, seed=0, spread=12.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d))
    y = rng.integers(0, k, n)
    z = centers[y] + rng.normal(0, 1, (n, d))
    lengths = rng.integers(1000, 100_000, n)
    return z.astype(np.float32), lengths, y


@pytest.fixture(scope="module")
def blobs():
    return make_blobs()


@pytest.fixture(scope="module")
def tsne_map(blobs):
    z, _, _ = blobs
    return explore.run_tsne(z, threads=1, n_iter=200, early_exaggeration_iter=100, seed=1, quiet=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, blobs):
    """emb.npy (length column + latent), ids.txt with W_/S_ prefixes, a plain latent matrix."""
    d = tmp_path_factory.mktemp("explore")
    z, lengths, y = blobs
    np.save(d / "emb.npy", np.column_stack([lengths, z]).astype(np.float32))
    np.save(d / "latent.npy", z)
    ids = [f"{'W' if i % 3 else 'S'}_{i}" for i in range(len(z))]
    (d / "ids.txt").write_text("".join(i + "\n" for i in ids))
    return d


def run_cli(fn, args, capsys):
    with pytest.raises(SystemExit) as e:
        fn([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_real_png(path, min_px=500):
    assert os.path.getsize(path) > 5000
    img = imread(path)
    h, w = img.shape[:2]
    assert w >= min_px and h >= 400, (w, h)
    rgb = img[..., :3]
    non_white = (rgb.min(axis=2) < 0.95).mean()
    assert non_white > 0.02, f"{path} is nearly blank ({non_white:.3%} non-white pixels)"
    assert rgb.std() > 0.05


def no_temp_files(folder):
    return not [f for f in os.listdir(folder) if ".tmp-" in f]


# --------------------------------------------------------------------------- t-SNE


def test_tsne_shape_and_blob_neighbourhoods(blobs, tsne_map):
    z, _, y = blobs
    assert tsne_map.shape == (len(z), 2) and tsne_map.dtype == np.float32
    assert np.isfinite(tsne_map).all()
    from vae.neighbors import exact_knn

    nb, _ = exact_knn(tsne_map, tsne_map, 11)
    same = (y[nb[:, 1:]] == y[:, None]).mean()
    assert same > 0.98, f"only {same:.3f} of map neighbours are in the same blob"
    # Local neighbourhoods are kept far better than chance (10/1500).
    pres = explore.knn_preservation(z, tsne_map, k=10, n_queries=500)
    assert pres > 0.1, pres


def test_tsne_is_deterministic_with_a_seed():
    z, _, _ = make_blobs(n=400, d=8, k=3, seed=3)
    a = explore.run_tsne(z, threads=1, n_iter=60, early_exaggeration_iter=40, seed=5, quiet=True)
    b = explore.run_tsne(z, threads=1, n_iter=60, early_exaggeration_iter=40, seed=5, quiet=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_tsne_settings_scale_with_n():
    assert explore.auto_exaggeration(50_000) == 1.0
    assert explore.auto_exaggeration(1_000_000) == pytest.approx(4.0)
    assert explore.auto_exaggeration(10_000_000) == 4.0
    assert 1.0 < explore.auto_exaggeration(300_000) < 4.0
    s = explore.tsne_settings(20, perplexity=30)
    assert s["k_neighbors"] <= 19 and s["perplexity"] <= 19 / 3
    assert explore.tsne_settings(5000, affinity="uniform", k_neighbors=15)["k_neighbors"] == 15
    assert explore.tsne_settings(5000)["neighbors"] == "annoy"
    with pytest.raises(InputError):
        explore.tsne_settings(3)


# --------------------------------------------------------------------------- clustering


def test_hdbscan_recovers_blobs_on_map_and_latent(blobs, tsne_map):
    z, _, y = blobs
    on_map = explore.cluster_points(tsne_map, threads=2)
    assert adjusted_rand_score(y, on_map) > 0.9
    on_latent = explore.cluster_points(z, threads=2)
    assert adjusted_rand_score(y, on_latent) > 0.9
    sizes = np.bincount(on_map[on_map >= 0])
    assert (np.diff(sizes) <= 0).all(), "clusters are numbered by decreasing size"


def test_default_cluster_sizes_match_the_original_at_4_8m():
    assert explore.default_min_cluster_size(4_800_000) == 1000
    assert explore.default_min_samples(1000) == 100
    assert explore.default_min_cluster_size(1000) == 15
    assert explore.default_min_samples(15) == 5
    assert explore.default_min_cluster_size(480_000) == 100


def test_relabel_and_summary():
    labels = np.array([7, 7, 7, 2, -1, 2, 9, 7, -1, 9, 9, 9, 9])
    out = explore.relabel_by_size(labels)
    assert out.tolist() == [1, 1, 1, 2, -1, 2, 0, 1, -1, 0, 0, 0, 0]
    s = explore.cluster_summary(out)
    assert s["n_clusters"] == 3 and s["n_noise"] == 2
    assert s["noise_fraction"] == pytest.approx(2 / 13)
    assert s["sizes"] == [5, 4, 2] and s["size_max"] == 5 and s["size_min"] == 2
    assert explore.cluster_summary(np.full(4, -1))["n_clusters"] == 0


# --------------------------------------------------------------------------- groups and composition


def test_assign_groups_prefix_regex_and_table(tmp_path):
    ids = ["W_1", "W_2", "S_1", "X_9", "S_22"]
    idx, names = explore.assign_groups(ids, prefixes=[("water", "W_")], regexes=[("sed", r"^S_\d+$")])
    assert names == ["water", "sed"] and idx.tolist() == [0, 0, 1, -1, 1]
    with pytest.raises(InputError, match="matches none"):
        explore.assign_groups(ids, prefixes=[("water", "W_"), ("soil", "Q_")])
    with pytest.raises(InputError, match="both group"):
        explore.assign_groups(ids, prefixes=[("a", "S_"), ("b", "S_2")])
    tsv = tmp_path / "g.tsv"
    tsv.write_text("id\tgroup\nW_1\tA\nS_1\tB\nS_22\tB\nZZ\tA\n")
    idx, names = explore.assign_groups(ids, table=explore.read_group_table(str(tsv)))
    assert names == ["A", "B"] and idx.tolist() == [0, -1, 1, -1, 1]
    tsv.write_text("W_1\tA\nW_1\tB\n")
    with pytest.raises(InputError, match="two groups"):
        explore.read_group_table(str(tsv))
    with pytest.raises(InputError, match="NAME=PREFIX"):
        explore.parse_named(["water"], "prefix")
    with pytest.raises(InputError, match="invalid regular expression"):
        explore.parse_named(["a=("], "regex")


def test_composition_fractions_sum_to_one_and_count_right():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 6, 3000)
    groups = rng.integers(-1, 3, 3000)
    comp = explore.composition_table(labels, groups, ["a", "b", "c"])
    np.testing.assert_allclose(comp.fractions.sum(axis=1), 1.0)
    np.testing.assert_allclose(comp.balanced.sum(axis=1), 1.0)
    assert comp.clusters.tolist() == [0, 1, 2, 3, 4, 5, -1]  # noise last
    for r, c in enumerate(comp.clusters):
        for g in range(3):
            assert comp.counts[r, g] == ((labels == c) & (groups == g)).sum()
    # Balanced fractions undo unequal group sizes: a group twice as large in every cluster becomes 1/2 each.
    lab = np.repeat([0, 1], 30)
    grp = np.tile(np.array([0, 0, 1]), 20)
    comp = explore.composition_table(lab, grp, ["big", "small"])
    np.testing.assert_allclose(comp.fractions[:, 0], 2 / 3)
    np.testing.assert_allclose(comp.balanced, 0.5)


def test_density_differences(blobs, tsne_map):
    _, _, y = blobs
    groups = (y >= 2).astype(np.int32)  # two groups living in different blobs
    dens, extent = explore.group_densities(tsne_map, groups, 2, bins=50)
    np.testing.assert_allclose(dens.sum(axis=(1, 2)), 1.0)
    (a, b, diff), = explore.density_differences(dens, ["lo", "hi"])
    assert (a, b) == ("lo", "hi") and abs(diff.sum()) < 1e-9
    assert diff.max() > 0 and diff.min() < 0
    three = explore.density_differences(np.stack([dens[0], dens[1], dens[0]]), ["x", "y", "z"])
    assert [t[:2] for t in three] == [("x", "rest"), ("y", "rest"), ("z", "rest")]
    same, = explore.density_differences(np.stack([dens[0], dens[0]]), ["p", "q"])
    assert np.abs(same[2]).max() == 0


# --------------------------------------------------------------------------- plots


def test_plots_are_real_figures(tmp_path, blobs, tsne_map):
    z, lengths, y = blobs
    out = tmp_path
    assert plots.plot_map(tsne_map, str(out / "map.png"), values=np.log10(lengths)) == [str(out / "map.png")]
    plots.plot_map(tsne_map, str(out / "hex.png"), hexbin=True)
    written = plots.plot_clusters(tsne_map, np.where(y == 0, -1, y), str(out / "clusters.png"), pdf=True)
    assert written == [str(out / "clusters.png"), str(out / "clusters.pdf")]
    assert open(out / "clusters.pdf", "rb").read(5) == b"%PDF-"
    many = (np.arange(len(y)) % 40).astype(np.int32)  # more clusters than a legend holds
    plots.plot_clusters(tsne_map, many, str(out / "many.png"))
    groups = (y % 2).astype(np.int32)
    dens, extent = explore.group_densities(tsne_map, groups, 2)
    plots.plot_density_difference(explore.density_differences(dens, ["even", "odd"]), extent, str(out / "dd.png"), n_points=len(y))
    plots.plot_overlay(tsne_map, groups, ["even", "odd"], str(out / "overlay.png"))
    comp = explore.composition_table(y, groups, ["even", "odd"])
    plots.plot_composition(comp, str(out / "comp.png"))
    for name in ["map", "hex", "clusters", "many", "dd", "overlay", "comp"]:
        assert_real_png(out / f"{name}.png")
    assert no_temp_files(out)


def test_plot_rejects_bad_coords(tmp_path):
    with pytest.raises(InputError):
        plots.plot_map(np.zeros((10, 3)), str(tmp_path / "x.png"))
    with pytest.raises(InputError, match="does not exist"):
        plots.plot_map(np.zeros((10, 2)), str(tmp_path / "nodir" / "x.png"))


# --------------------------------------------------------------------------- commands


def test_tsne_cluster_compare_commands(files, capsys):
    d = files
    # Subsampled: exercises --max-points and keeps the run short.
    code, _, err = run_cli(cli.tsne, ["-e", d / "emb.npy", "-id", d / "ids.txt", "-o", d / "map.npy", "--max-points", 600,
                                      "--n-iter", 150, "--early-iter", 100, "--threads", 1, "--quiet"], capsys)
    assert code == 0, err
    coords = np.load(d / "map.npy")
    sub_ids = (d / "map.txt").read_text().splitlines()
    assert coords.shape == (600, 2) and len(sub_ids) == 600
    all_ids = (d / "ids.txt").read_text().splitlines()
    assert set(sub_ids) <= set(all_ids) and sub_ids == [i for i in all_ids if i in set(sub_ids)]  # input order kept
    info = json.loads((d / "map.json").read_text())
    assert info["subsampled_rows"] == 600 and info["settings"]["perplexity"] == 30
    assert_real_png(d / "map.png")

    code, _, err = run_cli(cli.cluster, ["-c", d / "map.npy", "-id", d / "map.txt", "-o", d / "clusters.tsv"], capsys)
    assert code == 0, err
    assert "clusters over 600 points" in err
    lines = [ln.split("\t") for ln in (d / "clusters.tsv").read_text().splitlines()]
    assert [ln[0] for ln in lines] == sub_ids and all(int(ln[1]) >= -1 for ln in lines)
    summary = json.loads((d / "clusters.json").read_text())
    assert summary["n_points"] == 600 and 3 <= summary["n_clusters"] <= 8
    assert_real_png(d / "clusters.png")

    code, _, err = run_cli(cli.cluster, ["--space", "latent", "-e", d / "emb.npy", "-id", d / "ids.txt",
                                         "-o", d / "latent_clusters.tsv", "--min-cluster-size", 30], capsys)
    assert code == 0, err
    assert not (d / "latent_clusters.png").exists()  # no map given: no figure
    assert json.loads((d / "latent_clusters.json").read_text())["n_clusters"] == K

    code, _, err = run_cli(cli.compare_groups, ["-c", d / "map.npy", "-id", d / "map.txt", "--prefix", "water=W_",
                                                "--regex", "sediment=^S_", "--clusters", d / "clusters.tsv",
                                                "-o", d / "cmp", "--pdf"], capsys)
    assert code == 0, err
    for f in ["cmp.density.png", "cmp.overlay.png", "cmp.composition.png"]:
        assert_real_png(d / f)
        assert (d / f.replace(".png", ".pdf")).exists()
    rows = (d / "cmp.composition.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:4] == ["cluster", "n", "count_water", "count_sediment"]
    for row in rows[1:]:
        v = row.split(",")
        assert float(v[4]) + float(v[5]) == pytest.approx(1.0, abs=1e-5)
    assert no_temp_files(d)


def test_groups_tsv_with_three_groups(files, tmp_path, capsys, tsne_map):
    ids = (files / "ids.txt").read_text().splitlines()
    np.save(tmp_path / "map.npy", tsne_map)
    (tmp_path / "groups.tsv").write_text("".join(f"{i}\t{'abc'[n % 3]}\n" for n, i in enumerate(ids)))
    code, _, err = run_cli(cli.compare_groups, ["-c", tmp_path / "map.npy", "-id", files / "ids.txt",
                                                "--groups-tsv", tmp_path / "groups.tsv", "-o", tmp_path], capsys)
    assert code == 0, err
    assert_real_png(tmp_path / "compare.density.png")
    assert not (tmp_path / "compare.composition.csv").exists()


@pytest.mark.parametrize("case", ["missing", "mismatch", "wrong_shape", "not_lengths", "no_group_match", "one_group", "bad_space"])
def test_command_errors_are_one_clear_line(files, tmp_path, capsys, case):
    d = files
    bad_ids = tmp_path / "short.txt"
    bad_ids.write_text("a\nb\n")
    out = tmp_path / "out.npy"
    fn, args, expect = {
        "missing": (cli.tsne, ["-e", tmp_path / "nope.npy", "-o", out], "no such file"),
        "mismatch": (cli.tsne, ["-e", d / "emb.npy", "-id", bad_ids, "-o", out], "rows but"),
        "wrong_shape": (cli.cluster, ["--space", "tsne", "-c", d / "emb.npy", "-id", d / "ids.txt", "-o", tmp_path / "c.tsv"], "(N, 2)"),
        "not_lengths": (cli.tsne, ["-e", d / "latent.npy", "-o", out], "--no-length-column"),
        "no_group_match": (cli.compare_groups, ["-c", tmp_path / "m.npy", "-id", d / "ids.txt", "--prefix", "water=W_",
                                                "--prefix", "soil=Q_", "-o", tmp_path / "c"], "'soil' (prefix 'Q_') matches none"),
        "one_group": (cli.compare_groups, ["-c", d / "map.npy", "-id", d / "map.txt", "--prefix", "w=W_", "-o", tmp_path / "c"],
                      "at least two groups"),
        "bad_space": (cli.cluster, ["--space", "latent", "-c", d / "map.npy", "-id", d / "map.txt", "-o", tmp_path / "c.tsv"],
                      "needs the embeddings"),
    }[case]
    np.save(tmp_path / "m.npy", np.zeros((N, 2), np.float32))
    if case in ("one_group", "bad_space") and not (d / "map.npy").exists():
        pytest.skip("needs the map of test_tsne_cluster_compare_commands")
    code, _, err = run_cli(fn, args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and expect in lines[0], err
    assert sorted(os.listdir(tmp_path)) == ["m.npy", "short.txt"]  # no output, not even a temporary one


def test_plain_latent_matrix_with_flag(files, tmp_path, capsys):
    code, _, err = run_cli(cli.tsne, ["-e", files / "latent.npy", "--no-length-column", "-o", tmp_path / "m.npy",
                                      "--max-points", 0, "--n-iter", 30, "--early-iter", 20, "--threads", 1, "--quiet",
                                      "--no-plot"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "m.npy").shape == (N, 2)
    assert not (tmp_path / "m.png").exists()
