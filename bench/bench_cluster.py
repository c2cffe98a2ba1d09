"""Time, CPU and peak memory of `cluster --method leiden` (kNN graph + Leiden) at scale, on synthetic latent vectors.

One configuration per process, so ru_maxrss is that configuration's own peak
(run it once per dimension). The input is a synthetic latent matrix shaped like
the encoder's output (float32): a mixture of ``--clusters`` Gaussian clusters of
uneven (log-normal) sizes, each spread over its own low-dimensional subspace,
with centres close enough that clusters touch (a realistic, not a trivial,
graph). Stages: neighbour search (vae.neighbors: HNSW above 50,000 points, all
cores), graph (union edges, snn weights), Leiden (igraph) per resolution. The
ARI against the generating clusters is a sanity check, not a quality claim.

Wall time on a shared machine is an upper bound; CPU seconds (user + system,
all threads) are the stable figure. Prints one Markdown row (and JSON with --json).

    nice -n 10 python bench/bench_cluster.py --n 1000000 --dim 384
    nice -n 10 python bench/bench_cluster.py --n 1000000 --dim 128
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic_latent(n: int, dim: int, clusters: int, intrinsic: int = 12, spread: float = 0.15,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n points (float32), their cluster) in ``clusters`` Gaussian clusters of log-normal sizes, each over its own
    ``intrinsic``-D subspace plus isotropic noise; centres N(0, spread²) per dimension."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, clusters)
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    centers = rng.normal(0, spread, (clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    for c in range(clusters):  # per cluster: bounded temporaries, so the peak is the data's
        rows = order[bounds[c] : bounds[c + 1]]
        if not rows.size:
            continue
        basis = rng.normal(0, 1.0 / np.sqrt(intrinsic), (intrinsic, dim)).astype(np.float32)
        coef = rng.normal(size=(rows.size, intrinsic)).astype(np.float32)
        out[rows] = centers[c] + coef @ basis + rng.normal(0, 0.05, (rows.size, dim)).astype(np.float32)
    return out, labels


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--resolution", type=float, nargs="+", default=[1.0])
    p.add_argument("--weight", default="snn", choices=["snn", "distance"])
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    p.add_argument("--json", metavar="PATH", help="also write the record as JSON")
    args = p.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from vae.cluster import knn_graph, knn_lists, leiden_partitions
    from vae.explore import n_threads

    rec: dict = {"n": args.n, "dim": args.dim, "k": args.k, "weight": args.weight, "threads": n_threads(args.threads),
                 "resolutions": args.resolution}
    x, truth = synthetic_latent(args.n, args.dim, args.clusters)
    rec["data_gb"] = round(x.nbytes / 2**30, 2)
    rec["peak_after_data_gb"] = round(peak_gb(), 2)
    print(f"data: {x.shape} float32, {rec['data_gb']} GB", file=sys.stderr, flush=True)

    stages = {}
    t, c = time.perf_counter(), cpu_s()
    nb, dist = knn_lists(x, args.k, threads=args.threads)
    stages["neighbours"] = (time.perf_counter() - t, cpu_s() - c)
    rec["peak_after_neighbours_gb"] = round(peak_gb(), 2)
    print(f"neighbours: {stages['neighbours'][0]:.0f} s", file=sys.stderr, flush=True)
    del x
    t, c = time.perf_counter(), cpu_s()
    edges, w = knn_graph(nb, dist, args.weight)
    del nb, dist
    stages["graph"] = (time.perf_counter() - t, cpu_s() - c)
    rec["n_edges"] = int(edges.shape[0])
    print(f"graph: {rec['n_edges']:,} edges, {stages['graph'][0]:.0f} s", file=sys.stderr, flush=True)
    t, c = time.perf_counter(), cpu_s()
    labels = leiden_partitions(args.n, edges, w, args.resolution)
    stages["leiden"] = (time.perf_counter() - t, cpu_s() - c)
    rec["peak_gb"] = round(peak_gb(), 2)
    rec["stages"] = {k: {"wall_s": round(v[0], 1), "cpu_s": round(v[1], 1)} for k, v in stages.items()}
    rec["wall_s"] = round(sum(v[0] for v in stages.values()), 1)
    rec["cpu_s"] = round(sum(v[1] for v in stages.values()), 1)
    rec["n_clusters"] = [int(lab.max() + 1) for lab in labels]
    rec["ari_vs_generating_clusters"] = [round(float(adjusted_rand_score(truth, lab)), 3) for lab in labels]
    try:
        rec["load_avg"] = [round(v, 1) for v in os.getloadavg()]
    except OSError:
        pass
    print("| N | D | k | neighbours s (CPU s) | graph s (CPU s) | Leiden s (CPU s) | total s (CPU s) | peak RSS GB | edges | clusters | ARI |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    st = rec["stages"]
    print(f"| {args.n:,} | {args.dim} | {args.k} | {st['neighbours']['wall_s']:.0f} ({st['neighbours']['cpu_s']:.0f}) | "
          f"{st['graph']['wall_s']:.0f} ({st['graph']['cpu_s']:.0f}) | {st['leiden']['wall_s']:.0f} ({st['leiden']['cpu_s']:.0f}) | "
          f"{rec['wall_s']:.0f} ({rec['cpu_s']:.0f}) | {rec['peak_gb']:.2f} | {rec['n_edges']:,} | "
          f"{', '.join(map(str, rec['n_clusters']))} | {', '.join(map(str, rec['ari_vs_generating_clusters']))} |")
    print(json.dumps(rec), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rec, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
