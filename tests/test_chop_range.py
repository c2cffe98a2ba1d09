"""``calculate_kmer_frequencies --chop MIN:MAX --seed S``: random log-uniform pieces that tile each sequence."""
from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from vae import kmers
from vae.cli import calculate_kmer_frequencies
from vae.count import parse_chop, random_pieces
from vae.errors import InputError
from vae.simulate import random_genome, write_fasta

from .conftest import call_cli

RECORDS = [(f"chr{i}", random_genome(n, seed=i)) for i, n in enumerate((120_000, 45_000, 9_000, 2_500, 700))]


def _check_tiling(pieces, length, lo, hi):
    assert pieces[0][0] == 0 and pieces[-1][1] == length
    assert all(a[1] == b[0] for a, b in pairwise(pieces))
    assert all(lo <= b - a for a, b in pieces)


@pytest.mark.parametrize("lo,hi", [(1000, 10_000), (3000, 30_000), (1000, 2000), (500, 501)])
def test_pieces_tile_and_stay_in_bounds(lo, hi):
    rng = np.random.default_rng(0)
    lengths = list(range(lo, min(3 * hi, lo + 8000))) + rng.integers(lo, 200 * hi, 300).tolist()
    over = 0
    for n in lengths:
        p = random_pieces(int(n), lo, hi, rng)
        _check_tiling(p, n, lo, hi)
        # With hi >= 2 lo every length >= lo can be tiled within bounds; a piece longer than hi
        # only ends lengths that no tiling fits (then shorter than hi + lo).
        sizes = [b - a for a, b in p]
        if max(sizes) > hi:
            over += 1
            assert hi < 2 * lo and max(sizes) < hi + lo and not any(m * lo <= n <= m * hi for m in range(1, n // lo + 1))
    assert over == 0 or hi < 2 * lo
    assert random_pieces(lo - 1, lo, hi, rng) == []


def test_lengths_are_log_uniform():
    rng = np.random.default_rng(1)
    sizes = np.array([b - a for a, b in random_pieces(50_000_000, 1000, 100_000, rng)])
    u = (np.log(sizes) - math.log(1000)) / (math.log(100_001) - math.log(1000))
    assert sizes.size > 1000
    np.testing.assert_allclose(np.quantile(u, [0.1, 0.25, 0.5, 0.75, 0.9]), [0.1, 0.25, 0.5, 0.75, 0.9], atol=0.04)


def test_parse_chop():
    assert parse_chop("5000") == (5000, 0) and parse_chop("1000:50000") == (1000, 50000) and parse_chop("0") == (0, 0)
    for bad in ("5:3", "0:10", "-1", "a", "1:2:3", "1000:"):
        with pytest.raises(InputError, match="--chop takes L or MIN:MAX"):
            parse_chop(bad)


def _count(tmp_path: Path, fa: Path, *extra, name="out"):
    ids, mat = tmp_path / f"{name}.txt", tmp_path / f"{name}.npy"
    assert call_cli(calculate_kmer_frequencies, ["-i", fa, "-id", ids, "-k", mat, "--quiet", *extra]) == 0
    return np.load(mat), ids.read_text().splitlines()


@pytest.fixture
def fasta(tmp_path) -> Path:
    p = tmp_path / "g.fa"
    write_fasta(str(p), RECORDS)
    return p


def test_command_pieces_rows_and_ids(tmp_path, fasta, monkeypatch):
    m, ids = _count(tmp_path, fasta, "--chop", "1000:8000", "--seed", "7")
    by_record: dict[str, list[int]] = {}
    for i, rid in enumerate(ids):
        base, _, num = rid.rpartition(".")
        by_record.setdefault(base if num.isdigit() else rid, []).append(i)
    seqs = dict(RECORDS)
    assert list(by_record) == [r for r, _ in RECORDS]
    assert [ids[i] for i in by_record["chr4"]] == ["chr4"]  # 700 bp < MIN: kept whole, like --chop L
    for rid in ("chr0", "chr1", "chr2", "chr3"):
        rows = by_record[rid]
        assert [ids[i] for i in rows] == [f"{rid}.{j}" for j in range(1, len(rows) + 1)]
        lengths = m[rows, 0].astype(int)
        assert lengths.sum() == len(seqs[rid]) and lengths.min() >= 1000 and lengths.max() <= 8000
        # The rows are the profiles of consecutive pieces of the record.
        ends = np.cumsum(lengths)
        starts = ends - lengths
        j = len(rows) // 2
        np.testing.assert_array_equal(m[rows[j]], kmers.profile(seqs[rid][starts[j] : ends[j]]))
    # Same seed: same pieces, whatever the threads and the block boundaries; another seed: others.
    import vae.count

    monkeypatch.setattr(vae.count.CountOptions, "block_size", 3000)  # records span many reads, several blocks
    m2, ids2 = _count(tmp_path, fasta, "--chop", "1000:8000", "--seed", "7", "--threads", "2", name="t2")
    m3, ids3 = _count(tmp_path, fasta, "--chop", "1000:8000", "--seed", "7", "--threads", "1", name="t1")
    assert ids2 == ids3 == ids
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(m3, m)
    _, other = _count(tmp_path, fasta, "--chop", "1000:8000", "--seed", "8", name="s8")
    assert other != ids
    # A record's pieces depend on its ID and the seed only, not on the records before it.
    write_fasta(str(tmp_path / "one.fa"), RECORDS[1:2])
    _, alone = _count(tmp_path, tmp_path / "one.fa", "--chop", "1000:8000", "--seed", "7", name="alone")
    assert alone == [ids[i] for i in by_record["chr1"]]


def test_keep_full_and_errors(tmp_path, fasta, capsys):
    _, ids = _count(tmp_path, fasta, "--chop", "1000:8000", "--keep-full")
    assert ids[0] == "chr0" and ids[1] == "chr0.1"
    capsys.readouterr()
    for args, msg in ((["--chop", "8000:1000"], "--chop takes L or MIN:MAX"), (["--chop", "1000:8000", "--seed", "-1"],
                                                                             "--seed must be >= 0")):
        assert call_cli(calculate_kmer_frequencies, ["-i", fasta, "-id", tmp_path / "x.txt", "-k", tmp_path / "x.npy",
                                                     "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err and not (tmp_path / "x.npy").exists()
