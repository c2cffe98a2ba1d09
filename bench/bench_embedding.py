#!/usr/bin/env python3
"""Embedding throughput (contigs/s) of both engines with the default architecture (2772-1024-512-384).

Times the whole `embedding` path for a k-mer matrix on disk: memmap read, CLR,
z_mean, streaming write of (N, 385) float32, and separately the inference alone
(CLR + z_mean on rows already in RAM). Uses the shipped Models/default encoder
when present, else a freshly built one of the same shape (the speed does not
depend on the weights).

    python bench/bench_embedding.py                  # 20,000 rows, batch 4096, both engines
    python bench/bench_embedding.py --rows 50000 --json results.json

Cores: whatever the process may use (this project's CI and dev boxes have 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vae import embed  # noqa: E402
from vae.kmers import GROUP_SLICES, N_COLUMNS  # noqa: E402
from vae.transform import clr  # noqa: E402


def synthetic_matrix(n: int, seed: int = 0) -> np.ndarray:
    """Rows shaped like k-mer profiles: positive, each group summing to 1, lengths 1-50 kbp."""
    rng = np.random.default_rng(seed)
    m = rng.gamma(2.0, 1.0, size=(n, N_COLUMNS)).astype(np.float32)
    m[:, 0] = rng.integers(1000, 50_000, n)
    for sl in GROUP_SLICES.values():
        m[:, sl] /= m[:, sl].sum(axis=1, keepdims=True)
    return m


def encoders(tmp: str) -> dict:
    keras_path = embed.DEFAULT_MODEL_DIR / embed.KERAS_NAME
    if keras_path.exists():
        src = str(keras_path)
    else:
        from vae.model import build_encoder

        src = os.path.join(tmp, "encoder.keras")
        build_encoder().save(src)
        embed.export_encoder(src)
    return {"keras": embed.load_encoder(src, "keras"), "numpy": embed.load_encoder(src, "numpy"), "source": src}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=embed.DEFAULT_BATCH)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="append the results here as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as tmp:
        encs = encoders(tmp)
        src = encs.pop("source")
        mat = os.path.join(tmp, "kmers.npy")
        np.save(mat, synthetic_matrix(args.rows))
        rows = np.load(mat)
        results = []
        for name, enc in encs.items():
            enc.z_mean(clr(rows[:256]))  # warm-up: graph tracing, BLAS thread start
            t_infer = best_of(lambda enc=enc: [enc.z_mean(clr(rows[a : a + args.batch_size])) for a in range(0, args.rows, args.batch_size)],
                              args.repeats)
            out = os.path.join(tmp, f"emb_{name}.npy")
            t_file = best_of(lambda enc=enc, out=out: embed.embed_matrix_file(enc, mat, out, args.batch_size), args.repeats)
            results.append({"engine": name, "rows": args.rows, "batch_size": args.batch_size, "latent": enc.latent,
                            "model": src, "cores": os.cpu_count(),
                            "inference_contigs_per_s": round(args.rows / t_infer), "file_to_file_contigs_per_s": round(args.rows / t_file)})
        a, b = (np.load(os.path.join(tmp, f"emb_{e}.npy")) for e in ("keras", "numpy"))
        diff = float(np.abs(a - b).max())
    load = os.getloadavg()[0]
    print(f"model {src}: latent {results[0]['latent']}, {args.rows:,} rows, batch {args.batch_size}, {os.cpu_count()} cores "
          f"(load average {load:.1f} at the end: other processes share them); max |keras - numpy| = {diff:.1e}")
    print(f"{'engine':<8}{'inference (contigs/s)':>24}{'file to file (contigs/s)':>28}")
    for r in results:
        r["max_abs_diff_keras_numpy"] = diff
        r["load_average"] = round(load, 2)
        print(f"{r['engine']:<8}{r['inference_contigs_per_s']:>24,}{r['file_to_file_contigs_per_s']:>28,}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
