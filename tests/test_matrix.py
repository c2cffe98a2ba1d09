"""The matrix format, and `concatenate_matrices` with its out-of-core shuffle."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from vae import matrix
from vae.cli import concatenate_matrices
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
    assert call_cli(concatenate_matrices, ["-i", pa, pa, "-id", ida, ida, "-o", tmp_path / "d"]) == 0
    assert "3 duplicate IDs" in capsys.readouterr().err
    # --quiet: nothing but errors, so not this warning either.
    assert call_cli(concatenate_matrices, ["-i", pa, pa, "-id", ida, ida, "-o", tmp_path / "q", "--quiet"]) == 0
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
