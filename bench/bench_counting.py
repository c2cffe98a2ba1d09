#!/usr/bin/env python3
"""Counting benchmark (issue 2, section 2): throughput and peak memory of `calculate_kmer_frequencies`.

Not a test: a script that prints a Markdown table. It

1. builds, once, a FASTA of contigs of 2-200 kbp (log-uniform lengths) cut from the
   real genomes in ../shared/data/genomes (random fragments, half of them reverse
   complemented, 1 % random substitutions, a few N runs; seeded), plain and gzip
   (level 6), cached in a work folder outside the repository;
2. runs the real command (the installed console script, as a user runs it) as a
   subprocess for plain/gzip x 1/2 worker threads, several times each, round-robin,
   and reads the child's own wall time, CPU time (user + sys) and peak RSS from
   ``os.wait4`` (in a small launcher process, so the peak RSS is the command's own);
3. repeats at a size an order of magnitude smaller, to show that peak RSS does not
   grow with the input, times the start-up on a tiny input, compares gzip
   decompressors, and times each stage of the pipeline in one thread (CPU time).

    python bench/bench_counting.py                 # 200 Mbp and 20 Mbp, 3 repeats
    python bench/bench_counting.py --size-mbp 1000 --repeats 3 --out results/

On a shared machine each run first waits (up to --quiet-wait seconds in all) for the
cores to be --min-idle idle, and the input is read once just before each run so that
it comes from the page cache: the figures are about counting, not the disk.

Figures: "wall" is the child's whole life (interpreter start, imports, numba cache
load, counting, writing); "pipeline" is the time the command itself reports for the
counting (kernels loaded, reading to fsync), so a short benchmark is not dominated by
the ~0.5 s start. "Mbp/s per worker" = pipeline Mbp/s / worker threads; "Mbp per
CPU-s" = Mbp / (user + sys CPU seconds of the whole process, reader and start-up
included). ``--threads 1`` counts in the main thread: one worker is one core.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GENOMES = REPO.parent / "shared" / "data" / "genomes"
DEFAULT_WORKDIR = Path(os.environ.get("TMPDIR", "/tmp")) / "kmer-vae-bench"
LINE_WIDTH = 80
MIN_LEN, MAX_LEN = 2_000, 200_000
MUTATION_RATE = 0.01
GEN_VERSION = 1  # bump when the generator changes, so cached inputs are rebuilt

_COMP = np.frombuffer(bytes.maketrans(b"ACGTNacgtn", b"TGCANtgcan"), dtype=np.uint8)
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


# --------------------------------------------------------------------------- input generation


def _load_genomes(folder: Path) -> list[np.ndarray]:
    """Every record of every genome as an uppercase uint8 array (records shorter than 2 kbp dropped)."""
    seqs = []
    for path in sorted(folder.glob("*.fna.gz")):
        with gzip.open(path, "rb") as fh:
            text = fh.read()
        for rec in text.split(b">")[1:]:
            body = rec.split(b"\n", 1)[1] if b"\n" in rec else b""
            s = np.frombuffer(body.replace(b"\n", b"").replace(b"\r", b"").upper(), dtype=np.uint8)
            if s.shape[0] >= MIN_LEN:
                seqs.append(s)
    if not seqs:
        raise SystemExit(f"no genomes (*.fna.gz) found in {folder}")
    return seqs


def _contigs(genomes: list[np.ndarray], rng: np.random.Generator):
    """Endless stream of (id, uint8 sequence): random fragments of the genomes."""
    lens = np.array([g.shape[0] for g in genomes], dtype=np.float64)
    p = lens / lens.sum()
    i = 0
    while True:
        g = genomes[rng.choice(len(genomes), p=p)]
        want = int(np.exp(rng.uniform(np.log(MIN_LEN), np.log(MAX_LEN))))
        n = min(want, g.shape[0])
        a = int(rng.integers(0, g.shape[0] - n + 1))
        s = g[a : a + n].copy()
        if rng.random() < 0.5:
            s = _COMP[s[::-1]]
        k = rng.binomial(n, MUTATION_RATE)
        s[rng.integers(0, n, k)] = _BASES[rng.integers(0, 4, k)]
        if rng.random() < 0.1:  # a scaffold gap
            gap = int(rng.integers(10, 200))
            b = int(rng.integers(0, max(1, n - gap)))
            s[b : b + gap] = ord("N")
        i += 1
        yield f"contig_{i} len={n}", s


def _fasta_record(name: str, s: np.ndarray) -> bytes:
    n = s.shape[0]
    full = n // LINE_WIDTH
    body = np.empty(n + full + (1 if n % LINE_WIDTH else 0), dtype=np.uint8)
    if full:
        m = body[: full * (LINE_WIDTH + 1)].reshape(full, LINE_WIDTH + 1)
        m[:, :LINE_WIDTH] = s[: full * LINE_WIDTH].reshape(full, LINE_WIDTH)
        m[:, LINE_WIDTH] = 10
    if n % LINE_WIDTH:
        body[full * (LINE_WIDTH + 1) : -1] = s[full * LINE_WIDTH :]
        body[-1] = 10
    return b">" + name.encode() + b"\n" + body.tobytes()


def build_inputs(workdir: Path, genomes_dir: Path, size_mbp: float, seed: int) -> dict:
    """Write bench_<size>Mbp.fa and .fa.gz (cached); returns their description."""
    stem = workdir / f"bench_{size_mbp:g}Mbp_s{seed}_v{GEN_VERSION}"
    plain, gz, meta_path = Path(f"{stem}.fa"), Path(f"{stem}.fa.gz"), Path(f"{stem}.json")
    if plain.exists() and gz.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"building {plain} and {gz.name} ({size_mbp:g} Mbp) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    genomes = _load_genomes(genomes_dir)
    rng = np.random.default_rng(seed)
    target = int(size_mbp * 1e6)
    total = n = 0
    lengths = []
    tmp_plain, tmp_gz = Path(f"{plain}.part"), Path(f"{gz}.part")
    with open(tmp_plain, "wb") as fp, open(tmp_gz, "wb") as fgz:
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip container, level 6 (the gzip default)
        for name, s in _contigs(genomes, rng):
            rec = _fasta_record(name, s)
            fp.write(rec)
            fgz.write(comp.compress(rec))
            total += s.shape[0]
            n += 1
            lengths.append(s.shape[0])
            if total >= target:
                break
        fgz.write(comp.flush())
    os.replace(tmp_plain, plain)
    os.replace(tmp_gz, gz)
    meta = {
        "plain": str(plain), "gzip": str(gz), "contigs": n, "bases": total,
        "plain_bytes": plain.stat().st_size, "gzip_bytes": gz.stat().st_size,
        "median_length": int(np.median(lengths)), "mean_length": float(np.mean(lengths)),
        "genomes": len(genomes), "seed": seed,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"  built in {time.perf_counter() - t0:.0f} s: {n:,} contigs, {total / 1e6:.1f} Mbp", file=sys.stderr)
    return meta


# --------------------------------------------------------------------------- running the command


def find_command() -> list[str]:
    """The installed console script (beside this interpreter), else the checkout's bin/ wrapper."""
    script = Path(sysconfig.get_path("scripts")) / "calculate_kmer_frequencies"
    if script.exists():
        return [str(script)]
    found = shutil.which("calculate_kmer_frequencies")
    if found:
        return [found]
    return [sys.executable, str(REPO / "bin" / "calculate_kmer_frequencies")]


_SUMMARY = re.compile(r"([\d.]+) s \(([\d,.]+) Mbp/s\)")


# The command is started by a small fresh interpreter, not by this process: a child
# started with fork/vfork inherits its parent's peak RSS into its own ru_maxrss (Linux
# records the old address space's high-water mark at exec), and this process holds the
# genomes and test data. The launcher's own ~10 MB is the floor instead.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
err = open(sys.argv[1], "wb")
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err)
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "maxrss_kb": ru.ru_maxrss,
                  "rc": os.waitstatus_to_exitcode(status)}))
"""


def cpu_idle_fraction(seconds: float = 0.5) -> float:
    """Fraction of all cores idle over ``seconds`` (from /proc/stat; 1.0 where unavailable)."""
    def snap():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return 1.0


def wait_for_quiet(budget: list[float], min_idle: float) -> float:
    """Wait (within the remaining ``budget[0]`` seconds) until the cores are ``min_idle`` idle; returns the idle fraction."""
    idle = cpu_idle_fraction()
    while idle < min_idle and budget[0] > 0:
        time.sleep(2.0)
        budget[0] -= 2.5
        idle = cpu_idle_fraction()
    return idle


def read_through(path: str) -> None:
    """Read a file once so that the run after it finds it in the page cache (this machine's
    kernel reclaims idle cache within minutes): the runs measure counting, not the disk."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(4 << 20)
        while fh.readinto(buf):
            pass


def run_once(cmd: list[str], inp: str, threads: int, outdir: Path) -> dict:
    """Run the command once; the child's wall, CPU (user+sys) and peak RSS via os.wait4 in a launcher."""
    read_through(inp)
    ids, mat = outdir / "ids.txt", outdir / "kmers.npy"
    argv = cmd + ["-i", inp, "-id", str(ids), "-k", str(mat), "--threads", str(threads)]
    err = outdir / "stderr.txt"
    out = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(err)] + argv, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    text = err.read_text(errors="replace")
    if res["rc"] != 0:
        raise SystemExit(f"command failed ({res['rc']}): {' '.join(argv)}\n{text[-2000:]}")
    m = _SUMMARY.findall(text)
    pipeline = float(m[-1][0]) if m else float("nan")
    rows = sum(1 for _ in open(ids))
    return {"wall": res["wall"], "cpu": res["user"] + res["sys"], "user": res["user"], "sys": res["sys"],
            "rss_mb": res["maxrss_kb"] / 1024, "pipeline": pipeline, "rows": rows}


def bench(cmd: list[str], meta: dict, threads: list[int], repeats: int, outdir: Path, label: str,
          start_cpu: float, quiet_budget: list[float], min_idle: float) -> list[dict]:
    """Every configuration ``repeats`` times, round-robin (so load from other processes hits all alike)."""
    mbp = meta["bases"] / 1e6
    configs = [(fmt, t) for fmt in ("plain", "gzip") for t in threads]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for rnd in range(repeats):
        for fmt, t in configs:
            idle = wait_for_quiet(quiet_budget, min_idle)
            r = run_once(cmd, meta[fmt], t, outdir)
            r["round"] = rnd
            r["idle_before"] = idle
            r["load"] = os.getloadavg()[0]
            runs[(fmt, t)].append(r)
            print(f"  {label} {fmt:5s} {t} worker(s), round {rnd + 1}: pipeline {r['pipeline']:.2f} s, wall {r['wall']:.2f} s, "
                  f"CPU {r['cpu']:.2f} s, RSS {r['rss_mb']:.0f} MB, cores idle before {idle:.0%}, load {r['load']:.1f}",
                  file=sys.stderr, flush=True)
    results = []
    t1 = min(threads)
    for fmt, t in configs:
        rs = runs[(fmt, t)]
        best = min(rs, key=lambda r: r["pipeline"])
        # speed-up against the 1-worker run of the same round, then the median over rounds
        ratios = [base["pipeline"] / r["pipeline"] for r, base in zip(rs, runs[(fmt, t1)])]
        r = {
            "input": label, "format": fmt, "workers": t, "mbp": mbp, "rows": best["rows"],
            "wall": min(x["wall"] for x in rs), "pipeline": best["pipeline"],
            "pipeline_median": statistics.median(x["pipeline"] for x in rs),
            "cpu": min(x["cpu"] for x in rs), "rss_mb": max(x["rss_mb"] for x in rs),
            "speedup_median": statistics.median(ratios), "load": [x["load"] for x in rs],
            "idle_before": [x["idle_before"] for x in rs], "runs": rs,
        }
        r["mbps"] = mbp / r["pipeline"]
        r["mbps_wall"] = mbp / r["wall"]
        r["mbps_per_worker"] = r["mbps"] / t
        r["mbp_per_cpu_s"] = mbp / r["cpu"]
        # CPU minus start-up: only meaningful when counting dominates (NaN when it is within noise)
        counting_cpu = r["cpu"] - start_cpu
        r["mbp_per_counting_cpu_s"] = mbp / counting_cpu if counting_cpu > 0.25 * r["cpu"] else float("nan")
        results.append(r)
    base = {(r["input"], r["format"]): r["mbps"] for r in results if r["workers"] == t1}
    for r in results:
        r["speedup"] = r["mbps"] / base[(r["input"], r["format"])]
    return results


def startup_time(cmd: list[str], workdir: Path, outdir: Path, repeats: int, quiet_budget: list[float], min_idle: float) -> dict:
    tiny = workdir / "tiny.fa"
    tiny.write_bytes(b">tiny\n" + b"ACGTTGCAAC" * 100 + b"\n")
    runs = []
    for _ in range(max(3, repeats)):
        wait_for_quiet(quiet_budget, min_idle)
        runs.append(run_once(cmd, str(tiny), 1, outdir))
    return {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs), "rss_mb": min(r["rss_mb"] for r in runs)}


def decompression_rates(gz_path: str, limit: int = 64 << 20) -> dict[str, float]:
    """MB/s of decompressed output for the gzip readers available (first ``limit`` compressed bytes)."""
    data = open(gz_path, "rb").read(limit)
    d = zlib.decompressobj(31)
    out_len = len(d.decompress(data))
    rates: dict[str, float] = {}

    def timed(name, fn):
        best = float("inf")
        for _ in range(3):
            t = time.thread_time()  # CPU time: robust to other jobs on the machine
            fn()
            best = min(best, time.thread_time() - t)
        rates[name] = out_len / best / 1e6

    timed("zlib (python gzip)", lambda: zlib.decompressobj(31).decompress(data))
    try:
        from isal import isal_zlib
        timed("isal (ISA-L)", lambda: isal_zlib.decompressobj(31).decompress(data))
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng
        timed("zlib-ng", lambda: zlib_ng.decompressobj(31).decompress(data))
    except ImportError:
        pass
    return rates


def stage_breakdown(meta: dict, repeats: int) -> dict[str, float]:
    """CPU seconds (this thread's, min over repeats) of each stage on the main input, in this process.

    Thread CPU time is far less sensitive than wall time to other jobs on a shared
    machine, so this says what limits throughput even when the wall figures are noisy.
    """
    sys.path.insert(0, str(REPO))
    from vae import fasta, kmers  # noqa: E402
    from vae.count import MAX_ROWS_PER_BLOCK, CountOptions, _count_block  # noqa: E402

    fasta.parse_block(b">a\nACGT\n")
    kmers.profile("ACGT")
    kmers.count_valid(kmers.encode("ACGT"), [0], [4])
    out: dict[str, float] = {}

    def best(name, fn):
        t = float("inf")
        for _ in range(repeats):
            t0 = time.thread_time()
            fn()
            t = min(t, time.thread_time() - t0)
        out[name] = t

    for fmt in ("plain", "gzip"):
        best(f"read {fmt}", lambda fmt=fmt: sum(len(b) for b in fasta.iter_blocks(meta[fmt], max_records=MAX_ROWS_PER_BLOCK)))
    blocks = list(fasta.iter_blocks(meta["plain"], max_records=MAX_ROWS_PER_BLOCK))
    # Stage by stage within each block, as the pipeline runs them (the block's codes stay in cache).
    acc = {"parse": [], "count valid bases": [], "k-mer profiles": []}
    for _ in range(repeats):
        tp = tv = tk = 0.0
        for b in blocks:
            t0 = time.thread_time()
            p = fasta.parse_block(b)
            t1 = time.thread_time()
            kmers.count_valid(p.codes, p.seq_start, p.seq_end)
            t2 = time.thread_time()
            kmers.profiles(p.codes, p.seq_start, p.seq_end)
            t3 = time.thread_time()
            tp, tv, tk = tp + t1 - t0, tv + t2 - t1, tk + t3 - t2
        for k, v in zip(acc, (tp, tv, tk)):
            acc[k].append(v)
    out.update({k: min(v) for k, v in acc.items()})
    opts = CountOptions()
    best("whole block (parse+count+IDs)", lambda: [_count_block(b, "x", opts) for b in blocks])
    return out


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _num(x: float) -> str:
    return "n/a" if x != x else f"{x:.0f}"


def markdown(results: list[dict], meta: dict, small: dict | None, start: dict, rates: dict, cmd: list[str], args,
             stages: dict[str, float] | None = None) -> str:
    loads = [x for r in results for x in r["load"]]
    idles = [x for r in results for x in r["idle_before"]]
    lines = [
        f"Machine: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}; "
        f"command `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))} -i FASTA -id IDS -k NPY --threads N`; "
        f"shared machine: load average {min(loads):.1f}-{max(loads):.1f} during the runs, "
        f"cores {min(idles):.0%}-{max(idles):.0%} idle just before each run.",
        f"Input: {meta['contigs']:,} contigs, {meta['bases'] / 1e6:.0f} Mbp (2-200 kbp log-uniform, median {meta['median_length'] / 1e3:.0f} kbp), "
        f"plain {meta['plain_bytes'] / 1e6:.0f} MB, gzip -6 {meta['gzip_bytes'] / 1e6:.0f} MB"
        + (f"; small input {small['bases'] / 1e6:.0f} Mbp ({small['contigs']:,} contigs)." if small else "."),
        f"Inputs read once before each run (page cache warm). Best of {args.repeats} round-robin runs per row. pipeline = counting time the command reports (start-up excluded); "
        "wall = the whole process; CPU = user+sys of the whole process (start-up included); "
        f"counting CPU = CPU minus the {start['cpu']:.2f} s a 1 kbp input takes; speed-up = vs 1 worker, best and median of per-round ratios.",
        "",
        "| input | format | workers | pipeline s | Mbp/s | Mbp/s per worker | wall s | wall Mbp/s | CPU s | Mbp per CPU-s | Mbp per counting CPU-s | speed-up (best / median) | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['mbp']:.0f} Mbp | {r['format']} | {r['workers']} | {r['pipeline']:.2f} | {r['mbps']:.0f} | {r['mbps_per_worker']:.0f} | "
            f"{r['wall']:.2f} | {r['mbps_wall']:.0f} | {r['cpu']:.2f} | {r['mbp_per_cpu_s']:.0f} | {_num(r['mbp_per_counting_cpu_s'])} | "
            f"{r['speedup']:.2f}x / {r['speedup_median']:.2f}x | {r['rss_mb']:.0f} |"
        )
    main = {(r["format"], r["workers"]): r for r in results if r["input"] == "main"}
    rss_main = max(r["rss_mb"] for r in results if r["input"] == "main")
    t1, t2 = min(args.threads), max(args.threads)
    p1, g2 = main.get(("plain", t1)), main.get(("gzip", t2))
    lines += ["", "Issue 2 targets (main input):"]
    if p1:
        lines.append(f"- plain, {t1} worker: {p1['mbps_per_worker']:.0f} Mbp/s per worker (pipeline), "
                     f"{_num(p1['mbp_per_counting_cpu_s'])} Mbp per counting CPU-s, {p1['mbp_per_cpu_s']:.0f} per CPU-s with start-up (target >= 400)")
    if g2:
        lines.append(f"- gzip, {t2} workers: {g2['mbps']:.0f} Mbp/s pipeline, {g2['mbps_wall']:.0f} Mbp/s wall (target >= 300)")
    for fmt in ("plain", "gzip"):
        r = main.get((fmt, t2))
        if r and t2 != t1:
            lines.append(f"- {fmt}: {t2} workers vs {t1}: {r['speedup']:.2f}x best, {r['speedup_median']:.2f}x median of rounds (target >= 1.7x)")
    if small:
        rss_small = max(r["rss_mb"] for r in results if r["input"] == "small")
        lines.append(f"- peak RSS {rss_main:.0f} MB at {meta['bases'] / 1e6:.0f} Mbp vs {rss_small:.0f} MB at {small['bases'] / 1e6:.0f} Mbp "
                     f"(x{rss_main / rss_small:.2f} for x{meta['bases'] / small['bases']:.0f} the input; target < 1 GB and flat)")
    lines += [
        "",
        f"Start-up on a 1 kbp input: {start['wall']:.2f} s wall, {start['cpu']:.2f} s CPU, {start['rss_mb']:.0f} MB RSS.",
        "Decompression of the gzip input (one thread, MB of FASTA out per CPU-s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + ".",
    ]
    if stages:
        mbp = meta["bases"] / 1e6
        lines += ["", f"Stages, one thread, CPU seconds for the {mbp:.0f} Mbp input (Mbp per CPU-s): "
                  + "; ".join(f"{k} {v:.3f} s ({mbp / v:,.0f})" for k, v in stages.items()) + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mbp", type=float, default=200, help="size of the main input (>= 200 for issue 2)")
    p.add_argument("--small-mbp", type=float, default=20, help="second, smaller input for memory boundedness (0: skip)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (best is reported)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--genomes", type=Path, default=DEFAULT_GENOMES, help="folder of *.fna.gz genomes")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="cache of generated inputs and scratch outputs")
    p.add_argument("--quiet-wait", type=float, default=120,
                   help="seconds (in all) to wait for idle cores before runs, on a shared machine (0: never wait)")
    p.add_argument("--min-idle", type=float, default=0.9, help="idle fraction of all cores that counts as quiet")
    p.add_argument("--out", type=Path, default=None, help="also write the table (bench_counting.md) and raw figures (.json) here")
    args = p.parse_args(argv)

    cmd = find_command()
    args.workdir.mkdir(parents=True, exist_ok=True)
    scratch = args.workdir / "run"
    scratch.mkdir(exist_ok=True)
    meta = build_inputs(args.workdir, args.genomes, args.size_mbp, args.seed)
    small = build_inputs(args.workdir, args.genomes, args.small_mbp, args.seed) if args.small_mbp else None
    print(f"command: {' '.join(cmd)}", file=sys.stderr)
    budget = [args.quiet_wait]
    start = startup_time(cmd, args.workdir, scratch, args.repeats, budget, args.min_idle)
    rates = decompression_rates(meta["gzip"])
    results = bench(cmd, meta, args.threads, args.repeats, scratch, "main", start["cpu"], budget, args.min_idle)
    if small:
        results += bench(cmd, small, args.threads, args.repeats, scratch, "small", start["cpu"], budget, args.min_idle)
    stages = stage_breakdown(meta, args.repeats)
    table = markdown(results, meta, small, start, rates, cmd, args, stages)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_counting.md").write_text(table + "\n")
        (args.out / "bench_counting.json").write_text(json.dumps(
            {"results": results, "input": meta, "small_input": small, "startup": start, "decompression_mb_s": rates, "stages_cpu_s": stages,
             "command": cmd, "cpu": cpu_model(), "cores": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
