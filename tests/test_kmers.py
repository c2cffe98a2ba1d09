"""The counting kernel against an independent naive count, and the invariants of the matrix contract."""
from __future__ import annotations

import gzip
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vae import kmers

COMP = str.maketrans("ACGTacgt", "TGCAtgca")


def revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


def naive_row(seq: str) -> np.ndarray:
    """Reference profile written from the contract alone: slide a window, skip windows with non-ACGT."""
    seq = seq.upper()
    row = np.zeros(2773)
    row[0] = sum(ch in "ACGT" for ch in seq)
    col = 1
    for k in (6, 5, 4, 3, 2, 1):
        canon = sorted({min("".join(p), revcomp("".join(p))) for p in itertools.product("ACGT", repeat=k)})
        counts = Counter()
        for i in range(len(seq) - k + 1):
            w = seq[i : i + k]
            if set(w) <= set("ACGT"):
                counts[min(w, revcomp(w))] += 1
        total = sum(counts.values())
        for j, km in enumerate(canon):
            row[col + j] = counts[km] / total if total else 0.0
        col += len(canon)
    assert col == 2773
    return row


def test_layout_matches_design():
    assert kmers.N_COLUMNS == 2773
    assert [(s.start, s.stop - 1) for s in kmers.GROUP_SLICES.values()] == [
        (1, 2080), (2081, 2592), (2593, 2728), (2729, 2760), (2761, 2770), (2771, 2772)]
    names = kmers.column_names()
    assert names[1] == "AAAAAA" and names[2771:] == ["A", "C"] and names[2761] == "AA"


def random_seq(rng: np.random.Generator, n: int, alphabet: str = "ACGTacgtNnRY-", p=None) -> str:
    return "".join(rng.choice(list(alphabet), size=n, p=p))


D = kmers.DIRECT_COUNT_MAX  # both counting paths, and the switch between them


@pytest.mark.parametrize("length", [0, 1, 5, 6, 7, 40, D - 1, D, D + 1, 1500, 4000])
def test_counts_equal_naive_reference(length):
    rng = np.random.default_rng(length)
    weights = np.array([8, 8, 8, 8, 3, 3, 3, 3, 1, 1, 0.3, 0.3, 0.3])
    seq = random_seq(rng, length, p=weights / weights.sum())
    np.testing.assert_allclose(kmers.profile(seq, dtype=np.float64), naive_row(seq), rtol=0, atol=1e-12)


def test_counts_equal_naive_reference_on_real_genome(genomes_dir):
    with gzip.open(genomes_dir / "Blochmannia_floridanus.fna.gz", "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    for start, length in [(0, 3000), (100_000, 12_345), (500_000, 800)]:
        piece = seq[start : start + length]
        np.testing.assert_allclose(kmers.profile(piece, dtype=np.float64), naive_row(piece), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ACGTNacgt", min_size=0, max_size=3000))
def test_reverse_complement_invariance(seq):
    np.testing.assert_allclose(kmers.profile(seq, np.float64), kmers.profile(revcomp(seq), np.float64), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ACGTNRYacgtn", min_size=0, max_size=2500))
def test_every_group_sums_to_one_or_zero(seq):
    row = kmers.profile(seq, np.float64)
    for k, sl in kmers.GROUP_SLICES.items():
        total = row[sl].sum()
        has_kmer = any(set(seq[i : i + k].upper()) <= set("ACGT") for i in range(len(seq) - k + 1))
        assert total == pytest.approx(1.0 if has_kmer else 0.0, abs=1e-9)


def test_n_breaks_kmers_rather_than_joining_pieces():
    # Deleting the N would invent the 6-mer AAACCC; breaking at it must not.
    row = kmers.profile("AAANCCC", np.float64)
    assert row[0] == 6
    assert row[kmers.GROUP_SLICES[6]].sum() == 0  # no 6-mer survives
    assert row[kmers.GROUP_SLICES[4]].sum() == 0
    three = dict(zip(kmers.canonical_kmers(3), row[kmers.GROUP_SLICES[3]]))
    assert three["AAA"] == 0.5 and three["CCC"] == 0.5 and "GGG" not in three


def test_lowercase_equals_uppercase():
    rng = np.random.default_rng(3)
    s = random_seq(rng, 3000, "ACGTN")
    np.testing.assert_array_equal(kmers.profile(s), kmers.profile(s.lower()))
