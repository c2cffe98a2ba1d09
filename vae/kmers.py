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

import numba
import numpy as np

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


#: Below this many bases a sequence is counted directly (six increments a base);
#: above it the prefix cascade's fixed cost (~10k operations) is cheaper.
DIRECT_COUNT_MAX = 1000


@numba.njit(nogil=True, cache=True)
def _profile(codes, start, stop, raw, pref, counts, raw_to_column, raw_offset, group_bounds, out_row):
    """Write the profile of ``codes[start:stop]`` into ``out_row``; ``raw``, ``pref``, ``counts`` are scratch."""
    counts[:] = 0
    n_valid = 0
    code = 0
    run = 0  # length of the current run of valid bases
    if stop - start <= DIRECT_COUNT_MAX:
        for i in range(start, stop):
            c = codes[i]
            if c < 4:
                code = ((code << 2) | c) & 4095
                run += 1
                n_valid += 1
                top = run if run < 6 else 6
                for k in range(1, top + 1):
                    counts[raw_to_column[raw_offset[k] + (code & ((1 << (2 * k)) - 1))]] += 1
            else:
                run = 0
                code = 0
    else:
        raw[:] = 0
        off6 = raw_offset[6]
        for i in range(start, stop + 1):
            c = codes[i] if i < stop else 4
            if c < 4:
                code = ((code << 2) | c) & 4095
                run += 1
                n_valid += 1
                if run >= 6:
                    raw[off6 + code] += 1
            elif run > 0:
                # Run ends: its k-mers (k <= 5) that are not the prefix of a 6-mer
                # lie in its last min(run, 5) bases; count those directly.
                tail = run if run < 5 else 5
                for k in range(1, tail + 1):
                    mask = (1 << (2 * k)) - 1
                    for j in range(tail - k + 1):
                        raw[raw_offset[k] + ((code >> (2 * j)) & mask)] += 1
                run = 0
                code = 0
        # Prefix cascade: the k-prefix of every 6-mer is a k-mer at the same position.
        pref[:] = 0
        pref[off6 : off6 + 4096] = raw[off6 : off6 + 4096]
        for k in range(5, 0, -1):
            hi = raw_offset[k + 1]
            lo = raw_offset[k]
            for c in range(1 << (2 * k + 2)):
                pref[lo + (c >> 2)] += pref[hi + c]
        for r in range(off6):
            counts[raw_to_column[r]] += raw[r] + pref[r]
        for r in range(off6, off6 + 4096):
            counts[raw_to_column[r]] += raw[r]
    out_row[0] = n_valid
    for g in range(group_bounds.shape[0]):
        lo = group_bounds[g, 0]
        hi = group_bounds[g, 1]
        total = 0
        for j in range(lo, hi):
            total += counts[j]
        if total > 0:
            inv = 1.0 / total
            for j in range(lo, hi):
                out_row[j] = counts[j] * inv
        else:
            for j in range(lo, hi):
                out_row[j] = 0.0
    return n_valid


@numba.njit(nogil=True, cache=True)
def _profiles(codes, starts, stops, raw_to_column, raw_offset, group_bounds, out):
    raw = np.zeros(raw_to_column.shape[0], dtype=np.int64)
    pref = np.zeros(raw_to_column.shape[0], dtype=np.int64)
    counts = np.zeros(out.shape[1], dtype=np.int64)
    for r in range(starts.shape[0]):
        _profile(codes, starts[r], stops[r], raw, pref, counts, raw_to_column, raw_offset, group_bounds, out[r])


def profiles(codes: np.ndarray, starts: np.ndarray, stops: np.ndarray, dtype=np.float32) -> np.ndarray:
    """K-mer profiles (n, 2773) of the pieces ``codes[starts[i]:stops[i]]`` of a 2-bit code array.

    Releases the GIL, so several threads can count at once.
    """
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    stops = np.ascontiguousarray(stops, dtype=np.int64)
    out = np.empty((starts.shape[0], N_COLUMNS), dtype=dtype)
    _profiles(codes, starts, stops, RAW_TO_COLUMN, RAW_OFFSET, GROUP_BOUNDS, out)
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
