"""Synthetic genomes with distinct composition, for tests and the demo when real genomes are absent.

Each genome is a seeded order-3 Markov chain whose transition probabilities are
drawn around its own GC content, so genomes differ in 1- to 6-mer composition
the way real ones do (in GC and in higher-order biases).
"""
from __future__ import annotations

import gzip
from typing import Sequence

import numba
import numpy as np

_ORDER = 3
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def random_genome(length: int, seed: int, gc: float | None = None, concentration: float = 3.0) -> str:
    """A genome of ``length`` bases from a seeded order-3 Markov chain with its own composition."""
    rng = np.random.default_rng(seed)
    gc = rng.uniform(0.3, 0.7) if gc is None else gc
    base_p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    trans = rng.dirichlet(base_p * 4 * concentration, size=4**_ORDER)  # (64, 4)
    cum = np.cumsum(trans, axis=1)
    out = _walk(cum, rng.random(length), int(rng.integers(4**_ORDER)))
    return _BASES[out].tobytes().decode()


@numba.njit(cache=True)
def _walk(cum, u, state):
    out = np.empty(u.shape[0], dtype=np.uint8)
    mask = cum.shape[0] - 1
    for i in range(u.shape[0]):
        x = u[i] * cum[state, 3]
        b = 0
        while b < 3 and x >= cum[state, b]:
            b += 1
        out[i] = b
        state = ((state << 2) | b) & mask
    return out


def fragments(genome: str, n: int, min_len: int, max_len: int, seed: int) -> list[str]:
    """``n`` random fragments of lengths in [min_len, max_len] (random strand)."""
    rng = np.random.default_rng(seed)
    comp = str.maketrans("ACGT", "TGCA")
    out = []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, max(1, len(genome) - length)))
        frag = genome[start : start + length]
        out.append(frag.translate(comp)[::-1] if rng.random() < 0.5 else frag)
    return out


def write_fasta(path: str, records: Sequence[tuple[str, str]], width: int = 80) -> None:
    """Write (id, sequence) records as FASTA (gzipped when ``path`` ends with .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as fh:
        for rid, seq in records:
            fh.write(f">{rid}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i : i + width] + "\n")
