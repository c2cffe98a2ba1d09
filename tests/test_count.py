"""`calculate_kmer_frequencies` as a user runs it: formats, options, and every kind of bad input."""
from __future__ import annotations

import errno
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vae import kmers
from vae.cli import calculate_kmer_frequencies
from vae.count import chop_pieces
from vae.matrix import NpyStreamWriter
from vae.simulate import random_genome, write_fasta

from .conftest import REPO, call_cli, run_cli

RECORDS = [
    ("contig_1", random_genome(5000, seed=1)),
    ("contig_2", random_genome(1200, seed=2)[:600] + "NNNNN" + random_genome(1200, seed=2)[600:]),
    ("contig_3", random_genome(30_000, seed=3)),
    ("tiny", "ACGTAC"),
]


def count(tmp_path: Path, *inputs, extra=(), name="out", quiet=True) -> tuple[np.ndarray, list[str], int]:
    ids, mat = tmp_path / f"{name}.txt", tmp_path / f"{name}.npy"
    status = call_cli(calculate_kmer_frequencies, ["-i", *inputs, "-id", ids, "-k", mat, *["--quiet"] * quiet, *extra])
    if status != 0:
        return None, None, status
    return np.load(mat), ids.read_text().splitlines(), status


def no_outputs(folder: Path) -> bool:
    """Nothing that looks like an output, and no temporary leftovers."""
    return not [p.name for p in folder.iterdir() if p.suffix in (".npy", ".txt") or ".tmp-" in p.name]


@pytest.fixture
def fasta(tmp_path) -> Path:
    p = tmp_path / "in" / "contigs.fa"
    p.parent.mkdir()
    write_fasta(str(p), RECORDS)
    return p


def test_rows_align_with_ids_and_equal_the_kernel(tmp_path, fasta):
    m, ids, _ = count(tmp_path, fasta)
    assert ids == [r for r, _ in RECORDS]
    assert m.shape == (4, 2773) and m.dtype == np.float32
    for row, (_, seq) in zip(m, RECORDS):
        np.testing.assert_array_equal(row, kmers.profile(seq))
    assert m[1, 0] == 1200  # the five Ns are not bases


def test_messy_formatting_gives_the_same_matrix(tmp_path, fasta):
    messy = tmp_path / "in" / "messy.fa"
    with open(messy, "wb") as fh:
        for rid, seq in RECORDS:
            fh.write(f">{rid} some description\there\r\n".encode())
            for i in range(0, len(seq), 61):
                fh.write(seq[i : i + 61].lower().encode() + b"\r\n")
        fh.write(b"\r\n")
    ref, ref_ids, _ = count(tmp_path, fasta, name="ref")
    m, ids, _ = count(tmp_path, messy)
    assert ids == ref_ids
    np.testing.assert_array_equal(m, ref)


def test_gzip_plain_stdin_and_file_order(tmp_path, fasta):
    gz = tmp_path / "in" / "contigs.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    ref, ref_ids, _ = count(tmp_path, fasta, name="ref")
    m, ids, _ = count(tmp_path, gz, fasta, name="two")
    assert ids == ref_ids + ref_ids
    np.testing.assert_array_equal(m, np.vstack([ref, ref]))
    proc = run_cli("calculate_kmer_frequencies", "-i", "-", "-id", tmp_path / "s.txt", "-k", tmp_path / "s.npy",
                   "--quiet", input=gz.read_bytes())
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), ref)


def test_blocks_never_split_records(tmp_path, fasta, monkeypatch):
    import vae.count

    ref, _, _ = count(tmp_path, fasta, name="ref")
    monkeypatch.setattr(vae.count.CountOptions, "block_size", 1000)  # records span many reads
    m, ids, _ = count(tmp_path, fasta, extra=["--threads", "2"])
    np.testing.assert_array_equal(m, ref)


@pytest.mark.parametrize("length,chop,expected", [(10, 3, [3, 3, 4]), (9, 3, [3, 3, 3]), (2, 3, []), (7, 7, [7])])
def test_chop_pieces(length, chop, expected):
    pieces = chop_pieces(length, chop)
    assert [b - a for a, b in pieces] == expected
    assert all(b - a >= chop for a, b in pieces)
    assert not pieces or (pieces[0][0] == 0 and pieces[-1][1] == length)


def test_chop_and_keep_full(tmp_path, fasta):
    m, ids, _ = count(tmp_path, fasta, extra=["--chop", "2000"])
    # 5000 -> 2 pieces; 1205 and 6 (< 2000) kept whole under their own IDs; 30000 -> 15.
    assert ids[:2] == ["contig_1.1", "contig_1.2"] and ids[2] == "contig_2"
    assert ids[3:18] == [f"contig_3.{i}" for i in range(1, 16)] and ids[18] == "tiny"
    seq = RECORDS[0][1]
    np.testing.assert_array_equal(m[0], kmers.profile(seq[:2500]))
    np.testing.assert_array_equal(m[1], kmers.profile(seq[2500:]))
    m2, ids2, _ = count(tmp_path, fasta, extra=["--chop", "2000", "--keep-full"], name="full")
    assert ids2[:3] == ["contig_1", "contig_1.1", "contig_1.2"]
    np.testing.assert_array_equal(m2[0], kmers.profile(seq))


def test_min_length_skips_and_reports(tmp_path, fasta, capsys):
    m, ids, _ = count(tmp_path, fasta, extra=["--min-length", "1205"], quiet=False)  # contig_2 is exactly 1205 long
    assert ids == ["contig_1", "contig_2", "contig_3"]
    assert "1 shorter than --min-length skipped" in capsys.readouterr().err


def test_float16(tmp_path, fasta):
    m, _, _ = count(tmp_path, fasta, extra=["--dtype", "float16"])
    ref, _, _ = count(tmp_path, fasta, name="ref")
    assert m.dtype == np.float16
    assert m[2, 0] == 30000 and np.isfinite(m).all()
    np.testing.assert_allclose(m[:, 1:], ref[:, 1:], atol=1e-3)


def test_records_without_bases_give_zero_rows_and_are_reported(tmp_path, capsys):
    p = tmp_path / "in.fa"
    p.write_text(">empty\n>only_n\nNNNNNNNN\n>ok\nACGTACGTAC\n")
    m, ids, _ = count(tmp_path, p, quiet=False)
    assert ids == ["empty", "only_n", "ok"]
    assert not m[:2].any() and m[2, 0] == 10
    assert "2 with no A/C/G/T base" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    line = err[-1]
    assert line.startswith("calculate_kmer_frequencies: error:"), line
    for w in words:
        assert w in line, line
    return line


def bad_run(tmp_path, capsys, path, *words, extra=()):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    status = call_cli(calculate_kmer_frequencies, ["-i", path, "-id", out / "ids.txt", "-k", out / "k.npy", "--quiet", *extra])
    assert status != 0
    one_line_error(capsys, *words)
    assert no_outputs(out)


def test_missing_input(tmp_path, capsys):
    bad_run(tmp_path, capsys, tmp_path / "nope.fa", "nope.fa", "no such file")


def test_directory_input(tmp_path, capsys):
    bad_run(tmp_path, capsys, tmp_path, "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_input(tmp_path, capsys):
    p = tmp_path / "secret.fa"
    p.write_text(">a\nACGT\n")
    p.chmod(0)
    bad_run(tmp_path, capsys, p, "permission denied")


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "empty.fa"
    p.write_bytes(b"")
    bad_run(tmp_path, capsys, p, "empty")


def test_text_that_is_not_fasta(tmp_path, capsys):
    p = tmp_path / "notes.txt.fa"
    p.write_text("sample\tdepth\nA\t3\n")
    bad_run(tmp_path, capsys, p, "not a FASTA file")


def test_binary_file(tmp_path, capsys):
    p = tmp_path / "blob.fa"
    p.write_bytes(bytes(range(256)) * 10)
    bad_run(tmp_path, capsys, p, "binary")


def test_binary_inside_sequence(tmp_path, capsys):
    p = tmp_path / "bad.fa"
    p.write_bytes(b">a\nACGT\xff\xfeACGT\n")
    bad_run(tmp_path, capsys, p, "binary")


def test_truncated_gzip_after_a_good_file(tmp_path, capsys, fasta):
    gz = gzip.compress(fasta.read_bytes() * 20)
    p = tmp_path / "cut.fa.gz"
    p.write_bytes(gz[: len(gz) // 2])
    out = tmp_path / "out"
    out.mkdir()
    status = call_cli(calculate_kmer_frequencies, ["-i", fasta, p, "-id", out / "ids.txt", "-k", out / "k.npy", "--quiet"])
    assert status == 2
    one_line_error(capsys, "cut.fa.gz", "truncated")
    assert no_outputs(out)


def test_output_folder_missing(tmp_path, capsys, fasta):
    status = call_cli(calculate_kmer_frequencies, ["-i", fasta, "-id", tmp_path / "x" / "i.txt", "-k", tmp_path / "x" / "k.npy"])
    assert status == 2
    one_line_error(capsys, "does not exist")


def test_output_folder_not_writable(tmp_path, capsys, fasta):
    target = Path("/proc/kmer-vae-test")  # not writable even for root
    status = call_cli(calculate_kmer_frequencies, ["-i", fasta, "-id", target / "i.txt", "-k", target / "k.npy", "--quiet"])
    assert status != 0
    assert "error" in capsys.readouterr().err
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        status = call_cli(calculate_kmer_frequencies, ["-i", fasta, "-id", ro / "i.txt", "-k", ro / "k.npy"])
        assert status == 2
        one_line_error(capsys, "not writable")


def test_disk_full_while_writing(tmp_path, capsys, fasta, monkeypatch):
    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NpyStreamWriter, "write", full)
    out = tmp_path / "out"
    out.mkdir()
    status = call_cli(calculate_kmer_frequencies, ["-i", fasta, "-id", out / "ids.txt", "-k", out / "k.npy", "--quiet"])
    assert status == 1
    one_line_error(capsys, "disk full")
    assert no_outputs(out)


def test_ctrl_c_mid_run_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(REPO / "bin" / "calculate_kmer_frequencies"), "-i", "-",
                             "-id", out / "ids.txt", "-k", out / "k.npy", "--quiet"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    record = b">r\n" + random_genome(20_000, seed=5).encode() + b"\n"
    proc.stdin.write(record * 400)  # more than one block: rows get written
    proc.stdin.flush()
    deadline = time.time() + 120
    while not any(".tmp-" in p.name for p in out.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    assert any(".tmp-" in p.name for p in out.iterdir()), "the run never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert no_outputs(out)


def test_help_explains_itself():
    proc = run_cli("calculate_kmer_frequencies", "--help")
    assert proc.returncode == 0
    for word in (b"--chop", b"--min-length", b"2773", b"stdin"):
        assert word in proc.stdout
