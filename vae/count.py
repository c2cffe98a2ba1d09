"""The counting pipeline behind ``calculate_kmer_frequencies``: FASTA files -> k-mer matrix + IDs.

The main thread reads (and decompresses) blocks of whole records; worker
threads parse and count them in compiled code that releases the GIL; rows are
written in input order to a temporary file beside the output, renamed into
place when complete. At most ``2 * threads`` blocks are in flight, so memory
does not grow with the input. With one thread there is no pool: the main thread
reads, parses and counts each block in turn.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import InputError
from .fasta import BLOCK_SIZE, iter_blocks, parse_block
from .kmers import K_MAX, N_COLUMNS, count_valid, profiles
from .matrix import FLOAT16_MAX, NpyStreamWriter, atomic_text, check_output_dir, commit_together


#: Reads shrink where records are short so that a block holds about this many
#: (4 << 20 bytes hold ~14,000 records of 300 bp: 150 MB of float32 rows). With at
#: most 2 * threads + 1 blocks in flight, rows in memory stay ~11 MB per block.
MAX_ROWS_PER_BLOCK = 1024
#: A record with fewer than this fraction of A/C/G/T/N letters is not nucleotide sequence (protein: ~25%):
#: the input is refused rather than counted into meaningless rows.
MIN_NUCLEOTIDE_FRACTION = 0.5


@dataclass
class CountOptions:
    """What to count and how (the command-line options of ``calculate_kmer_frequencies``)."""

    min_length: int = 0
    chop: int = 0  # L of --chop L, or MIN of --chop MIN:MAX
    chop_max: int = 0  # MAX of --chop MIN:MAX (0: --chop L)
    seed: int = 42  # of the random piece lengths of --chop MIN:MAX
    keep_full: bool = False
    threads: int = 0
    dtype: str = "float32"
    block_size: int = BLOCK_SIZE


@dataclass
class CountStats:
    """What the run saw; printed as the one-line summary."""

    records: int = 0
    rows: int = 0
    bases: int = 0
    input_bytes: int = 0
    skipped_short: int = 0
    empty_records: int = 0  # no A/C/G/T base at all (no sequence, or only N): a zero row
    duplicate_ids: int = 0  # rows whose ID an earlier row already has (duplicate FASTA headers)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mbps = self.bases / 1e6 / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"{self.records:,} sequences",
            f"{self.rows:,} rows",
            f"{self.bases / 1e6:,.1f} Mbp",
            f"{self.seconds:.2f} s ({mbps:,.0f} Mbp/s)",
        ]
        if self.skipped_short:
            parts.append(f"{self.skipped_short:,} shorter than --min-length skipped")
        if self.empty_records:
            parts.append(f"{self.empty_records:,} with no A/C/G/T base (zero rows)")
        if self.duplicate_ids:
            parts.append(f"warning: {self.duplicate_ids:,} duplicate IDs (rows kept; IDs no longer identify rows uniquely)")
        return ", ".join(parts)


def chop_pieces(length: int, chop: int) -> list[tuple[int, int]]:
    """floor(length/chop) equal pieces of a sequence, each >= chop (empty list when shorter than chop)."""
    n = length // chop
    if n == 0:
        return []
    bounds = [(i * length) // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


def parse_chop(text: str) -> tuple[int, int]:
    """``--chop``: ``"L"`` -> (L, 0); ``"MIN:MAX"`` -> (MIN, MAX); InputError with a one-line reason."""
    parts = str(text).split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1 and values[0] >= 0:
        return values[0], 0
    if len(values) == 2 and 1 <= values[0] <= values[1]:
        return values[0], values[1]
    raise InputError(f"--chop takes L or MIN:MAX with 1 <= MIN <= MAX (bp), got {text!r}")


def _tileable(r: int, lo: int, hi: int) -> bool:
    """Whether ``r`` bases can be cut into whole pieces of lengths in [lo, hi] (0 can: no piece)."""
    return r == 0 or (r >= lo and -(-r // hi) * lo <= r)


def random_pieces(length: int, lo: int, hi: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Consecutive pieces tiling ``length`` bases, of log-uniform random lengths in [lo, hi] (``--chop MIN:MAX``).

    As with :func:`chop_pieces`, no base is dropped and no piece is shorter than
    ``lo``; a sequence shorter than ``lo`` gives no piece (it is kept whole).
    Each length is drawn log-uniformly; where it would leave an end that cannot
    be cut into pieces of [lo, hi] (e.g. 300 bases), it moves to the nearest
    length that can (mostly the last piece takes the end). Only a length that
    cannot be tiled at all (possible when hi < 2 lo, e.g. 1,700 bases at
    1000:1500) ends with one longer piece, shorter than hi + lo.
    """
    pieces: list[tuple[int, int]] = []
    pos, log_lo, log_span = 0, math.log(lo), math.log(hi + 1) - math.log(lo)
    while length - pos >= lo:
        rest = length - pos
        size = min(hi, rest, max(lo, int(math.exp(log_lo + rng.random() * log_span))))
        left = rest - size
        if not _tileable(left, lo, hi):
            m = -(-left // hi)  # left lies in the gap between (m-1) pieces of hi and m pieces of lo
            ok = [r for r in ((m - 1) * hi, m * lo) if lo <= rest - r <= hi and _tileable(r, lo, hi)]
            if ok:
                left = min(ok, key=lambda r: abs(r - left))
            elif rest - hi >= lo:  # untileable length: go on with a full piece, the end comes later
                left = rest - hi
            else:
                left = 0  # the end: one piece of up to hi + lo - 1
            size = rest - left
        pieces.append((pos, pos + size))
        pos += size
    return pieces


def record_rng(seed: int, record_id: str) -> np.random.Generator:
    """The random stream of one record: from the seed and its ID, so pieces do not depend on threads,
    blocks or the other records."""
    digest = hashlib.blake2b(record_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


@dataclass
class BlockResult:
    """One block's rows and their IDs, in input order, and what the block held."""

    ids: list[str]
    rows: np.ndarray
    records: int
    skipped_short: int
    bases: int
    empty_records: int
    input_bytes: int


def _check_nucleotides(block, record_bases: np.ndarray, name: str) -> None:
    """Refuse a record that is mostly letters other than A/C/G/T/N (protein, text): one line naming it."""
    lengths = block.seq_end - block.seq_start
    # Only records short of A/C/G/T are looked at again (N-rich DNA, or not DNA): real DNA costs nothing here.
    for i in np.flatnonzero(record_bases < lengths * MIN_NUCLEOTIDE_FRACTION).tolist():
        stop = int(block.header_start[i + 1]) if i + 1 < len(block) else len(block.buf)
        raw = bytes(block.buf[int(block.header_end[i]) : stop])
        nucleotides = int(record_bases[i]) + raw.count(b"N") + raw.count(b"n")
        if nucleotides < MIN_NUCLEOTIDE_FRACTION * int(lengths[i]):
            rid = block.ids()[i]
            raise InputError(f"{name}: record {rid} is not nucleotide sequence (only {nucleotides / lengths[i]:.0%} of its "
                             f"letters are A/C/G/T/N, less than {MIN_NUCLEOTIDE_FRACTION:.0%}; protein?): nothing written")


def _count_block(buf: bytes, name: str, opts: CountOptions) -> BlockResult:
    block = parse_block(buf, name)
    record_bases = count_valid(block.codes, block.seq_start, block.seq_end)  # A/C/G/T bases a record
    _check_nucleotides(block, record_bases, name)
    starts: list[int] = []
    stops: list[int] = []
    row_ids: list[str] = []
    skipped = bases = empty = 0
    for rid, s, e, nb in zip(block.ids(), block.seq_start.tolist(), block.seq_end.tolist(), record_bases.tolist()):
        if e - s < opts.min_length:
            skipped += 1
            continue
        bases += nb
        empty += nb == 0
        if opts.chop_max:
            pieces = random_pieces(e - s, opts.chop, opts.chop_max, record_rng(opts.seed, rid)) if e - s >= opts.chop else []
        else:
            pieces = chop_pieces(e - s, opts.chop) if opts.chop else []
        if not pieces or opts.keep_full:
            starts.append(s)
            stops.append(e)
            row_ids.append(rid)
        for p, (a, b) in enumerate(pieces, 1):
            starts.append(s + a)
            stops.append(s + b)
            row_ids.append(f"{rid}.{p}")
    rows = profiles(block.codes, np.array(starts, dtype=np.int64), np.array(stops, dtype=np.int64))
    if opts.dtype == "float16":
        # float16 tops out at 65504: the length column saturates there rather than becoming inf.
        np.minimum(rows[:, 0], FLOAT16_MAX, out=rows[:, 0])
        rows = rows.astype(np.float16)
    return BlockResult(row_ids, rows, len(block), skipped, bases, empty, len(buf))


def _keep_freed_memory() -> None:
    """glibc: keep freed block buffers in the heap for the next blocks (once per process).

    Each block allocates a few MB (the block, its codes, its rows) and frees them when
    written. By default glibc hands such sizes back to the kernel (mmap, or trimming
    the heap top), so every block pays ~1,000 fresh page faults per 4 MB (~7 us each
    on a VM: 0.1-0.2 s per 200 Mbp, and faults of one process's threads serialise).
    Fixed thresholds keep the memory for reuse; the process still returns it above
    256 MB of free heap. Nothing happens on other C libraries.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks come from the heap, not from mmap
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: and are reused rather than handed back


_MALLOC_TUNED = False


class _InlineExecutor:
    """``--threads 1``: each block is counted in the calling thread as soon as it is read,
    so one thread means one core (a reader thread beside one worker would use up to two)."""

    def submit(self, fn, *args) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except Exception as e:  # raised when drained, in order, as from the pool
            f.set_exception(e)
        return f

    def __enter__(self) -> "_InlineExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None


def check_options(inputs: Sequence[str], opts: CountOptions) -> None:
    """Fail early, with one clear line, on options or inputs that cannot work."""
    if opts.dtype not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or float16, not {opts.dtype}")
    if opts.chop < 0 or opts.min_length < 0:
        raise InputError("--chop and --min-length must be >= 0")
    if 0 < opts.chop < K_MAX:
        raise InputError(f"--chop {opts.chop} is shorter than the longest k-mer ({K_MAX}): pieces would have no {K_MAX}-mers "
                         "(and the matrix one 11 kB row per few bases); use a length of at least a few hundred bases")
    if opts.keep_full and not opts.chop:
        raise InputError("--keep-full only makes sense with --chop")
    if opts.chop_max and not 1 <= opts.chop <= opts.chop_max:
        raise InputError(f"--chop MIN:MAX needs 1 <= MIN <= MAX, got {opts.chop}:{opts.chop_max}")
    if opts.chop_max < 0:
        raise InputError("--chop MAX must be >= 1")
    if opts.seed < 0:
        raise InputError(f"--seed must be >= 0, got {opts.seed}")
    if sum(1 for p in inputs if p == "-") > 1:
        raise InputError("stdin ('-') can be given only once")
    for p in inputs:
        if p != "-" and not os.path.exists(p):
            raise InputError(f"{p}: no such file")


def iter_counted(inputs: Sequence[str], opts: CountOptions, stats: CountStats,
                 progress: Callable[[int, int, int], None] | None = None) -> Iterator[BlockResult]:
    """Count every input in order, yielding each block's rows and IDs in input order; updates ``stats``.

    At most ``2 * threads`` blocks are in flight, so memory does not grow with the
    input. ``stats.seconds`` is set when the generator is exhausted.
    """
    check_options(inputs, opts)
    threads = opts.threads or os.cpu_count() or 1
    _keep_freed_memory()
    # Load the compiled kernels (numba's cache, ~0.3 s) before the clock starts, so the
    # summary's rate is the counting rate; the whole command's time includes it anyway.
    _count_block(bytearray(b">warm-up\nACGTACGT\n"), "warm-up", opts)
    t0 = time.perf_counter()
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="count") if threads > 1 else _InlineExecutor()
    id_hashes: list[np.ndarray] = []  # 8 bytes an ID, to count duplicate headers at the end
    with executor as pool:
        pending: deque = deque()

        def done(limit: int) -> Iterator[BlockResult]:
            while len(pending) > limit:
                r: BlockResult = pending.popleft().result()
                stats.records += r.records
                stats.rows += len(r.ids)
                stats.skipped_short += r.skipped_short
                stats.bases += r.bases
                stats.empty_records += r.empty_records
                stats.input_bytes += r.input_bytes
                id_hashes.append(np.fromiter((hash(i) for i in r.ids), np.int64, len(r.ids)))
                if progress is not None:
                    progress(r.records, r.bases, r.input_bytes)
                yield r

        try:
            for path in inputs:
                name = "stdin" if path == "-" else path
                for buf in iter_blocks(path, opts.block_size, max_records=MAX_ROWS_PER_BLOCK):
                    pending.append(pool.submit(_count_block, buf, name, opts))
                    yield from done(2 * threads)
            yield from done(0)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    stats.seconds = time.perf_counter() - t0
    if id_hashes:
        all_hashes = np.concatenate(id_hashes)
        stats.duplicate_ids = int(all_hashes.size - np.unique(all_hashes).size)


def count_files(
    inputs: Sequence[str],
    ids_path: str,
    matrix_path: str,
    opts: CountOptions,
    progress: Callable[[int, int, int], None] | None = None,
) -> CountStats:
    """Count every input in order into ``matrix_path`` (N, 2773) and ``ids_path``; returns stats."""
    check_options(inputs, opts)
    check_output_dir(matrix_path)
    check_output_dir(ids_path)
    stats = CountStats(files=list(inputs))
    # Matrix and IDs appear together or not at all (issue 10).
    with commit_together(), NpyStreamWriter(matrix_path, N_COLUMNS, np.dtype(opts.dtype)) as writer, \
            atomic_text(ids_path) as id_fh:
        for block in iter_counted(inputs, opts, stats, progress):
            writer.write(block.rows)
            id_fh.writelines(i + "\n" for i in block.ids)
        if stats.rows == 0:
            raise InputError("no sequences were counted (all inputs empty or shorter than --min-length)")
        writer.commit()
    return stats
