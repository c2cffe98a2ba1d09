"""Neighbour search: exact search against a brute-force reference, HNSW recall, save/load round trips, the command."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vae import cli
from vae.errors import InputError
from vae.neighbors import NeighborIndex, embed_fasta_file, exact_knn, knn_blocks


def reference_knn(data, queries, k, metric):
    """Full distance matrix and a full sort: the obvious, slow answer."""
    data, queries = data.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1.0 - queries @ data.T
    else:
        d = np.sqrt(((queries[:, None, :] - data[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 24)).astype(np.float32)
    ids = [f"c{i}" for i in range(len(x))]
    return x, ids


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_knn_matches_brute_force(data, metric):
    x, _ = data
    q = x[:50] + 0.01
    idx, dist = exact_knn(x, q, 10, metric, chunk_elements=5000)  # small chunks: exercise the chunking
    ref_idx, ref_dist = reference_knn(x, q, 10, metric)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_exact_ties_are_broken_by_row():
    x = np.zeros((6, 3), np.float32)
    idx, dist = exact_knn(x, x[:1], 4)
    assert idx.tolist() == [[0, 1, 2, 3]] and (dist == 0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_streamed_blocks_with_exclusion_match_brute_force(data, metric, dtype):
    """The base streamed in uneven blocks, each query excluding itself: the same rows as a full sort without it."""
    x, _ = data
    x = x[:600]
    blocks = [(a, x[a : a + 97]) for a in range(0, len(x), 97)]
    q = np.arange(0, 600, 7)
    idx, dist = knn_blocks(x[q], blocks, 8, metric, exclude=q, dtype=dtype, chunk_elements=3000)
    ref_idx, ref_dist = reference_knn(x, x[q], 9, metric)
    assert not (idx == q[:, None]).any()
    np.testing.assert_array_equal(idx, ref_idx[:, 1:])
    np.testing.assert_allclose(dist, ref_dist[:, 1:], rtol=1e-3, atol=1e-3)


def test_streamed_ties_go_to_the_lower_row_and_missing_slots_are_marked():
    x = np.ones((7, 2), np.float32)
    idx, dist = knn_blocks(x[:1], [(4, x[4:]), (0, x[:4])], 5, exclude=np.array([0]))  # later rows streamed first
    assert idx.tolist() == [[1, 2, 3, 4, 5]] and (dist == 0).all()
    idx, dist = knn_blocks(x[:1], [(0, x[:3])], 4, exclude=np.array([0]))
    assert idx.tolist() == [[1, 2, -1, -1]] and np.isinf(dist[0, 2:]).all()


def test_query_rows_excludes_the_point_itself(data):
    x, ids = data
    index = NeighborIndex.build(x, ids, method="exact")
    nb, d = index.query_rows(np.array([5, 17]), k=5)
    assert nb.shape == (2, 5) and 5 not in nb[0] and 17 not in nb[1]
    ref, _ = reference_knn(x, x[[5, 17]], 6, "euclidean")
    np.testing.assert_array_equal(nb, ref[:, 1:])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_hnsw_recall_against_exact(data, metric):
    x, ids = data
    index = NeighborIndex.build(x, ids, method="hnsw", metric=metric, threads=1, seed=1)
    q = x[::20]
    got, d = index.query(q, 10)
    ref, ref_d = reference_knn(x, q, 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), ref.tolist())])
    assert recall > 0.95, recall
    # Distances are true distances (not squared), comparable with the exact ones.
    hit = got[:, 0] == ref[:, 0]
    np.testing.assert_allclose(d[hit, 0], ref_d[hit, 0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_save_load_round_trip_gives_identical_results(data, tmp_path, method):
    x, ids = data
    index = NeighborIndex.build(x, ids, method=method, threads=1, source="emb.npy")
    before = index.query(x[:30], 8)
    folder = tmp_path / "idx"
    index.save(str(folder))
    assert sorted(os.listdir(folder)) == sorted(["meta.json", "ids.txt", "vectors.npy" if method == "exact" else "hnsw.bin"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["method"] == method and meta["n"] == len(ids) and meta["dim"] == x.shape[1]
    again = NeighborIndex.load(str(folder))
    assert again.ids == ids and again.method == method
    after = again.query(x[:30], 8)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    # Saving over an existing index replaces it and leaves no temporary folder.
    again.save(str(folder))
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_save_refuses_a_folder_that_is_not_an_index(data, tmp_path):
    x, ids = data
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not a neighbour index"):
        NeighborIndex.build(x[:10], ids[:10]).save(str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_load_errors(data, tmp_path):
    x, ids = data
    with pytest.raises(InputError, match="no such index"):
        NeighborIndex.load(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no meta.json"):
        NeighborIndex.load(str(tmp_path / "empty"))
    NeighborIndex.build(x[:10], ids[:10]).save(str(tmp_path / "idx"))
    (tmp_path / "idx" / "ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match="ids.txt has 2 IDs"):
        NeighborIndex.load(str(tmp_path / "idx"))


def test_unknown_ids_and_dimension_errors(data):
    x, ids = data
    index = NeighborIndex.build(x, ids)
    with pytest.raises(InputError, match="unknown ID 'zz' and 1 more"):
        index.rows_of(["c1", "zz", "yy"])
    with pytest.raises(InputError, match="dimensions"):
        index.query(np.zeros((1, 5)), 3)


class FakeEncoder:
    """A stand-in encoder: the CLR of the 2-mers AA, AC, AG, AT as a 4-D "latent" (enough to tell GC- from AT-rich)."""

    input_dim, latent, source = 2772, 4, "fake"

    def z_mean(self, x):
        return np.asarray(x[:, 2760:2764], dtype=np.float32)


def test_embed_fasta_file(tmp_path):
    """Query sequences go through the one FASTA pipeline (vae.embed.embed_fasta): IDs and the encoder's z of each record."""
    from vae.kmers import profile
    from vae.transform import clr

    fa = tmp_path / "q.fa"
    fa.write_text(">a desc\nACGTACGTAA\n>b\nGGGCCCAT\nTTNA\n")
    ids, z = embed_fasta_file(str(fa), FakeEncoder())
    assert ids == ["a", "b"] and z.shape == (2, 4) and z.dtype == np.float32
    ref = FakeEncoder().z_mean(clr(np.stack([profile("ACGTACGTAA"), profile("GGGCCCATTTNA")])))
    np.testing.assert_allclose(z, ref, rtol=1e-6)
    with pytest.raises(InputError, match="no such file"):
        embed_fasta_file(str(tmp_path / "none.fa"), FakeEncoder())


# --------------------------------------------------------------------------- the command


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        cli.query_neighbors([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture()
def emb_files(tmp_path, data):
    x, ids = data
    lengths = np.arange(len(x)) + 1000
    np.save(tmp_path / "emb.npy", np.column_stack([lengths, x]).astype(np.float32))
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids))
    return tmp_path


def parse_tsv(text):
    lines = text.strip().splitlines()
    assert lines[0] == "query_id\trank\tneighbor_id\tdistance"
    return [ln.split("\t") for ln in lines[1:]]


def test_command_build_then_query(emb_files, data, capsys):
    d = emb_files
    x, ids = data
    code, out, err = run_cli(["--build-index", d / "idx", "-e", d / "emb.npy", "-id", d / "ids.txt"], capsys)
    assert code == 0, err
    assert out == "" and "indexed 2,000 vectors" in err
    code, out, err = run_cli(["--index", d / "idx", "--ids", "c3", "c40", "-k", 4], capsys)
    assert code == 0, err
    rows = parse_tsv(out)
    assert [r[0] for r in rows] == ["c3"] * 4 + ["c40"] * 4
    assert [r[1] for r in rows[:4]] == ["1", "2", "3", "4"]
    ref, ref_d = reference_knn(x, x[[3, 40]], 5, "euclidean")
    assert [r[2] for r in rows[:4]] == [ids[j] for j in ref[0, 1:]]
    np.testing.assert_allclose([float(r[3]) for r in rows[4:]], ref_d[1, 1:], rtol=1e-4)

    (d / "q.txt").write_text("c7\n\nc8\n")
    np.save(d / "q.npy", np.column_stack([[1, 2], x[[7, 8]]]).astype(np.float32))
    code, out, err = run_cli(["--index", d / "idx", "--ids-file", d / "q.txt", "--vectors", d / "q.npy", "-k", 2,
                              "-o", d / "nn.tsv"], capsys)
    assert code == 0, err
    rows = parse_tsv((d / "nn.tsv").read_text())
    assert [r[0] for r in rows] == ["c7", "c7", "c8", "c8", "row0", "row0", "row1", "row1"]
    assert rows[4][2] == "c7" and float(rows[4][3]) < 1e-3  # a vector query finds the contig itself


def test_command_build_and_query_cosine_in_one_call(emb_files, capsys):
    d = emb_files
    code, out, err = run_cli(["--build-index", d / "idx", "-e", d / "emb.npy", "-id", d / "ids.txt", "--metric", "cosine",
                              "--method", "hnsw", "--ids", "c1", "-k", 3, "--threads", 1, "--quiet"], capsys)
    assert code == 0, err
    assert len(parse_tsv(out)) == 3
    assert json.loads((d / "idx" / "meta.json").read_text())["metric"] == "cosine"
    code, _, err = run_cli(["--index", d / "idx", "--ids", "c1", "--metric", "euclidean"], capsys)
    assert code == 2 and "built with cosine" in err


def test_command_query_by_fasta(tmp_path, capsys, monkeypatch):
    """New sequences are counted, embedded (a stand-in encoder here) and searched."""
    import vae.embed
    from vae.kmers import profile
    from vae.transform import clr

    seqs = {"gc_rich": "GCGCGGCCGCGGGCCCGC" * 20, "at_rich": "ATATTAAATTTATAAT" * 20, "mixed": "ACGTTGCAACGT" * 30}

    def fake_load(model_path=None, engine="auto"):
        assert model_path == "enc.keras"
        return FakeEncoder()

    monkeypatch.setattr(vae.embed, "load_encoder", fake_load)
    z = FakeEncoder().z_mean(clr(np.stack([profile(s) for s in seqs.values()])))
    NeighborIndex.build(z, list(seqs)).save(str(tmp_path / "idx"))
    (tmp_path / "q.fa").write_text(">new_gc\n" + "GGCCGCGCGGCGCC" * 20 + "\n>new_at\n" + "TTAATATAATTA" * 20 + "\n")
    code, out, err = run_cli(["--index", tmp_path / "idx", "--fasta", tmp_path / "q.fa", "-m", "enc.keras", "-k", 1], capsys)
    assert code == 0, err
    rows = parse_tsv(out)
    assert [(r[0], r[2]) for r in rows] == [("new_gc", "gc_rich"), ("new_at", "at_rich")]


@pytest.mark.parametrize("case", ["unknown_id", "no_query", "no_index", "fasta_missing", "bad_dims", "missing_ids_file"])
def test_command_errors(emb_files, capsys, case):
    d = emb_files
    NeighborIndex.build(np.zeros((3, 4), np.float32) + np.arange(3)[:, None], ["a", "b", "c"]).save(str(d / "small"))
    np.save(d / "q5.npy", np.ones((2, 6), np.float32))
    args, expect = {
        "unknown_id": (["--index", d / "small", "--ids", "a", "nope", "-o", d / "out.tsv"], "unknown ID 'nope'"),
        "no_query": (["--index", d / "small"], "nothing to query"),
        "no_index": (["--index", d / "nowhere", "--ids", "a"], "no such index folder"),
        "fasta_missing": (["--index", d / "small", "--fasta", d / "x.fa"], "x.fa: no such file"),
        "bad_dims": (["--index", d / "small", "--vectors", d / "q5.npy"], "5 dimensions but the index has 4"),
        "missing_ids_file": (["--index", d / "small", "--ids-file", d / "none.txt"], "no such file"),
    }[case]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not (d / "out.tsv").exists()
