"""Batches from a k-mer matrix on disk: the train/validation split, shuffling, and streaming reads.

Memory does not grow with the number of rows N, except for the split's row
indices (8 bytes a used row):

* rows are read with ``preadv`` straight into the batch buffer, never through
  a memmap: the pages of a memmap count towards the process's RSS and would
  grow it to the size of the file over an epoch;
* the train rows are cut into blocks of :data:`BLOCK_ROWS` consecutive train
  rows; each epoch permutes the blocks (a seeded permutation of N/32 numbers),
  and a batch is the concatenation of the next blocks of that order, so a
  batch of 1024 comes from ~32 places of the file, each read in one syscall.
  Row order inside a batch does not matter (the loss is a mean over it);
* worker threads fill the next batches ahead of the model (``preadv`` releases
  the GIL); at most ``prefetch`` batches are in flight.

The CLR is not applied here: batches are raw matrix rows (length column
included, file dtype), and the model applies :func:`vae.transform.clr_ops` in
its compiled step (``VAE(raw_rows=True)``). That halves host->device traffic
for float16 matrices and keeps the host's cores free for reading.

Nothing here imports TensorFlow except :func:`tf_dataset`.
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .errors import InputError
from .kmers import GROUP_SLICES, K_ORDER, LENGTH_COLUMN
from .matrix import ALLOWED_DTYPES, atomic_path, open_matrix

#: Consecutive train rows read together: big enough that a read is one large
#: syscall (~170 kB of float32), small enough that a batch mixes ~32 places.
BLOCK_ROWS = 32
#: The split saved in a run folder (NumPy arrays only, loaded with allow_pickle=False).
SPLIT_FILE = "split.npz"
#: Alignment of batch buffers: TensorFlow wraps 64-byte-aligned arrays without copying them.
_ALIGN = 64
#: Gaps of at most this many unwanted rows are read and discarded rather than
#: splitting the read (one syscall beats several small ones).
_MAX_GAP_ROWS = 8
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


class MatrixReader:
    """Random access to the rows of a `.npy` matrix with ``preadv`` (thread-safe, no memmap)."""

    def __init__(self, path: str):
        m = open_matrix(path)  # validates existence, 2-D float, 2773 columns
        if m.dtype.name not in ALLOWED_DTYPES:
            raise InputError(f"{path}: dtype {m.dtype} not supported; expected one of {', '.join(ALLOWED_DTYPES)}")
        if not m.dtype.isnative:
            raise InputError(f"{path}: byte order of {m.dtype.str} is not this machine's; convert the matrix first")
        if m.flags.f_contiguous and not m.flags.c_contiguous:
            raise InputError(f"{path}: Fortran-ordered matrix; save it in C order")
        self.path = path
        self.shape: tuple[int, int] = tuple(m.shape)
        self.dtype = m.dtype
        self.offset = int(m.offset)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        size = os.path.getsize(path)
        if size < expected:
            raise InputError(f"{path}: truncated ({size:,} bytes, expected {expected:,} for shape {self.shape})")
        del m
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        # Shared by all threads: what lands in it is thrown away, so concurrent writes do not matter.
        self._discard_view = memoryview(np.empty(_MAX_GAP_ROWS * self.row_bytes, dtype=np.uint8))

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Read rows ``rows`` (any order; ascending runs are read fastest) into ``out[:len(rows)]``.

        ``out`` must be C-contiguous in the file's dtype. Each ascending stretch
        of rows is one ``preadv``: runs of consecutive rows land in their place
        in ``out``, gaps of up to 8 unwanted rows are read into a scratch buffer.
        """
        n = rows.shape[0]
        if n == 0:
            return
        if not out.flags.c_contiguous or out.dtype != self.dtype:
            raise ValueError("out must be a C-contiguous array of the matrix dtype")
        buf = memoryview(out.reshape(-1).view(np.uint8))
        rb = self.row_bytes
        step = np.diff(rows)
        brk = np.flatnonzero(step != 1)  # a run of consecutive rows ends after each of these
        starts = [0] + (brk + 1).tolist()
        ends = (brk + 1).tolist() + [n]
        gaps = (step[brk] - 1).tolist()  # unwanted rows after each run but the last (< 0: a jump back)
        iov: list[memoryview] = []
        pos, nbytes = self.offset + int(rows[0]) * rb, 0
        for j, (s, e) in enumerate(zip(starts, ends)):
            iov.append(buf[s * rb : e * rb])
            nbytes += (e - s) * rb
            if j == len(gaps):
                break
            g = gaps[j]
            if 0 <= g <= _MAX_GAP_ROWS and len(iov) < _IOV_MAX - 1:
                iov.append(self._discard_view[: g * rb])
                nbytes += g * rb
            else:
                self._preadv(iov, pos, nbytes)
                pos, iov, nbytes = self.offset + int(rows[e]) * rb, [], 0
        self._preadv(iov, pos, nbytes)

    def _preadv(self, iov: list[memoryview], pos: int, nbytes: int) -> None:
        while True:
            got = os.preadv(self._fd, iov, pos)
            if got == nbytes:
                return
            if got <= 0:
                raise OSError(f"{self.path}: unexpected end of file")
            # Short read (a signal, a network filesystem): continue after what arrived.
            rest, skip = [], got
            for v in iov:
                if skip >= len(v):
                    skip -= len(v)
                    continue
                rest.append(v[skip:])
                skip = 0
            iov, pos, nbytes = rest, pos + got, nbytes - got

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        """Read rows ``start:stop`` into ``out[:stop-start]``."""
        if stop > start:
            self._preadv([memoryview(out.reshape(-1).view(np.uint8))[: (stop - start) * self.row_bytes]],
                         self.offset + start * self.row_bytes, (stop - start) * self.row_bytes)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "MatrixReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """Row numbers (sorted, int64) of the training and validation rows of a matrix."""

    train: np.ndarray
    val: np.ndarray
    n_rows: int
    seed: int
    val_fraction: float
    max_samples: int  # 0 = all rows

    def save(self, path: str) -> None:
        """Write as `.npz` (atomically: temporary name, then rename)."""
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, train=self.train, val=self.val, n_rows=np.int64(self.n_rows), seed=np.int64(self.seed),
                     val_fraction=np.float64(self.val_fraction), max_samples=np.int64(self.max_samples))


def make_split(n_rows: int, val_fraction: float, seed: int, max_samples: int = 0) -> Split:
    """A seeded random split of rows (of a random subset of ``max_samples`` rows when > 0)."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if max_samples and max_samples < n_rows:
        used = rng.choice(n_rows, size=max_samples, replace=False)
    else:
        used = rng.permutation(n_rows)
    n_val = max(1, int(round(val_fraction * used.shape[0])))
    val = np.sort(used[:n_val]).astype(np.int64)
    train = np.sort(used[n_val:]).astype(np.int64)
    return Split(train, val, n_rows, seed, float(val_fraction), int(max_samples))


def load_split(run_dir: str) -> Split:
    """The split saved in a run folder (``RUN_DIR/split.npz``)."""
    path = os.path.join(run_dir, SPLIT_FILE)
    try:
        with np.load(path, allow_pickle=False) as z:
            return Split(z["train"].astype(np.int64), z["val"].astype(np.int64), int(z["n_rows"]), int(z["seed"]),
                         float(z["val_fraction"]), int(z["max_samples"]))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (not a train_vae run folder?)") from None
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: not a readable split ({e})") from None


# --------------------------------------------------------------------------- checks


def check_values(reader: MatrixReader, rows: np.ndarray | None = None, chunk_rows: int = 4096,
                 progress: Callable[[int], None] | None = None) -> None:
    """Fail with one line if any of ``rows`` (all when None) holds NaN, Inf or a negative value.

    Reads in bounded chunks; reports how many values are bad and the first bad row.
    """
    buf = aligned_empty((chunk_rows, reader.shape[1]), reader.dtype)
    n_bad_finite = n_negative = 0
    first_bad: int | None = None
    total = reader.n_rows if rows is None else rows.shape[0]
    for start in range(0, total, chunk_rows):
        stop = min(total, start + chunk_rows)
        if rows is None:
            reader.read_range(start, stop, buf)
            numbers = None
        else:
            numbers = rows[start:stop]
            reader.read(numbers, buf)
        x = buf[: stop - start]
        not_finite = ~np.isfinite(x)
        negative = x < 0  # False for NaN
        nf, nn = int(not_finite.sum()), int(negative.sum())
        if nf or nn:
            n_bad_finite += nf
            n_negative += nn
            if first_bad is None:
                i = int(np.flatnonzero((not_finite | negative).any(axis=1))[0])
                first_bad = start + i if numbers is None else int(numbers[i])
        if progress is not None:
            progress(stop - start)
    if n_bad_finite or n_negative:
        what = []
        if n_bad_finite:
            what.append(f"{n_bad_finite:,} NaN/Inf value{'s' if n_bad_finite > 1 else ''}")
        if n_negative:
            what.append(f"{n_negative:,} negative value{'s' if n_negative > 1 else ''}")
        raise InputError(f"{reader.path}: {' and '.join(what)} (first in row {first_bad}); "
                         "k-mer frequencies must be finite and >= 0")


# --------------------------------------------------------------------------- batching


class BatchPlan:
    """Which rows make each batch of an epoch.

    ``rows`` (sorted row numbers) are cut into blocks of ``block_rows``; with
    ``shuffle`` the block order is a permutation seeded by (seed, epoch), and
    batch b is rows b*batch_size .. (b+1)*batch_size of the blocks laid end to
    end. Without it, batches are the rows in order (validation).
    """

    def __init__(self, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_remainder: bool = True, block_rows: int = BLOCK_ROWS):
        self.rows = rows
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.block_rows = int(block_rows)
        n = rows.shape[0]
        self.steps = n // self.batch_size if drop_remainder else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[list[np.ndarray]]:
        """For each batch of ``epoch``: its pieces, each a sorted array of row numbers."""
        n, bs, br = self.rows.shape[0], self.batch_size, self.block_rows
        if not self.shuffle:
            for b in range(self.steps):
                yield [self.rows[b * bs : min(n, (b + 1) * bs)]]
            return
        n_blocks = -(-n // br)
        order = np.random.default_rng([self.seed, epoch]).permutation(n_blocks)
        sizes = np.full(n_blocks, br, dtype=np.int64)
        sizes[-1] = n - br * (n_blocks - 1)
        ends = np.cumsum(sizes[order])  # end of each block in the epoch's order
        j = 0
        for b in range(self.steps):
            start, stop = b * bs, min(n, (b + 1) * bs)
            pieces, pos = [], start
            while pos < stop:
                while ends[j] <= pos:
                    j += 1
                blk = int(order[j])
                block_start = ends[j] - sizes[blk]
                take = min(int(ends[j]), stop) - pos
                lo = blk * br + (pos - int(block_start))
                pieces.append(self.rows[lo : lo + take])
                pos += take
            yield pieces


def parse_length_range(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` -> (MIN, MAX) with 1 <= MIN <= MAX; ValueError with a one-line reason."""
    parts = str(text).split(":")
    try:
        lo, hi = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise ValueError(f"expected MIN:MAX lengths in bp with 1 <= MIN <= MAX (e.g. 1000:10000), got {text!r}")
    return lo, hi


@dataclass(frozen=True)
class Denoiser:
    """Replace part of a batch by the profiles the same sequences would show if they were only L bp long.

    For ``round(fraction x batch)`` rows chosen at random, L is drawn
    log-uniformly in [min_len, min(max_len, row length)] (rows shorter than
    min_len stay clean); each k-mer group k in ``ks`` then gets
    ``n = L - k + 1`` k-mers drawn from a multinomial with the row's
    frequencies, normalised to sum 1. Column 0 becomes L. Groups not in ``ks``
    (not read by the model) are left as they are, which saves their cost.

    Deterministic: the random stream of batch b of epoch e is seeded by
    (seed, e, b), so a resumed run sees the same noise as an uninterrupted one.
    """

    min_len: int
    max_len: int
    fraction: float = 0.5
    seed: int = 0
    ks: tuple[int, ...] = K_ORDER

    def __call__(self, rows: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        """The noisy inputs of a batch of raw matrix rows (same shape and dtype; ``rows`` is not changed)."""
        out = rows.copy()
        n = rows.shape[0]
        # A stream of its own (the 3rd word): the block shuffle uses (seed, epoch).
        rng = np.random.default_rng([self.seed, epoch, batch, 0x6E6F6973])
        m = round(self.fraction * n)
        if m == 0:
            return out
        pick = np.sort(rng.choice(n, size=m, replace=False))
        length = rows[pick, LENGTH_COLUMN].astype(np.float64)
        keep = length >= self.min_len
        pick, length = pick[keep], length[keep]
        if pick.size == 0:
            return out
        hi = np.minimum(float(self.max_len), length)
        lo = math.log(self.min_len)
        short = np.floor(np.exp(lo + rng.random(pick.size) * (np.log(hi) - lo))).astype(np.int64)
        short = np.clip(short, self.min_len, hi.astype(np.int64))  # floor of exp(log(x)) may fall 1 below x
        out[pick, LENGTH_COLUMN] = short
        for k in self.ks:
            sl = GROUP_SLICES[k]
            p = rows[pick, sl].astype(np.float64)
            total = p.sum(axis=1)
            ok = total > 0  # an all-zero group (no valid k-mer) stays all zero
            p[ok] /= total[ok, None]
            # numpy's multinomial puts what the other categories leave into the last one: give empty rows n = 0.
            nk = np.where(ok, np.maximum(short - k + 1, 0), 0)
            counts = rng.multinomial(nk, p).astype(np.float64)
            s = counts.sum(axis=1)
            counts[s > 0] /= s[s > 0, None]
            out[pick, sl] = counts
        return out


class RowStream:
    """Batches of raw matrix rows, read ahead by worker threads in a deterministic order.

    With a ``denoiser`` each batch is a pair (noisy input, clean rows), the
    noise computed in the worker threads (NumPy releases the GIL there).
    """

    def __init__(self, reader: MatrixReader, plan: BatchPlan, workers: int = 2, prefetch: int | None = None,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None, denoiser: Denoiser | None = None):
        self.reader = reader
        self.plan = plan
        self.workers = max(1, int(workers))
        self.prefetch = prefetch or 2 * self.workers
        # Optional host-side transform (e.g. vae.transform.clr) run in the workers; None = raw rows.
        self.transform = transform
        self.denoiser = denoiser

    @property
    def steps(self) -> int:
        return self.plan.steps

    def _load(self, pieces: list[np.ndarray], epoch: int = 0, batch: int = 0):
        rows = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        out = aligned_empty((rows.shape[0], self.reader.shape[1]), self.reader.dtype)
        self.reader.read(rows, out)
        if self.denoiser is not None:
            noisy = self.denoiser(out, epoch, batch)
            return (noisy, out) if self.transform is None else (self.transform(noisy), self.transform(out))
        return out if self.transform is None else self.transform(out)

    def batches(self, first_epoch: int = 0, epochs: int | None = None, skip: int = 0) -> Iterator[np.ndarray]:
        """Batches of epochs ``first_epoch``, ``first_epoch + 1`` ... (forever when ``epochs`` is None).

        The first ``skip`` batches of ``first_epoch`` are left out without being read.
        """

        def jobs():
            e = first_epoch
            while epochs is None or e < first_epoch + epochs:
                for b, pieces in enumerate(self.plan.epoch(e)):
                    if e > first_epoch or b >= skip:
                        yield pieces, e, b
                e += 1

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vae-data")
        pending: deque = deque()
        try:
            for pieces, e, b in jobs():
                if len(pending) >= self.prefetch:
                    yield pending.popleft().result()
                pending.append(pool.submit(self._load, pieces, e, b))
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def tf_dataset(stream: RowStream, first_epoch: int = 0, epochs: int | None = None, skip: int = 0):
    """A ``tf.data.Dataset`` over :meth:`RowStream.batches` (infinite when ``epochs`` is None)."""
    import tensorflow as tf

    probe = stream.transform(np.zeros((1, stream.reader.shape[1]), stream.reader.dtype)) if stream.transform else None
    width = probe.shape[1] if probe is not None else stream.reader.shape[1]
    dtype = probe.dtype if probe is not None else stream.reader.dtype
    spec = tf.TensorSpec(shape=(None, width), dtype=tf.as_dtype(dtype))
    ds = tf.data.Dataset.from_generator(
        lambda: stream.batches(first_epoch, epochs, skip),
        # Denoising: (noisy input, clean target) pairs, which Keras' fit reads as (x, y).
        output_signature=(spec, spec) if stream.denoiser is not None else spec,
    )
    return ds.prefetch(2)
