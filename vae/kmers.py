"""Canonical k-mer index, the column layout of the k-mer matrix, and the counting kernel.

This module is the single owner of the matrix contract (DESIGN.md):

* column 0: sequence length in A/C/G/T bases;
* then one group per k in ``K_ORDER`` = (6, 5, 4, 3, 2, 1), each group the
  canonical k-mers of that size in lexicographic order, normalised to sum to 1
  (all zeros when the sequence has no valid k-mer of that size).

The kernel works on 2-bit codes (A=0, C=1, G=2, T=3, anything else = 4, which
breaks k-mers). It counts raw 6-mers with a rolling code and derives the
shorter k-mers from them: every k-mer of a run is the prefix of the 6-mer that
starts at the same position, except those in the last five bases of the run,
which are counted directly. That keeps the inner loop to one increment per base.
"""
from __future__ import annotations

import itertools
import sys
import threading

import numba
import numpy as np

_numba_lock = threading.Lock()
_numba_ready = False


def prepare_numba() -> None:
    """Call before the first compiled kernel runs (cheap afterwards): spares ~0.3 s of start-up.

    numba's first compile or cache load imports numba.np.arraymath, which imports all of
    scipy.linalg only to learn whether a BLAS is there for np.dot-based inner products
    (np.correlate/np.convolve) in jitted code. No kernel here uses them, so that probe is
    made with scipy.linalg hidden; numba then uses its own loops for those two functions,
    and scipy.linalg itself stays importable as usual.
    """
    global _numba_ready
    if _numba_ready:
        return
    with _numba_lock:
        if _numba_ready:
            return
        if "numba.np.arraymath" not in sys.modules and "scipy.linalg" not in sys.modules:
            sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # import -> ImportError
            try:
                import numba.np.arraymath  # noqa: F401
            except Exception:  # pragma: no cover - only a start-up optimisation
                pass
            finally:
                if sys.modules.get("scipy.linalg", 0) is None:
                    del sys.modules["scipy.linalg"]
        _numba_ready = True


K_MAX = 6
K_ORDER: tuple[int, ...] = (6, 5, 4, 3, 2, 1)
LENGTH_COLUMN = 0
ALPHABET = "ACGT"
INVALID_CODE = 4


def canonical_kmers(k: int) -> list[str]:
    """Canonical k-mers of size ``k`` (the smaller of k-mer and reverse complement), sorted."""
    comp = str.maketrans("ACGT", "TGCA")
    kmers = ("".join(p) for p in itertools.product(ALPHABET, repeat=k))
    return sorted({min(s, s.translate(comp)[::-1]) for s in kmers})


N_CANONICAL: dict[int, int] = {k: len(canonical_kmers(k)) for k in K_ORDER}


def _group_slices() -> dict[int, slice]:
    slices, start = {}, 1
    for k in K_ORDER:
        slices[k] = slice(start, start + N_CANONICAL[k])
        start += N_CANONICAL[k]
    return slices


#: Column slices of each k-mer group in the full matrix (length column included).
GROUP_SLICES: dict[int, slice] = _group_slices()
N_COLUMNS: int = 1 + sum(N_CANONICAL.values())  # 2773
N_FEATURES: int = N_COLUMNS - 1  # 2772: model input (length column dropped)
#: Slices of each group within the feature vector (columns 1.. of the matrix).
FEATURE_SLICES: dict[int, slice] = {
    k: slice(s.start - 1, s.stop - 1) for k, s in GROUP_SLICES.items()
}




def parse_k_range(text: str) -> tuple[int, int]:
    """``"A-B"`` (or ``"A"``) -> (A, B), a contiguous range of k within 1..6; ValueError with a one-line reason."""
    parts = str(text).strip().split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        lo = hi = 0
    if not (1 <= lo <= hi <= K_MAX):
        raise ValueError(f"expected a k range A-B with 1 <= A <= B <= {K_MAX} (e.g. 1-5), got {text!r}")
    return lo, hi


def feature_columns(ks) -> np.ndarray:
    """Indices into the 2772 features (matrix column - 1) of the k-mer groups ``ks``, in matrix order (int64)."""
    ks = set(ks)
    return np.concatenate([np.arange(s.start, s.stop) for k, s in FEATURE_SLICES.items() if k in ks]).astype(np.int64)


def groups_in(columns) -> dict[int, np.ndarray]:
    """For feature indices ``columns``: each k whose group they contain -> positions within ``columns``."""
    cols = np.asarray(columns, dtype=np.int64)
    out = {}
    for k, s in FEATURE_SLICES.items():
        pos = np.flatnonzero((cols >= s.start) & (cols < s.stop))
        if pos.size:
            out[k] = pos
    return out


def column_names() -> list[str]:
    """Human-readable column names: ``length`` then the canonical k-mers in matrix order."""
    return ["length"] + [km for k in K_ORDER for km in canonical_kmers(k)]


def _code_to_column(k: int) -> np.ndarray:
    """For every raw k-mer code (2 bits a base, first base highest), its canonical column (0-based within the group)."""
    index = {km: i for i, km in enumerate(canonical_kmers(k))}
    comp = str.maketrans("ACGT", "TGCA")
    out = np.empty(4**k, dtype=np.int64)
    for code, p in enumerate(itertools.product(ALPHABET, repeat=k)):
        s = "".join(p)
        out[code] = index[min(s, s.translate(comp)[::-1])]
    return out


# One flat lookup: raw code of a k-mer -> absolute matrix column.
# RAW_OFFSET[k] is where the 4**k raw codes of size k start in the flat arrays.
RAW_OFFSET = np.zeros(K_MAX + 1, dtype=np.int64)
_acc = 0
for _k in range(1, K_MAX + 1):
    RAW_OFFSET[_k] = _acc
    _acc += 4**_k
RAW_SIZE = _acc  # 5460
RAW_TO_COLUMN = np.empty(RAW_SIZE, dtype=np.int64)
for _k in range(1, K_MAX + 1):
    RAW_TO_COLUMN[RAW_OFFSET[_k] : RAW_OFFSET[_k] + 4**_k] = GROUP_SLICES[_k].start + _code_to_column(_k)
GROUP_BOUNDS = np.array([[GROUP_SLICES[k].start, GROUP_SLICES[k].stop] for k in K_ORDER], dtype=np.int64)

#: Byte -> 2-bit code (4 for anything that is not A/C/G/T, either case).
BYTE_TO_CODE = np.full(256, INVALID_CODE, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    BYTE_TO_CODE[_b] = _i
    BYTE_TO_CODE[_b + 32] = _i  # lowercase


def _gather_index() -> tuple[np.ndarray, np.ndarray]:
    """For every matrix column, the flat raw index of its k-mer and of its reverse complement.

    A column's count is ``cnt[COL_FWD[j]] + cnt[COL_RC[j]]``; palindromes (and the
    length column) point their second index at ``ZERO_SLOT``, a raw slot that is never
    counted, so nothing is counted twice.
    """
    # uint16: unsigned indices spare the compiled gather numba's negative-index wraparound.
    fwd = np.full(N_COLUMNS, ZERO_SLOT, dtype=np.uint16)
    rc = np.full(N_COLUMNS, ZERO_SLOT, dtype=np.uint16)
    for r in range(RAW_SIZE):
        j = RAW_TO_COLUMN[r]
        if fwd[j] == ZERO_SLOT:
            fwd[j] = r
        else:
            rc[j] = r
    return fwd, rc


#: Raw slot that always holds 0 (the raw count arrays have RAW_SIZE + 1 slots).
ZERO_SLOT = RAW_SIZE
COL_FWD, COL_RC = _gather_index()
#: Raw-code range [start, stop) of each group, in K_ORDER (the group totals are sums over it).
GROUP_RAW = np.array([[RAW_OFFSET[k], RAW_OFFSET[k] + 4**k] for k in K_ORDER], dtype=np.int64)


#: Up to this many bases a sequence is counted directly (up to six increments a base);
#: above it, one increment a base plus the prefix cascade (~1,400 additions) is cheaper.
#: Both paths give the same integer counts.
DIRECT_COUNT_MAX = 300


@numba.njit(nogil=True, cache=True)
def _profile(codes, words, start, stop, cnt, pref, col_fwd, col_rc, raw_offset, group_bounds, group_raw, out_row):
    """Write the profile of ``codes[start:stop]`` into ``out_row``.

    ``words`` is ``codes`` seen as uint64 (eight codes a word). ``cnt`` (RAW_SIZE + 1,
    last slot 0) receives the raw count of every k-mer code, ``pref`` (RAW_OFFSET[6])
    is scratch. Returns the number of A/C/G/T bases.
    """
    bit2 = np.uint64(0x0404040404040404)  # bit 2 of a code is set only for 4 (invalid)
    off6 = raw_offset[6]
    cnt[: off6 + 4096] = 0
    n_valid = 0
    if stop - start <= DIRECT_COUNT_MAX:
        code = 0
        run = 0  # length of the current run of valid bases
        for i in range(start, stop):
            c = codes[i]
            if c < 4:
                code = ((code << 2) | c) & 4095
                run += 1
                n_valid += 1
                top = run if run < 6 else 6
                for k in range(1, top + 1):
                    cnt[raw_offset[k] + (code & ((1 << (2 * k)) - 1))] += 1
            else:
                run = 0
                code = 0
    else:
        i = start
        while i < stop:
            # Skip characters that are not A/C/G/T; a run of valid bases starts at r0.
            while i < stop and codes[i] >= 4:
                i += 1
            if i >= stop:
                break
            r0 = i
            code = 0
            while i < stop and i - r0 < 5:
                c = codes[i]
                if c >= 4:
                    break
                code = (code << 2) | c
                i += 1
            if i - r0 == 5:
                # The hot loop: one 6-mer increment a base until the run ends. Up to the
                # next multiple of 8 base by base, then eight bases a word (one test for
                # an invalid code among them), then base by base again.
                while i < stop and (i & 7) != 0:
                    c = codes[i]
                    if c >= 4:
                        break
                    code = ((code << 2) | c) & 4095
                    cnt[off6 + code] += 1
                    i += 1
                if (i & 7) == 0:
                    while i + 8 <= stop:
                        w = words[i >> 3]
                        if (w & bit2) != np.uint64(0):
                            break
                        for t in range(8):
                            code = ((code << 2) | np.int64((w >> np.uint64(8 * t)) & np.uint64(3))) & 4095
                            cnt[off6 + code] += 1
                        i += 8
                while i < stop:
                    c = codes[i]
                    if c >= 4:
                        break
                    code = ((code << 2) | c) & 4095
                    cnt[off6 + code] += 1
                    i += 1
            run = i - r0
            n_valid += run
            # The run's k-mers (k <= 5) that are not the prefix of one of its 6-mers
            # lie in its last min(run, 5) bases: count those directly.
            tail = run if run < 5 else 5
            for k in range(1, tail + 1):
                mask = (1 << (2 * k)) - 1
                for j in range(tail - k + 1):
                    cnt[raw_offset[k] + ((code >> (2 * j)) & mask)] += 1
        # Prefix cascade: the k-prefix of every 6-mer is a k-mer at the same position,
        # so the (k)-prefix counts are sums of four (k+1)-prefix counts.
        off5 = raw_offset[5]
        for x in range(1024):
            b = off6 + 4 * x
            pref[off5 + x] = cnt[b] + cnt[b + 1] + cnt[b + 2] + cnt[b + 3]
        for k in range(4, 0, -1):
            lo = raw_offset[k]
            hi = raw_offset[k + 1]
            for x in range(1 << (2 * k)):
                b = hi + 4 * x
                pref[lo + x] = pref[b] + pref[b + 1] + pref[b + 2] + pref[b + 3]
        for r in range(off6):
            cnt[r] += pref[r]
    out_row[0] = n_valid
    for g in range(group_bounds.shape[0]):
        total = 0
        for r in range(group_raw[g, 0], group_raw[g, 1]):
            total += cnt[r]
        lo = group_bounds[g, 0]
        hi = group_bounds[g, 1]
        if total > 0:
            inv = 1.0 / total
            for j in range(lo, hi):
                out_row[j] = (cnt[col_fwd[j]] + cnt[col_rc[j]]) * inv
        else:
            for j in range(lo, hi):
                out_row[j] = 0.0
    return n_valid


@numba.njit(nogil=True, cache=True)
def _profiles(codes, words, starts, stops, col_fwd, col_rc, raw_offset, group_bounds, group_raw, out):
    cnt = np.zeros(raw_offset[6] + 4096 + 1, dtype=np.int64)
    pref = np.zeros(raw_offset[6], dtype=np.int64)
    for r in range(starts.shape[0]):
        _profile(codes, words, starts[r], stops[r], cnt, pref, col_fwd, col_rc, raw_offset, group_bounds, group_raw, out[r])


@numba.njit(nogil=True, cache=True)
def _count_valid(codes, words, starts, stops, out):
    # Codes are 0..4 and 4 (invalid) is the only one with bit 2 set, so eight codes at a
    # time: add bit 2 of each byte into byte lanes (at most 255 words, so no lane
    # overflows), then sum the lanes.
    ones = np.uint64(0x0101010101010101)
    lo16 = np.uint64(0x00FF00FF00FF00FF)
    sum16 = np.uint64(0x0001000100010001)
    for r in range(starts.shape[0]):
        a = starts[r]
        b = stops[r]
        wa = (a + 7) // 8
        wb = b // 8
        n = 0
        if wb - wa < 4:
            for i in range(a, b):
                n += codes[i] < 4
            out[r] = n
            continue
        for i in range(a, wa * 8):
            n += codes[i] < 4
        for i in range(wb * 8, b):
            n += codes[i] < 4
        invalid = 0
        k = wa
        while k < wb:
            stop = min(k + 255, wb)
            acc = np.uint64(0)
            for q in range(k, stop):
                acc += (words[q] >> np.uint64(2)) & ones
            acc = (acc & lo16) + ((acc >> np.uint64(8)) & lo16)
            invalid += np.int64((acc * sum16) >> np.uint64(48))
            k = stop
        out[r] = n + (wb - wa) * 8 - invalid


def profiles(codes: np.ndarray, starts: np.ndarray, stops: np.ndarray, dtype=np.float32) -> np.ndarray:
    """K-mer profiles (n, 2773) of the pieces ``codes[starts[i]:stops[i]]`` of a 2-bit code array.

    Releases the GIL, so several threads can count at once.
    """
    prepare_numba()
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    stops = np.ascontiguousarray(stops, dtype=np.int64)
    out = np.empty((starts.shape[0], N_COLUMNS), dtype=dtype)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    words = codes[: codes.shape[0] // 8 * 8].view(np.uint64)
    _profiles(codes, words, starts, stops, COL_FWD, COL_RC, RAW_OFFSET, GROUP_BOUNDS, GROUP_RAW, out)
    return out


def count_valid(codes: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Number of A/C/G/T bases (codes < 4) in each piece ``codes[starts[i]:stops[i]]`` (int64)."""
    prepare_numba()
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    stops = np.ascontiguousarray(stops, dtype=np.int64)
    out = np.empty(starts.shape[0], dtype=np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    _count_valid(codes, codes[: codes.shape[0] // 8 * 8].view(np.uint64), starts, stops, out)
    return out


def encode(seq: str | bytes) -> np.ndarray:
    """2-bit codes of a sequence (A/C/G/T either case -> 0..3, anything else -> 4)."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", "replace")
    return BYTE_TO_CODE[np.frombuffer(seq, dtype=np.uint8)]


def profile(seq: str | bytes, dtype=np.float32) -> np.ndarray:
    """K-mer profile (2773,) of one sequence: the row ``calculate_kmer_frequencies`` writes for it."""
    codes = encode(seq)
    return profiles(codes, np.array([0]), np.array([codes.shape[0]]), dtype=dtype)[0]
