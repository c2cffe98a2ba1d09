"""Peak memory and time of `tsne` (vae.explore.run_tsne) at a given number of points and settings.

Each configuration runs in a fresh child process, so its peak resident memory
(ru_maxrss, recorded after each stage) is its own: the input matrix, the
nearest-neighbour search, the affinities and the optimisation. The input is a
synthetic latent matrix shaped like the encoder's output (384-D, float32): a
mixture of Gaussian clusters of low intrinsic dimension.

With --iters the optimisation runs that many iterations only (memory does not
grow with iterations); the time of the full 750 is extrapolated from them and
marked as such.

    python bench/bench_tsne.py --n 100000                      # defaults: perplexity 30
    python bench/bench_tsne.py --n 1000000 --affinity uniform --k 15 --iters 30
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def synthetic_latent(n: int, dim: int = 384, clusters: int = 300, intrinsic: int = 12, seed: int = 0) -> np.ndarray:
    """n points in ``clusters`` Gaussian clusters, each spread over its own ``intrinsic``-D subspace plus small noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3.0, (clusters, dim)).astype(np.float32)
    bases = rng.normal(0, 1.0 / np.sqrt(intrinsic), (clusters, intrinsic, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, dim), np.float32)
    for c in range(clusters):  # per cluster: bounded temporaries, so the peak is the data's
        rows = np.flatnonzero(labels == c)
        coef = rng.normal(size=(rows.size, intrinsic)).astype(np.float32)
        out[rows] = centers[c] + coef @ bases[c] + rng.normal(0, 0.1, (rows.size, dim)).astype(np.float32)
    return out


def child(args: argparse.Namespace) -> dict:
    from openTSNE import TSNEEmbedding, affinity, initialization

    from vae.explore import tsne_settings

    args.n = args.n[0]
    rec: dict = {"n": args.n, "dim": args.dim, "affinity": args.affinity, "threads": args.threads}
    t0 = time.perf_counter()
    x = synthetic_latent(args.n, args.dim)
    rec["data_gb"] = round(x.nbytes / 2**30, 2)
    rec["peak_after_data_gb"] = round(peak_gb(), 2)
    s = tsne_settings(args.n, perplexity=args.perplexity, affinity=args.affinity, k_neighbors=args.k, neighbors=args.neighbors,
                      threads=args.threads, seed=1)
    rec.update(threads=s["threads"], k_neighbors=s["k_neighbors"], neighbors=s["neighbors"], exaggeration=round(s["exaggeration"], 2))
    # The same steps as vae.explore.run_tsne, timed one by one.
    t = time.perf_counter()
    if args.pca_dims:
        from vae.explore import reduce_pca

        x = reduce_pca(x, args.pca_dims, seed=1)
        rec["pca_dims"] = args.pca_dims
        rec["pca_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
    if args.affinity == "perplexity":
        P = affinity.PerplexityBasedNN(x, perplexity=s["perplexity"], method=s["neighbors"], n_jobs=s["threads"], random_state=1)
    else:
        P = affinity.Uniform(x, k_neighbors=s["k_neighbors"], method=s["neighbors"], n_jobs=s["threads"], random_state=1)
    P.knn_index = None
    rec["affinity_s"] = round(time.perf_counter() - t, 1)
    rec["peak_after_affinity_gb"] = round(peak_gb(), 2)
    rec["P_nonzeros"] = int(P.P.nnz)
    t = time.perf_counter()
    init = initialization.pca(x, n_components=2, random_state=1)
    del x
    rec["init_s"] = round(time.perf_counter() - t, 1)
    rec["peak_after_init_gb"] = round(peak_gb(), 2)
    emb = TSNEEmbedding(init, P, negative_gradient_method="fft", n_jobs=s["threads"], random_state=1)
    full = s["early_exaggeration_iter"] + s["n_iter"]
    iters = min(args.iters or full, full)
    early = min(iters, s["early_exaggeration_iter"])
    t = time.perf_counter()
    emb.optimize(n_iter=early, exaggeration=max(12.0, s["exaggeration"]), momentum=0.8, inplace=True)
    if iters > early:
        emb.optimize(n_iter=iters - early, exaggeration=s["exaggeration"], momentum=0.8, inplace=True)
    opt = time.perf_counter() - t
    rec["iterations_run"] = iters
    rec["optimise_s"] = round(opt, 1)
    rec["s_per_iteration"] = round(opt / iters, 3)
    rec["optimise_full_750_s"] = round(opt / iters * full, 0)
    rec["optimise_extrapolated"] = iters < full
    rec["peak_gb"] = round(peak_gb(), 2)
    rec["total_s"] = round(time.perf_counter() - t0 + (opt / iters * (full - iters)), 0)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds are less sensitive than wall time to other jobs on a shared machine.
    rec["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 0)
    rec["load_avg_1min"] = round(os.getloadavg()[0], 1)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[100_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--affinity", choices=["perplexity", "uniform"], default="perplexity")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--k", type=int, default=15, help="neighbours with --affinity uniform")
    p.add_argument("--neighbors", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--pca-dims", type=int, default=0, help="project onto this many principal components first")
    p.add_argument("--iters", type=int, default=0, help="run only this many iterations and extrapolate (0 = all 750)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="append results to this JSON-lines file")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    for n in args.n:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--n", str(n), "--dim", str(args.dim), "--affinity", args.affinity,
               "--perplexity", str(args.perplexity), "--k", str(args.k), "--neighbors", args.neighbors,
               "--threads", str(args.threads), "--iters", str(args.iters), "--pca-dims", str(args.pca_dims)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rec = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
