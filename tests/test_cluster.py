"""kNN graph + Leiden, label scores and bins (vae/cluster.py and the ``cluster`` command).

Real fragments of four genomes from four phyla (../shared/data) have a known
answer: their k-mer composition (CLR, then PCA) separates them, so Leiden must
recover the genomes. Graph weights are checked against a brute-force
reference, bins against the input FASTA byte for byte. Everything is small
(a few hundred points): the file runs in seconds.
"""
from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from vae import cli
from vae import cluster as cl
from vae.errors import InputError

GENOMES = ["Mycoplasma_genitalium_G37", "Chlamydia_trachomatis_B_TZ1A828_OT", "Pyrococcus_horikoshii_OT3",
           "Olsenella_uli_DSM7084"]
PER_GENOME = 60
FRAG = 5000


def _read_genome(path) -> str:
    with gzip.open(path, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


@pytest.fixture(scope="module")
def fragments(genomes_dir):
    """(ids, sequences, genome label) of PER_GENOME random FRAG-bp fragments of each genome."""
    rng = np.random.default_rng(0)
    ids, seqs, labels = [], [], []
    for g, name in enumerate(GENOMES):
        genome = _read_genome(genomes_dir / f"{name}.fna.gz")
        for j, start in enumerate(rng.integers(0, len(genome) - FRAG, PER_GENOME).tolist()):
            ids.append(f"g{g}_frag{j}")
            seqs.append(genome[start : start + FRAG])
            labels.append(name)
    return ids, seqs, np.array(labels)


@pytest.fixture(scope="module")
def vectors(fragments):
    """CLR of the k-mer profiles, reduced to 20 PCA dimensions (a stand-in for latent vectors)."""
    from sklearn.decomposition import PCA

    from vae.kmers import profile
    from vae.transform import clr, features

    _, seqs, _ = fragments
    x = clr(features(np.stack([profile(s) for s in seqs])))
    return PCA(n_components=20, random_state=0).fit_transform(x).astype(np.float32)


def test_leiden_recovers_real_genomes(vectors, fragments):
    _, _, truth = fragments
    labels = cl.leiden_clusters(vectors, k=15, resolutions=(0.5,), seed=1)
    assert labels.shape == (1, len(truth)) and labels.dtype.kind == "i"
    assert adjusted_rand_score(truth, labels[0]) > 0.9
    by_distance = cl.leiden_clusters(vectors, k=15, resolutions=(0.5,), weight="distance", seed=1)
    assert adjusted_rand_score(truth, by_distance[0]) > 0.9
    # Mutual edges are a sparser, more conservative graph: pure clusters, split into more pieces.
    mutual = cl.leiden_clusters(vectors, k=15, resolutions=(0.5,), mutual=True, seed=1)
    assert cl.score_clusters(truth, mutual[0])["purity"] > 0.95
    assert mutual.max() >= labels.max()
    again = cl.leiden_clusters(vectors, k=15, resolutions=(0.5,), seed=1)
    assert (again == labels).all(), "seeded: the same input gives the same clusters"
    sizes = np.bincount(labels[0])
    assert (np.diff(sizes) <= 0).all(), "clusters are numbered by decreasing size"


def test_higher_resolution_gives_more_clusters_on_the_same_graph(vectors):
    nb, dist = cl.knn_lists(vectors, 15)
    edges, w = cl.knn_graph(nb, dist)
    low, high = cl.leiden_partitions(len(vectors), edges, w, [0.2, 2.0], seed=3)
    assert len(np.unique(high)) > len(np.unique(low))
    both = cl.leiden_clusters(vectors, resolutions=(0.2, 2.0), seed=3)
    assert (both == np.stack([low, high])).all(), "the library function is the same pipeline"


def test_knn_lists_and_graph_weights_match_a_brute_force_reference():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    k = 5
    nb, dist = cl.knn_lists(x, k)
    approx, _ = cl.knn_lists(x, k, method="hnsw")  # the HNSW path (the default from 50,000 points)
    assert np.mean([len(set(a) & set(b)) / k for a, b in zip(approx.tolist(), nb.tolist())]) > 0.9
    assert (approx != np.arange(len(x))[:, None]).all(), "a point is never its own neighbour"
    d_all = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d_all, np.inf)
    ref = np.argsort(d_all, axis=1, kind="stable")[:, :k]
    assert (nb == ref).all()
    assert np.allclose(dist, np.take_along_axis(d_all, ref, axis=1), atol=1e-5)

    sets = [set(ref[i].tolist()) | {i} for i in range(len(x))]
    for mutual in (False, True):
        pairs = {(min(i, j), max(i, j)) for i in range(len(x)) for j in ref[i].tolist()
                 if not mutual or i in ref[j].tolist()}
        edges, w = cl.knn_graph(nb, dist, "snn", mutual)
        got = {tuple(e): v for e, v in zip(edges.tolist(), w.tolist())}
        assert set(got) == pairs
        for (i, j), v in got.items():
            assert v == pytest.approx(len(sets[i] & sets[j]) / len(sets[i] | sets[j]))
    edges, w = cl.knn_graph(nb, dist, "distance")
    sigma = dist[:, -1].astype(np.float64)
    i, j = edges[:, 0], edges[:, 1]
    assert np.allclose(w, np.exp(-d_all[i, j] ** 2 / (sigma[i] * sigma[j])), rtol=1e-4)


def test_scores_by_hand():
    truth = ["a", "a", "a", "b", "b", "c"]
    s = cl.score_clusters(truth, np.array([0, 0, 1, 1, 1, -1]))
    # purity: cluster 0 -> a (2), cluster 1 -> b (2 of 3), the noise point alone (1) = 5/6.
    assert s["purity"] == pytest.approx(5 / 6)
    # completeness: a's majority cluster holds 2 of 3, b's 2 of 2, c's 1 of 1 = 5/6.
    assert s["completeness"] == pytest.approx(5 / 6)
    assert s["ari"] == pytest.approx(adjusted_rand_score(truth, [0, 0, 1, 1, 1, 2]))
    perfect = cl.score_clusters(truth, np.array([5, 5, 5, 2, 2, 9]))
    assert perfect == {"ari": 1.0, "nmi": pytest.approx(1.0), "purity": 1.0, "completeness": 1.0}
    all_noise = cl.score_clusters(truth, np.full(6, -1))
    assert all_noise["purity"] == 1.0 and all_noise["completeness"] == pytest.approx(3 / 6)


def test_bad_library_arguments():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(InputError, match="resolution must be > 0"):
        cl.leiden_clusters(x, k=3, resolutions=(1.0, 0.0))
    with pytest.raises(InputError, match="lower -k"):
        cl.leiden_clusters(x, k=10)
    with pytest.raises(InputError, match="weight"):
        cl.leiden_clusters(x, k=3, weight="cosine")


# --------------------------------------------------------------------------- the command


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        cli.cluster([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _fasta_records(path) -> dict[str, bytes]:
    """ID -> the record's exact bytes."""
    with (gzip.open(path) if str(path).endswith(".gz") else open(path, "rb")) as fh:
        data = fh.read()
    recs = {}
    for chunk in data.split(b"\n>"):
        chunk = chunk if chunk.startswith(b">") else b">" + chunk
        rec = chunk if chunk.endswith(b"\n") else chunk + b"\n"
        ident = rec[1:].split(None, 1)[0].decode()
        assert ident not in recs, f"{ident} twice in {path}"
        recs[ident] = rec
    return recs


@pytest.fixture(scope="module")
def files(tmp_path_factory, fragments, vectors):
    """emb.npy (length column + vectors), ids.txt, labels.tsv (genome, phylum-ish), a map, and the contigs as
    two FASTA files (one gzipped, wrapped at 70 with CRLF in one record, lowercase in another)."""
    d = tmp_path_factory.mktemp("cluster")
    ids, seqs, truth = fragments
    np.save(d / "emb.npy", np.column_stack([np.full(len(ids), FRAG), vectors]).astype(np.float32))
    np.save(d / "map.npy", vectors[:, :2].copy())
    (d / "ids.txt").write_text("".join(i + "\n" for i in ids))
    (d / "labels.tsv").write_text("id\tgenome\tgroup\n" + "".join(
        f"{i}\t{g}\t{'x' if g in GENOMES[:2] else 'y'}\n" for i, g in zip(ids, truth)))

    def record(n: int) -> bytes:
        seq = seqs[n].lower() if n == 7 else seqs[n]
        nl = "\r\n" if n == 3 else "\n"
        lines = [seq[a : a + 70] for a in range(0, len(seq), 70)]
        return (f">{ids[n]} fragment {n}{nl}" + nl.join(lines) + nl).encode()

    half = len(ids) // 2
    (d / "a.fa").write_bytes(b"".join(record(n) for n in range(half)))
    with gzip.open(d / "b.fa.gz", "wb") as fh:
        fh.write(b"".join(record(n) for n in range(half, len(ids))))
    return d


def test_leiden_command_with_scores_bins_and_map(files, tmp_path, capsys, fragments):
    d = files
    out = tmp_path / "leiden.tsv"
    code, _, err = run_cli(["--method", "leiden", "-c", d / "emb.npy", "-id", d / "ids.txt", "--map", d / "map.npy",
                            "--resolution", "0.2", "0.5,2", "--labels", d / "labels.tsv", "--fasta", d / "a.fa", d / "b.fa.gz",
                            "--bins-dir", tmp_path / "bins", "--bins-resolution", 2, "--min-bin-size", 200_000, "-o", out, "--quiet"],
                           capsys)
    assert code == 0, err
    ids, _, truth = fragments
    lines = out.read_text().splitlines()
    assert lines[0] == "id\tleiden_r0.2\tleiden_r0.5\tleiden_r2"
    rows = [ln.split("\t") for ln in lines[1:]]
    assert [r[0] for r in rows] == ids
    labels = np.array([[int(v) for v in r[1:]] for r in rows]).T
    assert adjusted_rand_score(truth, labels[1]) > 0.9
    assert len(np.unique(labels[2])) > len(np.unique(labels[0]))

    summary = json.loads((tmp_path / "leiden.json").read_text())
    assert summary["method"] == "leiden" and summary["k"] == 15 and summary["space"] == "latent"
    assert [r["resolution"] for r in summary["resolutions"]] == [0.2, 0.5, 2.0]
    genome = summary["scores"]["genome"]
    assert genome["labelled"] == len(ids) and genome["labels"] == 4
    aris = [s["ari"] for s in genome["by_resolution"]]
    assert aris[1] == pytest.approx(adjusted_rand_score(truth, labels[1]), abs=1e-6)
    assert genome["best_resolution"] == [0.2, 0.5, 2.0][int(np.argmax(aris))]
    assert set(summary["scores"]) == {"genome", "group"}
    assert (tmp_path / "leiden.png").read_bytes()[:4] == b"\x89PNG"

    # Bins: clusters at resolution 2 of >= 200 kb (40 fragments of 5 kb), records byte-identical.
    inputs = {**_fasta_records(d / "a.fa"), **_fasta_records(d / "b.fa.gz")}
    table = [ln.split("\t") for ln in (tmp_path / "bins" / "contig_bins.tsv").read_text().splitlines()]
    first = dict(zip(ids, labels[2].tolist()))
    sizes = np.bincount(labels[2]) * FRAG
    assert (sizes >= 200_000).any() and (sizes < 200_000).any(), "the test needs bins both kept and dropped"
    assert sorted(c for c, _ in table) == sorted(i for i in ids if sizes[first[i]] >= 200_000)
    seen: dict[str, str] = {}
    for f in sorted(os.listdir(tmp_path / "bins")):
        if f == "contig_bins.tsv":
            continue
        assert f.endswith(".fna")
        recs = _fasta_records(tmp_path / "bins" / f)
        clusters = {first[i] for i in recs}
        assert len(clusters) == 1 and f == f"bin_{clusters.pop()}.fna"
        for i, rec in recs.items():
            assert i not in seen, f"{i} in two bins"
            seen[i] = f[:-4]
            assert rec == inputs[i], f"{i} is not byte-identical"
    assert seen == dict(table)
    assert summary["bins"]["n_contigs"] == len(table) and summary["bins"]["resolution"] == 2.0
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")], "no temporary left behind"


def test_gzipped_bins_and_hdbscan_path(files, tmp_path, capsys, fragments):
    d = files
    code, _, err = run_cli(["-c", d / "emb.npy", "-id", d / "ids.txt", "--min-cluster-size", 20, "--labels", d / "labels.tsv",
                            "--fasta", d / "a.fa", d / "b.fa.gz", "--bins-dir", tmp_path / "bins", "--bins-gzip",
                            "--min-bin-size", 0, "-o", tmp_path / "h.tsv"], capsys)
    assert code == 0, err
    assert "ARI" in err  # the score table is printed
    ids = fragments[0]
    rows = [ln.split("\t") for ln in (tmp_path / "h.tsv").read_text().splitlines()]
    labels = np.array([int(r[1]) for r in rows])
    summary = json.loads((tmp_path / "h.json").read_text())
    assert summary["method"] == "hdbscan" and summary["space"] == "latent"
    assert "best_resolution" not in summary["scores"]["genome"]
    assert not (tmp_path / "h.png").exists()  # no map: no figure
    inputs = {**_fasta_records(d / "a.fa"), **_fasta_records(d / "b.fa.gz")}
    binned = {}
    for f in os.listdir(tmp_path / "bins"):
        if f.endswith(".fna.gz"):
            for i, rec in _fasta_records(tmp_path / "bins" / f).items():
                assert i not in binned and rec == inputs[i]
                binned[i] = f
    assert sorted(binned) == sorted(i for i, c in zip(ids, labels) if c >= 0), "noise goes nowhere, every clustered contig once"


@pytest.mark.parametrize("case", ["unknown_label_id", "fasta_missing", "resolution_zero", "k_too_big", "duplicate_record"])
def test_bad_input_is_one_clear_line(files, tmp_path, capsys, case):
    d = files
    base = ["--method", "leiden", "-c", d / "emb.npy", "-id", d / "ids.txt", "-o", tmp_path / "c.tsv", "--quiet"]
    bins = ["--bins-dir", tmp_path / "bins", "--min-bin-size", 0]
    (tmp_path / "labels.tsv").write_text((d / "labels.tsv").read_text() + "stranger\tX\tx\n")
    (tmp_path / "dup.fa").write_bytes((d / "a.fa").read_bytes() * 2)
    extra, expect = {
        "unknown_label_id": (["--labels", tmp_path / "labels.tsv"], "unknown ID 'stranger'"),
        "fasta_missing": (["--fasta", d / "a.fa", *bins], "clustered contigs are not in the FASTA input"),
        "resolution_zero": (["--resolution", "1", "0"], "resolution must be > 0"),
        "k_too_big": (["-k", 240], "lower -k"),
        "duplicate_record": (["--fasta", tmp_path / "dup.fa", d / "b.fa.gz", *bins], "occurs twice"),
    }[case]
    before = sorted(os.listdir(tmp_path))
    code, _, err = run_cli(base + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and expect in lines[0], err
    assert sorted(os.listdir(tmp_path)) == before, "no output, not even a temporary one"


def test_the_parser_is_built_from_cluster_options():
    """Resolutions as separate or comma-joined tokens give one flat list; to_argv gives options back unchanged."""
    from vae.options import from_namespace, to_argv

    p = cli.cluster_parser()
    opts = from_namespace(cl.ClusterOptions, p.parse_args(["-c", "e.npy", "-id", "i.txt", "-o", "o.tsv", "--method", "leiden",
                                                            "--resolution", "0.5", "1,2", "--no-length-column"]))
    assert opts.resolutions == [0.5, 1.0, 2.0] and opts.length_column is False and opts.input == "e.npy"
    assert from_namespace(cl.ClusterOptions, p.parse_args(to_argv(opts))) == opts
    default = from_namespace(cl.ClusterOptions, p.parse_args(["-id", "i.txt", "-o", "o.tsv"]))
    assert default == cl.ClusterOptions(ids="i.txt", output="o.tsv")
    with pytest.raises(InputError, match="--ef must be >= 0, got -1"):
        from_namespace(cl.ClusterOptions, p.parse_args(["-id", "i", "-o", "o", "--ef", "-1"]))
