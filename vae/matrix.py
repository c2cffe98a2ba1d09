"""The k-mer matrix format: `.npy` I/O, ID files, atomic output, concatenation and out-of-core shuffle.

A matrix is a 2-D `.npy` (float32, or float16 where a command allows it) whose
row i belongs to line i of its IDs file. Everything here streams: rows are
read through memmaps and written in bounded chunks, never held whole in RAM.
"""
from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import shutil
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

from .errors import InputError, reading
from .kmers import N_COLUMNS, N_FEATURES
from .options import option, quiet_option

# A fixed 128-byte .npy v1.0 header: room for any 2-D shape, so it can be
# written last, once the number of rows is known, without moving the data.
_HEADER_LEN = 128
ALLOWED_DTYPES = ("float32", "float16")
#: Largest finite float16: in float16 matrices the length column saturates here.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    d = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(shape))
    body = d.encode("latin1")
    pad = _HEADER_LEN - 10 - len(body) - 1
    if pad < 0:
        raise ValueError("shape too large for the fixed header")
    return b"\x93NUMPY\x01\x00" + (_HEADER_LEN - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


def temp_path_for(path: str, suffix: str = "") -> str:
    """A hidden temporary name beside ``path`` (same filesystem, so the final rename is atomic).

    ``suffix`` is for writers that insist on an extension (Keras: ``.keras``, ``np.savez``: ``.npz``).
    """
    d, base = os.path.split(os.path.abspath(path))
    # pid + a counter: two outputs of one process never share a temporary (issue 10: -id o.npy -k o.npy).
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-{next(_TMP_SERIAL)}{suffix}")


_TMP_SERIAL = itertools.count()
#: Open commit_together() groups (innermost last): renames wait in the innermost one.
_GROUPS: list[list[tuple[str, str]] | None] = []


def _commit(tmp: str, path: str) -> None:
    """Rename ``tmp`` to ``path`` now, or at the end of the open :func:`commit_together` group."""
    if _GROUPS and _GROUPS[-1] is not None:
        _GROUPS[-1].append((tmp, path))
    else:
        os.replace(tmp, path)


@contextmanager
def commit_now() -> Iterator[None]:
    """Inside a :func:`commit_together` group: renames in this block happen at once (private work files)."""
    _GROUPS.append(None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        _GROUPS.pop()


@contextmanager
def commit_together() -> Iterator[None]:
    """Hold back every rename of the outputs written inside the block; do them all only when it succeeds.

    A command with several outputs (matrix + IDs, map + figure + JSON) wraps its
    writing in this, so a failure anywhere (a bad input found late, a full disk,
    Ctrl-C) leaves none of them, instead of some finished-looking ones. If a rename
    itself fails, the outputs already renamed by the group are removed again.
    """
    group: list[tuple[str, str]] = []
    _GROUPS.append(group)
    try:
        yield
    except BaseException:
        _GROUPS.pop()
        for tmp, _ in group:
            _unlink_quietly(tmp)
        raise
    _GROUPS.pop()
    if _GROUPS and _GROUPS[-1] is not None:  # nested: the enclosing group decides
        _GROUPS[-1].extend(group)
        return
    done: list[str] = []
    try:
        for tmp, path in group:
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for p in done:
            _unlink_quietly(p)
        for tmp, _ in group:
            _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def pending_path(path: str) -> str:
    """Where the content of ``path`` is now: its temporary while a :func:`commit_together` group holds it back."""
    for group in reversed(_GROUPS):
        for tmp, final in reversed(group or []):
            if final == path:
                return tmp
    return path


@contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it into place on success, remove it on any failure.

    Inside :func:`commit_together` the rename waits for the end of the group.
    """
    tmp = temp_path_for(path, suffix)
    try:
        yield tmp
    except BaseException:
        _unlink_quietly(tmp)
        raise
    try:
        _commit(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def check_output_dir(path: str) -> None:
    """Fail early and clearly when the folder of an output path is missing or not writable."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputError(f"output folder {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK):
        raise InputError(f"output folder {d} is not writable")


class NpyStreamWriter:
    """Append rows to a `.npy` under a temporary name; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block by an exception (including
    KeyboardInterrupt) removes the temporary file, so no finished-looking
    output is ever left behind.
    """

    def __init__(self, path: str, n_cols: int, dtype: str | np.dtype = np.float32):
        self.path = path
        self.n_cols = n_cols
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.tmp = temp_path_for(path)
        self._fh = open(self.tmp, "wb")
        self._fh.write(b"\0" * _HEADER_LEN)

    def write(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.n_cols:
            raise ValueError(f"rows of shape {rows.shape} do not fit {self.n_cols} columns")
        self._fh.write(np.ascontiguousarray(rows, dtype=self.dtype).data)
        self.rows += rows.shape[0]

    def commit(self) -> None:
        self._fh.seek(0)
        self._fh.write(_npy_header((self.rows, self.n_cols), self.dtype))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        _commit(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __enter__(self) -> "NpyStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


@contextmanager
def atomic_text(path: str) -> Iterator:
    """Write a text file under a temporary name and rename it into place on success."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        yield fh


def read_ids(path: str) -> list[str]:
    """IDs from a `.txt` (or `.txt.gz`) file, one per line."""
    with reading(path, "cannot read IDs", also=(EOFError,)):
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read().splitlines()
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()


def open_matrix(path: str, n_cols: int | None = N_COLUMNS, mmap: bool = True) -> np.ndarray:
    """Open a matrix read-only through a memmap, checking it is a 2-D float array of ``n_cols`` columns."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a .npy file")
    with reading(path, "not a readable .npy matrix", also=(ValueError, EOFError, zipfile.BadZipFile)):
        m = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if not isinstance(m, np.ndarray):  # np.load opens any zip (.npz) as an archive of arrays
        if hasattr(m, "close"):
            m.close()
        raise InputError(f"{path}: a .npz archive (or other zip), not a .npy matrix")
    if m.ndim != 2:
        raise InputError(f"{path}: expected a 2-D matrix, got {m.ndim}-D with shape {m.shape}")
    if m.dtype.kind != "f":
        raise InputError(f"{path}: expected a float matrix, got dtype {m.dtype}")
    if n_cols is not None and m.shape[1] != n_cols:
        raise InputError(f"{path}: has {m.shape[1]} columns, expected {n_cols} (length + 2772 k-mer frequencies)")
    return m


# --------------------------------------------------------------------------- embeddings and maps (what `embedding` and `tsne` write)


@dataclasses.dataclass
class Embeddings:
    """Latent vectors with their contig lengths (when the matrix has a length column) and IDs."""

    z: np.ndarray  # (N, D) float32
    lengths: np.ndarray | None  # (N,) float32, or None for a plain latent matrix
    ids: list[str] | None
    path: str

    def __len__(self) -> int:
        return self.z.shape[0]


def _check_ids(path: str, n_rows: int, ids_path: str | None) -> list[str] | None:
    if ids_path is None:
        return None
    ids = read_ids(ids_path)
    if len(ids) != n_rows:
        raise InputError(f"{path} has {n_rows:,} rows but {ids_path} has {len(ids):,} IDs: they must be row-aligned")
    n_dup = len(ids) - len(set(ids))
    if n_dup:
        print(f"warning: {ids_path}: {n_dup:,} duplicate IDs (an ID names several rows: lookups by ID take the first)",
              file=sys.stderr)
    return ids


def _check_finite(path: str, a: np.ndarray, chunk: int = 1 << 18) -> None:
    # In row chunks: a full boolean mask of millions of rows would cost as much as the data.
    bad_rows = [start + np.flatnonzero(~np.isfinite(a[start : start + chunk]).all(axis=1))
                for start in range(0, a.shape[0], chunk)]
    bad = np.concatenate(bad_rows) if bad_rows else np.zeros(0, dtype=np.int64)
    if bad.size:
        raise InputError(f"{path}: {bad.size:,} rows contain NaN or infinite values (first: row {bad[0]})")


def load_embeddings(path: str, ids_path: str | None = None, length_column: bool = True) -> Embeddings:
    """Read an embeddings matrix (and its IDs), checking shape, finiteness, the length column and row alignment.

    With ``length_column`` (the default, what ``embedding`` writes) column 0
    must look like contig lengths (non-negative whole numbers); otherwise the
    whole matrix is taken as latent vectors.
    """
    # Memmapped, so that the one in-memory copy is the float32 latent block (no second copy of the whole file).
    m = open_matrix(path, n_cols=None, mmap=True)
    if m.shape[0] == 0:
        raise InputError(f"{path}: the matrix has no rows")
    if length_column:
        if m.shape[1] < 2:
            raise InputError(f"{path}: has {m.shape[1]} column(s); an embeddings matrix is (N, 1 + latent) with the length in column 0")
        lengths = np.asarray(m[:, 0], dtype=np.float32)
        if not np.all(np.isfinite(lengths)) or (lengths < 0).any() or (lengths != np.round(lengths)).any():
            raise InputError(f"{path}: column 0 does not look like contig lengths (negative, fractional or non-finite values); "
                             "for a plain latent matrix without a length column pass --no-length-column")
        z = np.ascontiguousarray(m[:, 1:], dtype=np.float32)
    else:
        lengths = None
        z = np.ascontiguousarray(m, dtype=np.float32)
    _check_finite(path, z)
    return Embeddings(z=z, lengths=lengths, ids=_check_ids(path, m.shape[0], ids_path), path=path)


def load_coords(path: str, ids_path: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Read an (N, 2) map (t-SNE coordinates) and its IDs; returns (coords float32, ids)."""
    m = open_matrix(path, n_cols=None, mmap=False)
    if m.shape[1] != 2:
        raise InputError(f"{path}: has shape {m.shape}; a map is (N, 2) coordinates (the output of tsne)")
    if m.shape[0] == 0:
        raise InputError(f"{path}: the map has no rows")
    coords = np.ascontiguousarray(m, dtype=np.float32)
    _check_finite(path, coords)
    return coords, _check_ids(path, m.shape[0], ids_path)


def staging_folder(folder: str, is_ours: Callable[[str], bool], what: str) -> tuple[str, str]:
    """Check a folder output and make an empty temporary folder beside it; returns (absolute folder, temporary).

    An existing ``folder`` may only be replaced when ``is_ours(folder)`` (one of ours of the same kind, ``what``);
    :func:`swap_folder` then puts the temporary in its place.
    """
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    if not os.path.isdir(parent):
        raise InputError(f"output folder {parent} does not exist")
    if os.path.exists(folder) and not is_ours(folder):
        raise InputError(f"{folder} exists and is not {what}: remove it or choose another name")
    tmp = os.path.join(parent, f".{os.path.basename(folder)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    return folder, tmp


def swap_folder(tmp: str, folder: str) -> None:
    """Rename the finished temporary folder ``tmp`` to ``folder``, replacing (then removing) an older one."""
    if os.path.exists(folder):
        old = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.old-{os.getpid()}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def gather_rows(matrix: np.ndarray, idx, dtype=None) -> np.ndarray:
    """Rows ``idx`` of a (memmapped) matrix, read in ascending order (sequential-ish on disk), in the asked order."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    out = np.empty((idx.shape[0], matrix.shape[1]), dtype=dtype or matrix.dtype)
    out[order] = matrix[idx[order]]
    return out


def iter_row_chunks(n_rows: int, n_cols: int, itemsize: int = 4, chunk_bytes: int = 64 << 20) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of about ``chunk_bytes`` each."""
    step = max(1, chunk_bytes // max(1, n_cols * itemsize))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


#: Default RAM budget for the rows of an out-of-core shuffle (staging buffers + one bucket).
SHUFFLE_MEM_BYTES = 256 << 20


def concatenate(
    matrices: Sequence[str],
    id_files: Sequence[str],
    out_prefix: str,
    shuffle: bool = False,
    seed: int = 42,
    chunk_bytes: int = 64 << 20,
    progress=None,
    mem_bytes: int = SHUFFLE_MEM_BYTES,
    method: str = "buckets",
    n_cols: int | None = N_COLUMNS,
) -> tuple[int, int]:
    """Concatenate matrices (and their IDs) into ``out_prefix.npy``/``.txt``; optionally shuffle rows.

    ``n_cols``: the width every input must have (k-mer matrices by default: the rest of the pipeline rejects other
    widths); None accepts any width shared by all inputs (embeddings, for example).

    The shuffle is out of core with sequential I/O (``method="buckets"``, see
    :func:`_bucket_shuffle`): RAM holds the permutation, the IDs and about
    ``mem_bytes`` of rows. ``method="gather"`` is the earlier random-row gather
    through memmaps, kept for the benchmark. ``width``: the column count required
    (k-mer matrices by default; None = any, all inputs alike). Returns (rows, duplicate IDs).
    """
    if method not in ("buckets", "gather"):
        raise ValueError(f"unknown shuffle method {method!r}")
    if len(matrices) != len(id_files):
        raise InputError(f"{len(matrices)} matrices but {len(id_files)} ID files: give one ID file per matrix")
    if not matrices:
        raise InputError("no input matrices given")
    mats = [open_matrix(p, n_cols) for p in matrices]
    n_cols, dtype = mats[0].shape[1], mats[0].dtype
    for p, m in zip(matrices, mats):
        if m.dtype.name not in ALLOWED_DTYPES:
            raise InputError(f"{p}: dtype {m.dtype}; k-mer matrices are {' or '.join(ALLOWED_DTYPES)} (convert first)")
    for p, m in zip(matrices, mats):
        if m.shape[1] != n_cols:
            raise InputError(f"{p}: has {m.shape[1]} columns but {matrices[0]} has {n_cols}: matrices must have the same width")
        if m.dtype != dtype:
            raise InputError(f"{p}: dtype {m.dtype} differs from {matrices[0]} ({dtype}): convert first")
    ids: list[str] = []
    for p, idp, m in zip(matrices, id_files, mats):
        these = read_ids(idp)
        if len(these) != m.shape[0]:
            raise InputError(f"{p} has {m.shape[0]} rows but {idp} has {len(these)} IDs")
        ids.extend(these)
    n = len(ids)
    n_dup = n - len(set(ids))
    if n_dup:
        print(f"warning: {n_dup} duplicate IDs in the inputs (rows are kept; IDs no longer identify rows uniquely)", file=sys.stderr)

    out_npy = out_prefix + ".npy"
    out_txt = out_prefix + ".txt"
    check_output_dir(out_npy)
    offsets = np.cumsum([0] + [m.shape[0] for m in mats])
    # pread needs C-ordered rows at a known offset; a Fortran-ordered .npy falls back to the gather.
    if shuffle and method == "buckets" and n and all(isinstance(m, np.memmap) and m.flags.c_contiguous for m in mats):
        with NpyStreamWriter(out_npy, n_cols, dtype) as w:
            order = _bucket_shuffle(mats, w, seed, mem_bytes, chunk_bytes, progress)
            with atomic_text(out_txt) as fh:
                fh.writelines(ids[j] + "\n" for j in order.tolist())
            w.commit()
        return n, n_dup
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    with commit_together(), NpyStreamWriter(out_npy, n_cols, dtype) as w:  # .npy and .txt appear together
        for start, stop in iter_row_chunks(n, n_cols, dtype.itemsize, chunk_bytes):
            if order is None:
                w.write(_gather_range(mats, offsets, start, stop))
            else:
                w.write(_gather_rows(mats, offsets, order[start:stop]))
            if progress is not None:
                progress(stop - start)
        with atomic_text(out_txt) as fh:
            if order is None:
                fh.writelines(i + "\n" for i in ids)
            else:
                fh.writelines(ids[j] + "\n" for j in order.tolist())
        w.commit()
    return n, n_dup


def shuffle_plan(n_rows: int, row_bytes: int, mem_bytes: int) -> tuple[int, int]:
    """(buckets K, staging rows per bucket) for a bucket shuffle of ``n_rows`` rows within ``mem_bytes``.

    Half the budget holds one bucket in pass 2 (mean bucket = a third of the
    budget, leaving room for the random spread of bucket sizes); a quarter
    stages rows of pass 1 before each bucket's sequential write.
    """
    total = n_rows * row_bytes
    k = max(1, -(-total // max(1, mem_bytes // 3)))
    stage_rows = max(1, (mem_bytes // 4) // (k * row_bytes))
    return int(k), int(stage_rows)


def _pread_exact(fd: int, buf: memoryview, offset: int) -> None:
    got = 0
    while got < len(buf):
        k = os.preadv(fd, [buf[got:]], offset + got)
        if k <= 0:
            raise InputError(f"unexpected end of file while reading rows at byte {offset + got}")
        got += k


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _bucket_shuffle(mats: Sequence[np.memmap], w: NpyStreamWriter, seed: int, mem_bytes: int,
                    chunk_bytes: int, progress=None) -> np.ndarray:
    """Shuffle the rows of ``mats`` into the writer's temporary file in two sequential passes.

    Pass 1 reads the inputs front to back (pread, ``chunk_bytes`` at a time) and
    deals each row to one of K buckets drawn uniformly at random; each bucket is
    a contiguous region of the output, so rows are staged and written with
    large pwrites at K advancing cursors. Pass 2 reads each region whole,
    permutes it in RAM and writes it back in place. i.i.d. bucket labels plus
    a uniform order within each bucket give a uniform permutation; no memmap,
    so resident memory stays at the buffers. Returns the permutation
    (output row i = input row order[i]) for the IDs.
    """
    n_cols, dtype = mats[0].shape[1], mats[0].dtype
    row_bytes = n_cols * dtype.itemsize
    n = sum(m.shape[0] for m in mats)
    k, stage_rows = shuffle_plan(n, row_bytes, mem_bytes)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n, dtype=np.uint16 if k < 65536 else np.uint32)
    counts = np.bincount(labels, minlength=k)
    # Global rows grouped by bucket in input order: exactly the order pass 1 writes them.
    by_bucket = np.argsort(labels, kind="stable")
    w._fh.flush()
    # The writer's own handle is write-only; pass 2 reads back, so open the temporary read-write.
    out_fd, base = os.open(w.tmp, os.O_RDWR), _HEADER_LEN
    try:
        os.ftruncate(out_fd, base + n * row_bytes)
        order = _scatter_then_permute(mats, out_fd, base, rng, labels, by_bucket, counts, k, stage_rows,
                                      chunk_bytes, mem_bytes, progress)
    finally:
        os.close(out_fd)
    w._fh.seek(base + n * row_bytes)
    w.rows = n
    return order


def _scatter_then_permute(mats, out_fd, base, rng, labels, by_bucket, counts, k, stage_rows,
                          chunk_bytes, mem_bytes, progress) -> np.ndarray:
    """The two passes of :func:`_bucket_shuffle` on the open output ``out_fd`` (rows from byte ``base``)."""
    n_cols, dtype = mats[0].shape[1], mats[0].dtype
    row_bytes = n_cols * dtype.itemsize
    n = labels.shape[0]
    starts = np.concatenate([[0], np.cumsum(counts)])

    stage = np.empty((k, stage_rows, n_cols), dtype=dtype)
    fill = np.zeros(k, dtype=np.int64)
    cursor = starts[:-1].copy()

    def flush(b: int) -> None:
        _pwrite_all(out_fd, memoryview(stage[b, : fill[b]]).cast("B"), base + int(cursor[b]) * row_bytes)
        cursor[b] += fill[b]
        fill[b] = 0

    step = max(1, min(chunk_bytes, mem_bytes // 4) // row_bytes)
    buf = np.empty((step, n_cols), dtype=dtype)
    g = 0  # global row number of the chunk's first row
    reported = 0
    for m in mats:
        fd = os.open(m.filename, os.O_RDONLY)
        try:
            for start, stop in iter_row_chunks(m.shape[0], n_cols, dtype.itemsize, step * row_bytes):
                rows = buf[: stop - start]
                _pread_exact(fd, memoryview(rows).cast("B"), m.offset + start * row_bytes)
                lab = labels[g + start : g + stop]
                srt = np.argsort(lab, kind="stable")
                bounds = np.searchsorted(lab[srt], np.arange(k + 1))
                for b in np.flatnonzero(np.diff(bounds)):
                    sel = srt[bounds[b] : bounds[b + 1]]
                    while sel.size:
                        take = min(sel.size, stage_rows - int(fill[b]))
                        stage[b, fill[b] : fill[b] + take] = rows[sel[:take]]
                        fill[b] += take
                        sel = sel[take:]
                        if fill[b] == stage_rows:
                            flush(b)
                if progress is not None:  # each pass is half the work
                    progress((stop - start) // 2)
                    reported += (stop - start) // 2
        finally:
            os.close(fd)
        g += m.shape[0]
    for b in np.flatnonzero(fill):
        flush(int(b))
    stage = buf = rows = None  # free the staging and the read buffer (rows is a view of it) before pass 2

    order = np.empty(n, dtype=np.int64)
    piece = max(1, min(chunk_bytes, mem_bytes // 8) // row_bytes)
    for b in range(k):
        lo, hi = int(starts[b]), int(starts[b + 1])
        if hi == lo:
            continue
        block = np.empty((hi - lo, n_cols), dtype=dtype)
        _pread_exact(out_fd, memoryview(block).cast("B"), base + lo * row_bytes)
        perm = rng.permutation(hi - lo)
        order[lo:hi] = by_bucket[lo:hi][perm]
        for s in range(0, hi - lo, piece):
            out = np.ascontiguousarray(block[perm[s : s + piece]])
            _pwrite_all(out_fd, memoryview(out).cast("B"), base + (lo + s) * row_bytes)
        del block
        if progress is not None:
            progress((hi - lo) // 2)
            reported += (hi - lo) // 2
    if progress is not None and n > reported:
        progress(n - reported)
    return order


def _gather_range(mats: Sequence[np.ndarray], offsets: np.ndarray, start: int, stop: int) -> np.ndarray:
    parts = []
    for f, m in enumerate(mats):
        lo, hi = max(start, offsets[f]), min(stop, offsets[f + 1])
        if lo < hi:
            parts.append(np.asarray(m[lo - offsets[f] : hi - offsets[f]]))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _gather_rows(mats: Sequence[np.ndarray], offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows by global index, read in sorted order (sequential-ish disk access), returned in the asked order."""
    out = np.empty((rows.shape[0], mats[0].shape[1]), dtype=mats[0].dtype)
    file_of = np.searchsorted(offsets, rows, side="right") - 1
    for f, m in enumerate(mats):
        sel = np.flatnonzero(file_of == f)
        if sel.size:
            local = rows[sel] - offsets[f]
            srt = np.argsort(local, kind="stable")
            out[sel[srt]] = m[local[srt]]
    return out


#: Rows hashed by :func:`fingerprint`: evenly spaced, so a reshuffle or an edit of the matrix changes them.
FINGERPRINT_ROWS = 64


def fingerprint(path: str, ids_path: str | None = None) -> dict:
    """A cheap identity of a matrix (and its IDs): file size, shape, dtype and a SHA-256 of evenly spaced rows.

    Recorded by ``train_vae`` and checked on ``--resume`` and ``verify_local_distances --run-dir``:
    a reshuffled or otherwise different matrix of the same shape is caught without reading it whole.
    """
    import hashlib

    m = open_matrix(path, n_cols=None)
    h = hashlib.sha256(f"{m.shape} {m.dtype.str}".encode())
    if m.shape[0]:
        for r in np.unique(np.linspace(0, m.shape[0] - 1, FINGERPRINT_ROWS).astype(np.int64)).tolist():
            h.update(np.ascontiguousarray(m[r]).tobytes())
    out = {"bytes": os.path.getsize(path), "rows_sha256": h.hexdigest(), "rows_hashed": min(FINGERPRINT_ROWS, m.shape[0])}
    if ids_path:
        hi = hashlib.sha256("\n".join(read_ids(ids_path)).encode())
        out["ids_sha256"] = hi.hexdigest()
    return out


def check_fingerprint(path: str, recorded: dict | None, what: str) -> None:
    """Refuse ``path`` when its :func:`fingerprint` differs from ``recorded`` (None: an older run, not checked)."""
    if not recorded:
        return
    now = fingerprint(path)
    for key in ("bytes", "rows_sha256"):
        if key in recorded and recorded[key] != now[key]:
            raise InputError(f"{path}: not the matrix {what} was made from (its {'size' if key == 'bytes' else 'rows'} "
                             "differ: reshuffled, re-counted or another file); give the same matrix")


#: k-mer frequencies above this are out of range (a group sums to 1; float16 rounding stays far below).
MAX_FREQUENCY = 1.0 + 1e-3


def check_rows(rows: np.ndarray, name: str = "input", row_numbers: np.ndarray | None = None, offset: int = 0) -> None:
    """Refuse k-mer matrix rows holding NaN/Inf, negative values or frequencies above 1, with one line.

    Checked on the way in by every command that turns rows into results (embedding, the
    evaluations), so a damaged matrix is refused instead of becoming NaN embeddings.
    ``row_numbers`` (or ``offset``) map positions in ``rows`` back to matrix rows for the message.
    """
    if rows.size == 0:
        return
    bad = ~np.isfinite(rows).all(axis=1) | (rows < 0).any(axis=1)
    if rows.shape[1] > 1:
        bad |= (rows[:, 1:] > MAX_FREQUENCY).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = int(row_numbers[i]) if row_numbers is not None else offset + i
        raise InputError(f"{name}: {int(bad.sum()):,} row(s) with NaN/Inf, negative or above-1 k-mer values (first: row "
                         f"{first}); k-mer frequencies must be finite and within [0, 1]")


# --------------------------------------------------------------------------- .npy streams (stdin/stdout)

NPY_MAGIC = b"\x93NUMPY"


def _read_full(fh: BinaryIO, n: int) -> bytes:
    """Read exactly n bytes unless the stream ends (pipes return partial reads)."""
    parts, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def read_npy_stream_header(fh: BinaryIO, name: str = "stdin") -> tuple[tuple[int, ...], np.dtype]:
    """Read a .npy header from a non-seekable stream; returns (shape, dtype), leaving the stream at the data."""
    magic = _read_full(fh, 8)
    if not magic:
        raise InputError(f"{name}: empty input (expected a .npy k-mer matrix)")
    if not magic.startswith(NPY_MAGIC):
        hint = " (FASTA input: give it with -i FILE)" if magic.lstrip()[:1] == b">" or magic[:2] == b"\x1f\x8b" else ""
        raise InputError(f"{name}: not a .npy matrix{hint}")
    major = magic[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(_read_full(fh, hlen_size), "little")
    header = _read_full(fh, hlen)
    if len(header) != hlen:
        raise InputError(f"{name}: truncated .npy header")
    try:
        import ast

        d = ast.literal_eval(header.decode("latin1"))
        shape, fortran, dtype = tuple(d["shape"]), bool(d["fortran_order"]), np.dtype(d["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise InputError(f"{name}: unreadable .npy header ({e})") from None
    if fortran:
        raise InputError(f"{name}: Fortran-ordered .npy cannot be streamed; save it in C order")
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D matrix, got shape {shape}")
    if dtype.kind != "f" or dtype.hasobject:
        raise InputError(f"{name}: expected a float matrix, got dtype {dtype}")
    if shape[1] != N_COLUMNS:
        raise InputError(f"{name}: has {shape[1]} columns, expected {N_COLUMNS} (length + {N_FEATURES} k-mer frequencies)")
    return shape, dtype


def iter_npy_stream(fh: BinaryIO, shape: tuple[int, int], dtype: np.dtype, batch_size: int, name: str = "stdin") -> Iterator[np.ndarray]:
    """Rows of a .npy body from a stream, ``batch_size`` at a time."""
    n, cols = shape
    row_bytes = cols * dtype.itemsize
    done = 0
    while done < n:
        take = min(batch_size, n - done)
        buf = _read_full(fh, take * row_bytes)
        if len(buf) != take * row_bytes:
            raise InputError(f"{name}: input ended after {done + len(buf) // row_bytes:,} of {n:,} rows (truncated .npy)")
        yield np.frombuffer(buf, dtype=dtype).reshape(take, cols)
        done += take


class StreamNpyWriter:
    """Write a .npy of known shape to a non-seekable stream: header first, then rows."""

    def __init__(self, fh: BinaryIO, n_rows: int, n_cols: int, dtype=np.float32):
        self.fh, self.n_cols, self.expected, self.rows, self.dtype = fh, n_cols, n_rows, 0, np.dtype(dtype)
        np.lib.format.write_array_header_1_0(fh, {"descr": self.dtype.str, "fortran_order": False, "shape": (n_rows, n_cols)})

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, dtype=self.dtype).data)
        self.rows += rows.shape[0]

    def commit(self) -> None:
        self.fh.flush()
        if self.rows != self.expected:  # cannot happen unless the reader lied; never emit a wrong header silently
            raise RuntimeError(f"wrote {self.rows} rows, header says {self.expected}")


# --------------------------------------------------------------------------- the concatenate_matrices command


@dataclass
class ConcatOptions:
    """Everything ``concatenate_matrices`` takes."""

    inputs: list[str] | None = option(flags=("-i", "--input"), required=True, metavar="NPY", help="input matrices")
    ids: list[str] | None = option(flags=("-id", "--ids"), required=True, metavar="TXT",
                                   help="their ID files (.txt or .txt.gz), same order")
    output: str | None = option(flags=("-o", "--output"), required=True, metavar="NAME",
                                help="output prefix: writes NAME.npy and NAME.txt")
    shuffle: bool = option(False, help="shuffle rows (IDs move with them)")
    seed: int = option(42, help="seed of the shuffle")
    any_width: bool = option(False, help="accept matrices of any width shared by all inputs (e.g. embeddings); "
                                         "default: k-mer matrices of 2773 columns only")
    quiet: bool = quiet_option()

    @property
    def prefix(self) -> str:
        """The output prefix (a trailing .npy dropped)."""
        return self.output[:-4] if self.output.endswith(".npy") else self.output


def run(opts: ConcatOptions) -> tuple[int, int]:
    """``concatenate_matrices``: every input's rows (IDs beside them) into PREFIX.npy + .txt; (rows, duplicate IDs)."""
    from .paths import check_paths
    from .progress import rows_bar

    prefix = opts.prefix
    check_paths(list(opts.inputs) + list(opts.ids), [prefix + ".npy", prefix + ".txt"])
    total = sum(open_matrix(p, n_cols=None).shape[0] for p in opts.inputs) if len(opts.inputs) == len(opts.ids) else 0
    with rows_bar(total, disable=opts.quiet) as update:
        n, n_dup = concatenate(opts.inputs, opts.ids, prefix, shuffle=opts.shuffle, seed=opts.seed, progress=update,
                               n_cols=None if opts.any_width else N_COLUMNS)
    if not opts.quiet:
        print(f"concatenate_matrices: {n:,} rows from {len(opts.inputs)} matrices"
              f"{' (shuffled, seed ' + str(opts.seed) + ')' if opts.shuffle else ''} -> {prefix}.npy, {prefix}.txt",
              file=sys.stderr)
    return n, n_dup
