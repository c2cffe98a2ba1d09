"""The matrix format, and `concatenate_matrices` with its out-of-core shuffle."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from vae import matrix
from vae.cli import concatenate_matrices
from vae.errors import InputError
from vae.matrix import NpyStreamWriter

from .conftest import call_cli


def make(tmp_path: Path, name: str, n: int, cols: int = 2773, dtype=np.float32, seed: int = 0, gz: bool = False):
    rng = np.random.default_rng(seed)
    m = rng.random((n, cols)).astype(dtype)
    np.save(tmp_path / f"{name}.npy", m)
    ids = [f"{name}_{i}" for i in range(n)]
    text = "".join(i + "\n" for i in ids)
    idp = tmp_path / (f"{name}.txt.gz" if gz else f"{name}.txt")
    idp.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return m, ids, tmp_path / f"{name}.npy", idp


def test_stream_writer_header_is_valid_npy(tmp_path):
    rows = np.arange(3 * 2773, dtype=np.float32).reshape(3, 2773)
    with NpyStreamWriter(str(tmp_path / "x.npy"), 2773) as w:
        w.write(rows[:1])
        w.write(rows[1:])
        w.commit()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy", allow_pickle=False), rows)
    assert matrix._npy_header((10**12, 2773), np.float16)[-1:] == b"\n"


def test_stream_writer_removes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with NpyStreamWriter(str(tmp_path / "x.npy"), 5) as w:
            w.write(np.zeros((2, 5), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_concatenate_keeps_order(tmp_path):
    a, ia, pa, ida = make(tmp_path, "a", 7, seed=1)
    b, ib, pb, idb = make(tmp_path, "b", 5, seed=2, gz=True)
    assert call_cli(concatenate_matrices, ["-i", pa, pb, "-id", ida, idb, "-o", tmp_path / "all", "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "all.npy"), np.vstack([a, b]))
    assert (tmp_path / "all.txt").read_text().splitlines() == ia + ib


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 3 * 2773 * 4])  # one chunk, and many
def test_shuffle_preserves_every_id_row_pair(tmp_path, chunk_bytes):
    a, ia, pa, ida = make(tmp_path, "a", 40, seed=1)
    b, ib, pb, idb = make(tmp_path, "b", 25, seed=2)
    truth = dict(zip(ia + ib, np.vstack([a, b])))
    out = str(tmp_path / "shuf")
    matrix.concatenate([str(pa), str(pb)], [str(ida), str(idb)], out, shuffle=True, seed=7, chunk_bytes=chunk_bytes)
    m, ids = np.load(out + ".npy"), (tmp_path / "shuf.txt").read_text().splitlines()
    assert sorted(ids) == sorted(truth) and ids != ia + ib
    for i, row in zip(ids, m):
        np.testing.assert_array_equal(row, truth[i])
    # The same seed gives the same order; another seed another.
    matrix.concatenate([str(pa), str(pb)], [str(ida), str(idb)], out + "2", shuffle=True, seed=7, chunk_bytes=chunk_bytes)
    assert (tmp_path / "shuf2.txt").read_text().splitlines() == ids
    matrix.concatenate([str(pa), str(pb)], [str(ida), str(idb)], out + "3", shuffle=True, seed=8, chunk_bytes=chunk_bytes)
    assert (tmp_path / "shuf3.txt").read_text().splitlines() != ids


def test_shuffle_mixes_sources_across_the_file(tmp_path):
    _, _, pa, ida = make(tmp_path, "a", 200, seed=1)
    _, _, pb, idb = make(tmp_path, "b", 200, seed=2)
    call_cli(concatenate_matrices, ["-i", pa, pb, "-id", ida, idb, "-o", tmp_path / "s", "--shuffle", "--quiet"])
    ids = (tmp_path / "s.txt").read_text().splitlines()
    first_half_from_a = sum(i.startswith("a_") for i in ids[:200])
    assert 70 < first_half_from_a < 130  # a contiguous split would put all of one source in validation


def test_duplicate_ids_warn(tmp_path, capsys):
    _, _, pa, ida = make(tmp_path, "a", 3, cols=4)
    assert call_cli(concatenate_matrices, ["-i", pa, pa, "-id", ida, ida, "-o", tmp_path / "d", "--any-width"]) == 0
    assert "3 duplicate IDs" in capsys.readouterr().err
    # --quiet: nothing but errors, so not this warning either.
    assert call_cli(concatenate_matrices, ["-i", pa, pa, "-id", ida, ida, "-o", tmp_path / "q", "--quiet", "--any-width"]) == 0
    assert capsys.readouterr().err == ""


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("concatenate_matrices: error:")
    return lines[-1]


def test_row_id_mismatch(tmp_path, capsys):
    _, _, pa, _ = make(tmp_path, "a", 4)
    _, _, _, idb = make(tmp_path, "b", 5)
    assert call_cli(concatenate_matrices, ["-i", pa, "-id", idb, "-o", tmp_path / "o"]) == 2
    assert "has 4 rows but" in error_line(capsys) and not (tmp_path / "o.npy").exists()


def test_width_mismatch(tmp_path, capsys):
    _, _, pa, ida = make(tmp_path, "a", 4)
    _, _, pb, idb = make(tmp_path, "b", 4, cols=2772)
    assert call_cli(concatenate_matrices, ["-i", pa, pb, "-id", ida, idb, "-o", tmp_path / "o"]) == 2
    assert "2772 columns" in error_line(capsys) and not (tmp_path / "o.npy").exists()
    # embeddings (any width) are accepted with --any-width, but the widths must still agree
    assert call_cli(concatenate_matrices, ["-i", pa, pb, "-id", ida, idb, "-o", tmp_path / "o", "--any-width"]) == 2
    assert "same width" in error_line(capsys) and not (tmp_path / "o.npy").exists()


def test_dtype_mismatch(tmp_path, capsys):
    _, _, pa, ida = make(tmp_path, "a", 4)
    _, _, pb, idb = make(tmp_path, "b", 4, dtype=np.float16)
    assert call_cli(concatenate_matrices, ["-i", pa, pb, "-id", ida, idb, "-o", tmp_path / "o"]) == 2
    assert "float16" in error_line(capsys)


def test_not_a_matrix_and_missing(tmp_path, capsys):
    (tmp_path / "junk.npy").write_text("hello")
    (tmp_path / "junk.txt").write_text("x\n")
    assert call_cli(concatenate_matrices, ["-i", tmp_path / "junk.npy", "-id", tmp_path / "junk.txt", "-o", tmp_path / "o"]) == 2
    assert "not a readable .npy" in error_line(capsys)
    assert call_cli(concatenate_matrices, ["-i", tmp_path / "nope.npy", "-id", tmp_path / "junk.txt", "-o", tmp_path / "o"]) == 2
    assert "no such file" in error_line(capsys)


def test_count_of_ids_files_must_match(tmp_path, capsys):
    _, _, pa, ida = make(tmp_path, "a", 4)
    assert call_cli(concatenate_matrices, ["-i", pa, pa, "-id", ida, "-o", tmp_path / "o"]) == 2
    assert "one ID file per matrix" in error_line(capsys)


# --------------------------------------------------------------------------- bucket shuffle (issue 12)


def shuffled(tmp_path: Path, parts: list[tuple[np.ndarray, list[str], Path, Path]], name: str, **kw):
    out = str(tmp_path / name)
    matrix.concatenate([str(p[2]) for p in parts], [str(p[3]) for p in parts], out, shuffle=True, n_cols=None, **kw)
    return np.load(out + ".npy", allow_pickle=False), (tmp_path / f"{name}.txt").read_text().splitlines()


def assert_pairs_kept(parts, m: np.ndarray, ids: list[str]) -> None:
    truth = {i: r for p in parts for i, r in zip(p[1], p[0])}
    assert len(ids) == m.shape[0] == len(truth) and sorted(ids) == sorted(truth)
    np.testing.assert_array_equal(m, np.stack([truth[i] for i in ids]))


@pytest.mark.parametrize("mem_bytes", [1 << 30, 40 * 9 * 4, 7 * 9 * 4, 9 * 4])  # K = 1, several, many, one row per bucket
def test_bucket_shuffle_is_a_permutation_for_any_bucket_count(tmp_path, mem_bytes):
    parts = [make(tmp_path, "a", 23, cols=9, seed=1), make(tmp_path, "b", 1, cols=9, seed=2),
             make(tmp_path, "c", 17, cols=9, seed=3)]
    k, stage = matrix.shuffle_plan(41, 9 * 4, mem_bytes)
    assert (k == 1) == (mem_bytes == 1 << 30) and stage >= 1
    m, ids = shuffled(tmp_path, parts, "s", seed=3, mem_bytes=mem_bytes, chunk_bytes=5 * 9 * 4)
    assert_pairs_kept(parts, m, ids)
    assert ids != [i for p in parts for i in p[1]]


def test_bucket_shuffle_seeded_and_independent_of_chunking(tmp_path):
    parts = [make(tmp_path, "a", 60, cols=5, seed=1), make(tmp_path, "b", 45, cols=5, seed=2)]
    _, ids1 = shuffled(tmp_path, parts, "s1", seed=11, mem_bytes=300)
    _, ids2 = shuffled(tmp_path, parts, "s2", seed=11, mem_bytes=300, chunk_bytes=3 * 5 * 4)
    _, ids3 = shuffled(tmp_path, parts, "s3", seed=12, mem_bytes=300)
    assert ids1 == ids2  # the chunk size changes the I/O, never the order
    assert ids1 != ids3
    assert matrix.shuffle_plan(105, 20, 300)[0] > 1  # several buckets really were used


def test_bucket_shuffle_positions_are_uniform(tmp_path):
    """Over many seeds, each input row lands first about equally often (a bucket or in-bucket bias would show)."""
    parts = [make(tmp_path, "a", 6, cols=4, seed=1)]
    first = []
    for seed in range(240):
        _, ids = shuffled(tmp_path, parts, "u", seed=seed, mem_bytes=6 * 16 // 2)  # K = 6 buckets
        first.append(ids[0])
    counts = [first.count(f"a_{i}") for i in range(6)]
    assert min(counts) > 20 and max(counts) < 65, counts  # expected 40 each


def test_bucket_shuffle_float16_and_empty_input(tmp_path):
    parts = [make(tmp_path, "h", 30, cols=7, dtype=np.float16, seed=4), make(tmp_path, "e", 0, cols=7, dtype=np.float16)]
    m, ids = shuffled(tmp_path, parts, "s", seed=1, mem_bytes=200)
    assert m.dtype == np.float16
    assert_pairs_kept(parts, m, ids)
    empty = [make(tmp_path, "z", 0, cols=7)]
    m, ids = shuffled(tmp_path, empty, "z2", seed=1)
    assert m.shape == (0, 7) and ids == []


def test_bucket_shuffle_leaves_no_temporary_on_failure(tmp_path, monkeypatch):
    parts = [make(tmp_path, "a", 30, cols=5, seed=1)]
    calls = []

    def failing_pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) == 3:  # mid-way through the scatter
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    real = matrix._pwrite_all
    monkeypatch.setattr(matrix, "_pwrite_all", failing_pwrite)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OSError):
        shuffled(tmp_path, parts, "s", seed=1, mem_bytes=200)
    assert len(calls) == 3 and sorted(p.name for p in tmp_path.iterdir()) == before


def test_gather_rows_returns_the_asked_order_from_sorted_reads(tmp_path):
    """The one row gathering (evaluation, z_mean of a subset): any order, repeats, a memmap source."""
    m = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "m.npy", m)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    idx = np.array([7, 2, 2, 9, 0])
    out = matrix.gather_rows(mm, idx)
    assert out.dtype == np.float32 and np.array_equal(out, m[idx])
    assert matrix.gather_rows(mm, idx, np.float16).dtype == np.float16
    assert matrix.gather_rows(mm, np.array([], dtype=np.int64)).shape == (0, 4)


def test_folder_outputs_replace_only_their_own_kind(tmp_path):
    """Index and bins folders: staged beside the target, swapped in; a foreign folder is never replaced."""
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a bins folder"):
        matrix.staging_folder(str(foreign), lambda f: False, "a bins folder")
    assert (foreign / "keep.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes"]
    with pytest.raises(InputError, match="does not exist"):
        matrix.staging_folder(str(tmp_path / "no" / "bins"), lambda f: True, "a bins folder")
    for content in ("first", "second"):  # a new folder, then replacing our own older one
        folder, tmp = matrix.staging_folder(str(tmp_path / "bins"), lambda f: True, "a bins folder")
        (Path(tmp) / "table.tsv").write_text(content)
        matrix.swap_folder(tmp, folder)
        assert (tmp_path / "bins" / "table.tsv").read_text() == content
    assert sorted(os.listdir(tmp_path)) == ["bins", "notes"]  # no temporary or old folder left
