#!/usr/bin/env python3
"""Shuffle benchmark (issue 12): `concatenate_matrices --shuffle`, random-row gather vs two-pass buckets.

Not a test: a script that prints a Markdown table. It

1. builds, once, a float32 matrix of --rows rows x 2773 columns (1.2 GB at the default
   110,000 rows) in --work (default /work/scratch/scaleout), cached between runs;
2. runs each method in a fresh child process, round-robin, --repeats times, and reads the
   child's block-device reads and writes from /proc/self/io (``read_bytes``, ``write_bytes``:
   bytes that really went to or came from the disk, not page-cache hits), its wall time and
   its peak RSS;
3. emulates a page cache much smaller than the matrix: before a run, and after every
   progress step of the shuffle (one 64 MB output chunk of the gather; one input chunk
   or one bucket of the bucket shuffle), the input and the output temporary are flushed
   (fdatasync) and dropped from the cache (posix_fadvise DONTNEED). The gather then
   re-reads a readahead window for most rows, as it does when the matrix is larger than RAM;
   the bucket shuffle reads its bucket back from disk in pass 2 instead of from the cache.

    python bench/bench_shuffle.py                       # 1.2 GB, 1 repeat
    python bench/bench_shuffle.py --rows 200000 --repeats 2

"read / matrix" = read_bytes / matrix bytes (1.0 = the matrix read once); MB/s = matrix
MB / wall seconds.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vae import matrix  # noqa: E402

N_COLS = 2773


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(": ") for line in fh)}


def drop(path: str) -> None:
    """Flush ``path`` and drop its pages from the page cache (no-op when it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def build(work: str, rows: int) -> tuple[str, str]:
    npy, txt = os.path.join(work, f"shuffle_{rows}.npy"), os.path.join(work, f"shuffle_{rows}.txt")
    if os.path.exists(npy) and os.path.exists(txt):
        return npy, txt
    rng = np.random.default_rng(0)
    with matrix.NpyStreamWriter(npy, N_COLS) as w:
        for start in range(0, rows, 5000):
            w.write(rng.random((min(5000, rows - start), N_COLS), dtype=np.float32))
        w.commit()
    with matrix.atomic_text(txt) as fh:
        fh.writelines(f"contig_{i}\n" for i in range(rows))
    return npy, txt


def child(method: str, npy: str, txt: str, out: str) -> None:
    """One shuffle in this process; prints its figures as JSON."""
    tmp = matrix.temp_path_for(out + ".npy")
    maps: list[np.memmap] = []
    real_open = matrix.open_matrix

    def tracked_open(*args, **kw):
        m = real_open(*args, **kw)
        maps.append(m)
        return m

    # Pages mapped by a process survive fadvise(DONTNEED): unmap the gather's memmap pages first.
    matrix.open_matrix = tracked_open

    def step(_rows: float) -> None:
        for m in maps:
            m._mmap.madvise(mmap.MADV_DONTNEED)
        drop(npy)
        drop(tmp)

    drop(npy)
    before = io_counters()
    t0 = time.perf_counter()
    matrix.concatenate([npy], [txt], out, shuffle=True, seed=1, method=method, progress=step)
    wall = time.perf_counter() - t0
    after = io_counters()
    print(json.dumps({"method": method, "wall": wall,
                      "read": after["read_bytes"] - before["read_bytes"],
                      "write": after["write_bytes"] - before["write_bytes"],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=110_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", default="/work/scratch/scaleout")
    ap.add_argument("--methods", nargs="+", default=["gather", "buckets"])
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "NPY", "TXT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    os.makedirs(a.work, exist_ok=True)
    npy, txt = build(a.work, a.rows)
    size = os.path.getsize(npy) - 128
    out = os.path.join(a.work, "shuffled")
    results = []
    for _ in range(a.repeats):
        for method in a.methods:
            proc = subprocess.run([sys.executable, __file__, "--child", method, npy, txt, out],
                                  capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            for ext in (".npy", ".txt"):
                os.unlink(out + ext)
            print(f"# {results[-1]}", file=sys.stderr)
    print(f"matrix: {a.rows:,} rows x {N_COLS} float32 = {size / 1e9:.2f} GB; {os.cpu_count()} cores\n")
    print("| method | wall s | MB/s | read / matrix | written / matrix | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['method']} | {r['wall']:.1f} | {size / 1e6 / r['wall']:.0f} | {r['read'] / size:.2f} | "
              f"{r['write'] / size:.2f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
