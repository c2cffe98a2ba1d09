"""Is the latent space trustworthy? Local-distance verification and label agreement, always against baselines.

Three spaces are compared on the same rows, the same queries and the same pool:

* ``VAE``: z_mean of the encoder;
* ``PCA``: principal components of the CLR features, as many as the latent
  dimension, fitted on training rows only (exact covariance eigendecomposition);
* ``CLR``: the CLR features themselves (2772 dimensions). Under the Euclidean
  metric its distance is sqrt(2772 x CLR-MSE), a monotone function of the
  quantity being predicted, so its Spearman is 1 by construction: it is the
  ceiling, not a competitor.

:func:`verify` (``verify_local_distances``) takes queries from held-out rows, finds their K
nearest neighbours in each space (exact search, streamed over the pool in
chunks) and asks how well the space's distance tracks the k-mer CLR MSE over
those local pairs (Pearson, Spearman, bootstrap 95% CI over queries), and how
close (in CLR-MSE) the top 1/5/10/20/50 neighbours are compared with random
pairs. Correlations over K-NN pairs depend on the pool size (a larger pool
gives nearer neighbours), so the pool size is part of every result.

:func:`label_agreement` (``evaluate_labels``) asks whether neighbours are biologically related:
k-NN label agreement per taxonomic rank, and agreement of a k-means
clustering (k = number of labels at the rank) with the labels.

Nothing here imports TensorFlow unless the Keras engine is chosen.
"""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .encoder import Encoder, check_width, z_mean_of
from .errors import InputError, reading
from .kmers import LENGTH_COLUMN, N_FEATURES
from .matrix import check_rows, gather_rows, open_matrix, read_ids
from .options import check_non_negative, comma_floats, option
from .transform import clr

METRICS = ("euclidean", "cosine")
SPACES = ("VAE", "PCA", "CLR")
DEFAULT_K = 50
TOP_N = (1, 5, 10, 20, 50)
DEFAULT_QUERIES = 1000
DEFAULT_BOOTSTRAP = 1000
DEFAULT_QUERY_FRACTION = 0.1
#: Training rows the PCA baseline is fitted on at most (a seeded sample): the
#: covariance of 100k x 2772 is exact enough for 384 components and takes ~1 min on 2 cores.
PCA_FIT_ROWS = 100_000
#: Contig-length bin edges in bp (query length, column 0): length drives quality.
LENGTH_EDGES = (2000, 5000, 10000, 20000, 50000)
#: Bins with fewer queries than this get no correlation (too noisy to print).
MIN_BIN_QUERIES = 5
#: Distances held at once during a search (float32 elements): ~64 MB.
_CHUNK_ELEMENTS = 1 << 24
#: Rows read and transformed at once when streaming the pool.
_POOL_CHUNK = 4096
LABEL_KS = (1, 10)
MISSING_LABELS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "-"})
DEFAULT_LABEL_ROWS = 20_000
CLUSTERING = "k-means (k = number of labels at the rank, 4 seeded restarts)"


# ---------------------------------------------------------------- rows and spaces


def take_rows(matrix: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a (memmapped) matrix, read in sorted order, returned in the asked order."""
    idx = np.asarray(idx, dtype=np.int64)
    out = gather_rows(matrix, idx, np.float32)
    check_rows(out, getattr(matrix, "filename", None) or "matrix", row_numbers=idx)  # NaN rows would break PCA/CLR
    return out


def clr_rows(matrix: np.ndarray, idx: np.ndarray, chunk: int = _POOL_CHUNK) -> np.ndarray:
    """CLR features (n, 2772) of rows ``idx``."""
    out = np.empty((len(idx), N_FEATURES), dtype=np.float32)
    for a in range(0, len(idx), chunk):
        out[a : a + chunk] = clr(take_rows(matrix, idx[a : a + chunk]))
    return out


@dataclass
class PCABaseline:
    """PCA of CLR features: mean and components (dim, 2772), fitted on training rows."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: float
    n_fit: int

    def transform(self, x_clr: np.ndarray) -> np.ndarray:
        return ((x_clr - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(matrix: np.ndarray, train_rows: np.ndarray, dim: int, max_rows: int = PCA_FIT_ROWS, seed: int = 42) -> PCABaseline:
    """PCA of the CLR of (a seeded sample of at most ``max_rows``) ``train_rows``; ``dim`` capped by the data."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    rows = np.asarray(train_rows, dtype=np.int64)
    if rows.shape[0] > max_rows:
        rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
    if rows.shape[0] < 2:
        raise InputError(f"PCA baseline needs at least 2 training rows, got {rows.shape[0]}")
    x = clr_rows(matrix, rows)
    dim = min(dim, x.shape[0], x.shape[1])
    # Exact eigendecomposition of the covariance when rows outnumber features (fast for n >> 2772).
    solver = "covariance_eigh" if x.shape[0] > x.shape[1] else "full"
    pca = PCA(n_components=dim, svd_solver=solver, random_state=seed).fit(x)
    return PCABaseline(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                       float(pca.explained_variance_ratio_.sum()), int(x.shape[0]))


@dataclass
class Space:
    """A space to search: its name, dimension, and how to get vectors of pool positions."""

    name: str
    dim: int
    vectors: Callable[[np.ndarray], np.ndarray]  # pool positions -> vectors (n, dim)
    chunks: Callable[[], Iterator[tuple[int, np.ndarray]]]  # (start, vectors of pool positions start..)


def _array_space(name: str, pool_vectors: np.ndarray) -> Space:
    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, pool_vectors.shape[0], _POOL_CHUNK * 4):
            yield a, pool_vectors[a : a + _POOL_CHUNK * 4]

    return Space(name, pool_vectors.shape[1], lambda pos: pool_vectors[pos], chunks)


def _clr_space(matrix: np.ndarray, pool_rows: np.ndarray) -> Space:
    """The CLR space computed on the fly from the matrix (a pool of 500k x 2772 would not fit in RAM)."""
    def vectors(pos: np.ndarray) -> np.ndarray:
        return clr(take_rows(matrix, pool_rows[pos]))

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, pool_rows.shape[0], _POOL_CHUNK):
            yield a, clr(take_rows(matrix, pool_rows[a : a + _POOL_CHUNK]))

    return Space("CLR", N_FEATURES, vectors, chunks)


# ---------------------------------------------------------------- exact k-NN


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distance between a[i] and b[i] (float64): Euclidean, or cosine distance 1 - cos."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "euclidean":
        return np.sqrt(np.sum((a - b) ** 2, axis=-1))
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return 1.0 - num / np.maximum(den, 1e-300)


def knn(queries: np.ndarray, space: Space, k: int, metric: str = "euclidean",
        exclude: np.ndarray | None = None) -> np.ndarray:
    """Exact k nearest pool positions of each query (Q, k), nearest first.

    Brute force over the pool in chunks (BLAS float32 matmuls for the search;
    the caller recomputes the kept distances exactly). ``exclude[i]`` is a pool
    position query i must not get (itself), or -1.
    """
    if metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    from .neighbors import knn_blocks  # the project's one exact k-NN search

    best_i, _ = knn_blocks(queries, space.chunks(), k, metric, exclude=exclude, dtype=np.float32,
                           chunk_elements=_CHUNK_ELEMENTS)
    if (best_i < 0).any():
        raise InputError(f"the pool has fewer than {k} rows besides the query: lower -k")
    return best_i


# ---------------------------------------------------------------- statistics


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson of x, y with integer weights (multiplicities); w (B, n) gives B correlations."""
    w = np.atleast_2d(w).astype(np.float64)
    sw = w.sum(axis=1)
    mx, my = (w @ x) / sw, (w @ y) / sw
    sxx = w @ (x * x) / sw - mx * mx
    syy = w @ (y * y) / sw - my * my
    sxy = w @ (x * y) / sw - mx * my
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(np.maximum(sxx, 0) * np.maximum(syy, 0))


def _tie_groups(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group of each sorted position): equal values share a group."""
    order = np.argsort(v, kind="stable")
    s = v[order]
    group = np.concatenate([[0], np.cumsum(s[1:] != s[:-1])])
    return order, group


def _weighted_ranks(order: np.ndarray, group: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) every item would get in the sample where item i appears w[i] times."""
    gw = np.bincount(group, weights=w[order])
    cum = np.cumsum(gw)
    gr = cum - (gw - 1.0) / 2.0
    ranks = np.empty(order.shape[0], dtype=np.float64)
    ranks[order] = gr[group]
    return ranks


def spearman_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray, gx=None, gy=None) -> float:
    """Spearman of the sample where pair i appears w[i] times (= scipy's spearmanr of the expanded sample)."""
    ox, gx_ = gx if gx is not None else _tie_groups(x)
    oy, gy_ = gy if gy is not None else _tie_groups(y)
    rx, ry = _weighted_ranks(ox, gx_, w), _weighted_ranks(oy, gy_, w)
    return float(_weighted_pearson(rx, ry, w)[0])


@dataclass
class Correlation:
    """A correlation with its bootstrap 95% CI over queries."""

    value: float
    low: float
    high: float

    def text(self) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        ci = f" [{self.low:.3f}, {self.high:.3f}]" if math.isfinite(self.low) else ""
        return f"{self.value:.3f}{ci}"

    def as_dict(self) -> dict:
        f = lambda v: round(float(v), 6) if math.isfinite(v) else None  # noqa: E731
        return {"value": f(self.value), "ci95": [f(self.low), f(self.high)]}


def correlations(dist: np.ndarray, mse: np.ndarray, n_boot: int, seed: int) -> tuple[Correlation, Correlation]:
    """Pearson and Spearman of (distance, MSE) over all query-neighbour pairs; CI by resampling queries.

    ``dist`` and ``mse`` are (Q, K). A bootstrap sample draws Q queries with
    replacement and takes all their pairs; each query's pairs then weigh its
    multiplicity, which gives exactly the statistic of the expanded sample
    without materialising it.
    """
    nq, k = dist.shape
    x, y = dist.ravel().astype(np.float64), mse.ravel().astype(np.float64)
    ones = np.ones(x.shape[0])
    gx, gy = _tie_groups(x), _tie_groups(y)
    pearson = float(_weighted_pearson(x, y, ones)[0])
    spearman = spearman_weighted(x, y, ones, gx, gy)
    lo_p = hi_p = lo_s = hi_s = math.nan
    if n_boot > 0 and nq > 1:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(nq, np.full(nq, 1.0 / nq), size=n_boot).astype(np.float64)  # (B, Q)
        # Pearson from per-query sums (every pair weighs its query's multiplicity): (B, Q) @ (Q, 5).
        xq, yq = x.reshape(nq, k), y.reshape(nq, k)
        sums = counts @ np.stack([np.full(nq, float(k)), xq.sum(1), yq.sum(1), (xq * xq).sum(1), (yq * yq).sum(1),
                                  (xq * yq).sum(1)], axis=1)
        n_, sx, sy, sxx, syy, sxy = sums.T
        with np.errstate(invalid="ignore", divide="ignore"):
            ps = (sxy / n_ - sx * sy / n_**2) / np.sqrt(np.maximum(sxx / n_ - (sx / n_) ** 2, 0) * np.maximum(syy / n_ - (sy / n_) ** 2, 0))
        ss = np.array([spearman_weighted(x, y, np.repeat(counts[b], k), gx, gy) for b in range(n_boot)])
        lo_p, hi_p = np.nanpercentile(ps, [2.5, 97.5])
        lo_s, hi_s = np.nanpercentile(ss, [2.5, 97.5])
    return Correlation(pearson, float(lo_p), float(hi_p)), Correlation(spearman, float(lo_s), float(hi_s))


# ---------------------------------------------------------------- queries and pool


@dataclass
class QuerySource:
    """Where the held-out query rows and the training rows come from, said in words."""

    val: np.ndarray
    train: np.ndarray
    description: str


def split_rows(n_rows: int, run_dir: str | None = None, val_ids: str | None = None, ids: Sequence[str] | None = None,
               query_fraction: float = DEFAULT_QUERY_FRACTION, seed: int = 42) -> QuerySource:
    """Held-out rows: the run's saved split, else the rows of ``val_ids``, else a seeded random fraction."""
    if run_dir is not None:
        try:
            from .data import load_split
        except ImportError:
            raise InputError("--run-dir needs vae.data.load_split (the trainer's split), which this install lacks; "
                             "use --val-ids or --query-fraction") from None
        split = load_split(run_dir)
        if int(split.n_rows) != n_rows:
            raise InputError(f"{run_dir}: its split was made for a matrix of {split.n_rows:,} rows, this one has {n_rows:,}: "
                             "give the matrix the run was trained on")
        return QuerySource(np.asarray(split.val, np.int64), np.asarray(split.train, np.int64),
                           f"held-out validation rows of the run's saved split ({run_dir})")
    if val_ids is not None:
        if ids is None:
            raise InputError("--val-ids needs the matrix's IDs file (-id IDS.txt)")
        wanted = set(read_ids(val_ids))
        is_val = np.fromiter((i in wanted for i in ids), dtype=bool, count=len(ids))
        if not is_val.any():
            raise InputError(f"{val_ids}: none of its IDs are in the matrix's IDs file")
        return QuerySource(np.flatnonzero(is_val), np.flatnonzero(~is_val), f"rows whose IDs are in {val_ids}")
    if not 0.0 < query_fraction < 1.0:
        raise InputError(f"--query-fraction must be between 0 and 1 (exclusive), got {query_fraction}")
    from .data import make_split

    split = make_split(n_rows, query_fraction, seed)  # train_vae's split: the same rows for the same seed
    return QuerySource(split.val, split.train,
                       f"a seeded random {query_fraction:g} of the rows (seed {seed}; held out only if the encoder "
                       "never saw this matrix: prefer --run-dir)")


# ---------------------------------------------------------------- verify_local_distances


@dataclass
class VerifyOptions:
    """The knobs of ``verify_local_distances``."""

    k: int = DEFAULT_K
    n_queries: int = DEFAULT_QUERIES
    pool_size: int = 0  # 0 = every row
    metric: str = "euclidean"
    n_boot: int = DEFAULT_BOOTSTRAP
    length_edges: Sequence[float] = LENGTH_EDGES
    pca_fit_rows: int = PCA_FIT_ROWS
    seed: int = 42
    batch_size: int = 4096


def _space_stats(dist: np.ndarray, mse: np.ndarray, top_n: Sequence[int], n_boot: int, seed: int) -> dict:
    p, s = correlations(dist, mse, n_boot, seed)
    return {"pearson": p, "spearman": s,
            "top_mse": {n: float(mse[:, :n].mean()) for n in top_n},
            "queries": int(dist.shape[0])}


def verify(matrix_path: str, encoder: Encoder, source: QuerySource, opts: VerifyOptions,
           pca_matrix_path: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the verification (see the module docstring); returns a result dict (numbers, sizes, settings)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    check_width(encoder)
    if opts.metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, not {opts.metric!r}")
    if opts.k < 1:
        raise InputError("-k must be >= 1")
    m = open_matrix(matrix_path)
    n = m.shape[0]
    rng = np.random.default_rng(opts.seed)
    val = source.val
    if val.size == 0:
        raise InputError("no held-out rows to draw queries from")
    queries = np.sort(rng.choice(val, size=min(opts.n_queries, val.size), replace=False))
    if opts.pool_size and opts.pool_size < n:
        # The queries are always in the pool (their own match is excluded), so pools of any size are comparable.
        others = np.setdiff1d(np.arange(n), queries)
        pool = np.sort(np.concatenate([queries, rng.choice(others, size=max(0, opts.pool_size - queries.size), replace=False)]))
    else:
        pool = np.arange(n, dtype=np.int64)
    if pool.size <= opts.k:
        raise InputError(f"the pool has {pool.size:,} rows: -k {opts.k} needs more (lower -k)")
    qpos = np.searchsorted(pool, queries)
    top_n = tuple(t for t in TOP_N if t <= opts.k)

    log(f"embedding the pool ({pool.size:,} rows) with {encoder.source} ...")
    spaces = [_array_space("VAE", z_mean_of(encoder, m, pool, opts.batch_size))]
    if pca_matrix_path:
        pm = open_matrix(pca_matrix_path)
        pca_rows, pca_from = np.arange(pm.shape[0]), f"all rows of {pca_matrix_path}"
    else:
        pm, pca_rows, pca_from = m, source.train, "the training rows"
    log(f"fitting PCA-{encoder.latent} on {min(len(pca_rows), opts.pca_fit_rows):,} of {pca_from} ...")
    pca = fit_pca(pm, pca_rows, encoder.latent, opts.pca_fit_rows, opts.seed)
    pca_pool = np.empty((pool.size, pca.components.shape[0]), dtype=np.float32)
    for a in range(0, pool.size, _POOL_CHUNK):
        pca_pool[a : a + _POOL_CHUNK] = pca.transform(clr(take_rows(m, pool[a : a + _POOL_CHUNK])))
    spaces.append(_array_space("PCA", pca_pool))
    spaces.append(_clr_space(m, pool))

    query_clr = clr(take_rows(m, queries))
    lengths = np.asarray(m[queries, LENGTH_COLUMN], dtype=np.float64)
    # Random pairs: the same number per query as neighbours, drawn from the pool (never the query itself).
    rand = rng.integers(0, pool.size - 1, size=(queries.size, opts.k))
    rand += rand >= qpos[:, None]
    rand_mse = np.stack([np.mean((clr(take_rows(m, pool[r])) - qc) ** 2, axis=1) for r, qc in zip(rand, query_clr)])

    edges = [0.0, *sorted(float(e) for e in opts.length_edges), math.inf]
    bins = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
    bin_of = np.searchsorted(np.asarray(edges[1:-1]), lengths, side="right")

    results: dict = {}
    for space in spaces:
        log(f"{space.name}: exact {opts.k}-NN of {queries.size:,} queries in a pool of {pool.size:,} ({opts.metric}) ...")
        nb = knn(space.vectors(qpos), space, opts.k, opts.metric, exclude=qpos)
        dist = np.empty(nb.shape, dtype=np.float64)
        mse = np.empty(nb.shape, dtype=np.float64)
        for i in range(queries.size):
            nclr = clr(take_rows(m, pool[nb[i]]))
            mse[i] = np.mean((nclr.astype(np.float64) - query_clr[i]) ** 2, axis=1)
            nvec = nclr if space.name == "CLR" else space.vectors(nb[i])
            qvec = query_clr[i] if space.name == "CLR" else space.vectors(qpos[i : i + 1])[0]
            dist[i] = pair_distances(np.broadcast_to(qvec, nvec.shape), nvec, opts.metric)
        # Neighbours sorted by the exactly recomputed distance (float32 search order may swap near-ties).
        order = np.argsort(dist, axis=1, kind="stable")
        dist, mse = np.take_along_axis(dist, order, axis=1), np.take_along_axis(mse, order, axis=1)
        res = _space_stats(dist, mse, top_n, opts.n_boot, opts.seed)
        res["dim"] = space.dim
        res["bins"] = []
        for b, (lo, hi) in enumerate(bins):
            sel = bin_of == b
            entry = {"min_length": lo, "max_length": hi if math.isfinite(hi) else None, "queries": int(sel.sum())}
            if sel.sum() >= MIN_BIN_QUERIES:
                st = _space_stats(dist[sel], mse[sel], top_n, opts.n_boot, opts.seed)
                entry.update(st)
                entry["random_mse"] = float(rand_mse[sel].mean())
            res["bins"].append(entry)
        results[space.name] = res

    return {
        "matrix": matrix_path,
        "rows": int(n),
        "encoder": encoder.source,
        "latent": int(encoder.latent),
        "pool_size": int(pool.size),
        "queries": int(queries.size),
        "query_source": source.description,
        "k": opts.k,
        "metric": opts.metric,
        "bootstrap": opts.n_boot,
        "seed": opts.seed,
        "pca": {"dim": int(pca.components.shape[0]), "fit_rows": pca.n_fit, "fitted_on": pca_from,
                "explained_variance": round(pca.explained_variance_ratio, 4)},
        "random_mse": float(rand_mse.mean()),
        "top_n": list(top_n),
        "spaces": results,
        "clr_by_construction": opts.metric == "euclidean",
    }


def _fmt_len(lo: float, hi: float | None) -> str:
    def f(v):
        return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"

    return f"{f(lo)}-{f(hi)}" if hi is not None else f">= {f(lo)}"


def format_verify(r: dict) -> str:
    """The human-readable report of :func:`verify`."""
    lines = [
        f"verify_local_distances: {r['matrix']} ({r['rows']:,} rows), encoder {r['encoder']} (latent {r['latent']})",
        f"pool size: {r['pool_size']:,} rows (exact search; correlations over K-NN pairs are comparable only at equal pools)",
        f"queries: {r['queries']:,} = {r['query_source']}",
        f"K = {r['k']} neighbours, metric {r['metric']}, bootstrap {r['bootstrap']} resamples of queries (95% CI), seed {r['seed']}",
        f"PCA baseline: {r['pca']['dim']} components fitted on {r['pca']['fit_rows']:,} of {r['pca']['fitted_on']} "
        f"(explained variance {r['pca']['explained_variance']:.3f})",
        "",
        "latent distance vs k-mer CLR MSE over the K-NN pairs; then mean CLR-MSE of the top-n neighbours",
    ]
    top = r["top_n"]
    head = f"{'space':<6}{'dim':>6}  {'Pearson [95% CI]':<24}{'Spearman [95% CI]':<24}" + "".join(f"{'top' + str(t):>9}" for t in top)
    lines.append(head)
    for name, s in r["spaces"].items():
        sp = s["spearman"].text() + (" *" if name == "CLR" and r["clr_by_construction"] else "")
        lines.append(f"{name:<6}{s['dim']:>6}  {s['pearson'].text():<24}{sp:<24}" + "".join(f"{s['top_mse'][t]:>9.4f}" for t in top))
    lines.append(f"{'random pairs':<36}{'':<24}" + f"{r['random_mse']:>9.4f}  (mean CLR-MSE of random pool pairs)")
    if r["clr_by_construction"]:
        lines.append("* CLR: Spearman is 1 by construction (its Euclidean distance is sqrt(2772 x CLR-MSE)); "
                     "it is the ceiling, not a competitor. Read the VAE against PCA.")
    lines += ["", "by query contig length (bp):"]
    lines.append(f"{'length':<12}{'queries':>8}  {'space':<6}{'Pearson':>9}{'Spearman':>10}" + "".join(f"{'top' + str(t):>9}" for t in top) + f"{'random':>9}")
    first = next(iter(r["spaces"].values()))
    for b, entry in enumerate(first["bins"]):
        label = _fmt_len(entry["min_length"], entry["max_length"])
        if entry["queries"] == 0:
            continue
        if "pearson" not in entry:
            lines.append(f"{label:<12}{entry['queries']:>8}  (fewer than {MIN_BIN_QUERIES} queries)")
            continue
        for j, (name, s) in enumerate(r["spaces"].items()):
            e = s["bins"][b]
            lines.append(f"{label if j == 0 else '':<12}{e['queries'] if j == 0 else '':>8}  {name:<6}{e['pearson'].value:>9.3f}"
                         f"{e['spearman'].value:>10.3f}" + "".join(f"{e['top_mse'][t]:>9.4f}" for t in top)
                         + (f"{e['random_mse']:>9.4f}" if j == 0 else ""))
    return "\n".join(lines)


def jsonable(obj):
    """Correlations and NumPy scalars -> plain JSON values."""
    if isinstance(obj, Correlation):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ---------------------------------------------------------------- evaluate_labels


@dataclass
class Labels:
    """Label columns of a TSV, aligned to matrix rows: ``values[rank]`` is a list with None for missing."""

    ranks: list[str]
    rows: np.ndarray  # matrix rows that have an entry in the TSV
    values: dict[str, list[str | None]]
    matched_by_prefix: int


def read_labels(path: str, ids: Sequence[str], ranks: Sequence[str] | None = None) -> Labels:
    """Read a TSV (header: ID column, then one column per rank) and align it to the matrix IDs.

    An ID absent from the TSV is looked up without a trailing ``.N`` (the piece
    number ``--chop`` appends), so labels given per contig cover its pieces.
    """
    with reading(path), open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if not header or len(header) < 2:
            raise InputError(f"{path}: expected a header line: ID<TAB>rank1<TAB>rank2...")
        table = {}
        for lineno, rec in enumerate(reader, 2):
            if not rec or not rec[0].strip():
                continue
            if len(rec) != len(header):
                raise InputError(f"{path}: line {lineno} has {len(rec)} fields, the header has {len(header)}")
            key, vals = rec[0].strip(), [v.strip() for v in rec[1:]]
            if key in table and table[key] != vals:
                raise InputError(f"{path}: line {lineno}: {key} appears again with other labels; give each ID one line")
            table[key] = vals
    all_ranks = [h.strip() for h in header[1:]]
    want = list(ranks) if ranks else all_ranks
    for r in want:
        if r not in all_ranks:
            raise InputError(f"{path}: no column {r!r} (columns: {', '.join(all_ranks)})")
    cols = [all_ranks.index(r) for r in want]
    rows, values, by_prefix = [], {r: [] for r in want}, 0
    for i, ident in enumerate(ids):
        rec = table.get(ident)
        if rec is None:
            base, dot, piece = ident.rpartition(".")
            if dot and piece.isdigit():
                rec = table.get(base)
                by_prefix += rec is not None
        if rec is None:
            continue
        rows.append(i)
        for r, c in zip(want, cols):
            v = rec[c]
            values[r].append(None if v.lower() in MISSING_LABELS else v)
    if not rows:
        raise InputError(f"{path}: none of its IDs match the matrix's IDs (first matrix ID: {ids[0] if ids else 'none'!r})")
    return Labels(want, np.asarray(rows, np.int64), values, by_prefix)


def self_knn(vectors: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact k nearest rows of every row among the others (itself excluded), (n, min(k, n - 1))."""
    k = min(k, vectors.shape[0] - 1)
    return knn(vectors, _array_space("x", vectors), k, metric, exclude=np.arange(vectors.shape[0]))


def knn_agreement(neighbours: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Mean fraction of each row's k nearest neighbours (from :func:`self_knn`) that share its label."""
    same = labels[neighbours] == labels[:, None]
    return {k: float(same[:, : min(k, neighbours.shape[1])].mean()) for k in ks}


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of points whose cluster's majority label is their own."""
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    return float(table.max(axis=1).sum() / labels.shape[0])


def cluster_agreement(vectors: np.ndarray, labels: np.ndarray, metric: str, seed: int) -> dict[str, float]:
    """k-means with k = number of distinct labels, scored against the labels (ARI, V-measure, purity, completeness)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

    x = _normalise(vectors) if metric == "cosine" else vectors
    n_labels = int(np.unique(labels).shape[0])
    km = KMeans(n_clusters=n_labels, n_init=4, random_state=seed).fit(np.asarray(x, dtype=np.float32))
    h, c, v = homogeneity_completeness_v_measure(labels, km.labels_)
    return {"ari": float(adjusted_rand_score(labels, km.labels_)), "v_measure": float(v),
            "purity": purity(labels, km.labels_), "completeness": float(c), "homogeneity": float(h)}


def label_agreement(matrix_path: str, ids_path: str, labels_path: str, encoder: Encoder, ranks: Sequence[str] | None = None,
                    metric: str = "euclidean", max_rows: int = DEFAULT_LABEL_ROWS, pca_matrix_path: str | None = None,
                    pca_fit_rows: int = PCA_FIT_ROWS, seed: int = 42, batch_size: int = 4096,
                    ks: Sequence[int] = LABEL_KS, log: Callable[[str], None] | None = None) -> dict:
    """Label agreement of the VAE, PCA and CLR spaces (see the module docstring); returns a result dict."""
    log = log or (lambda m: print(m, file=sys.stderr))
    check_width(encoder)
    if metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    m = open_matrix(matrix_path)
    ids = read_ids(ids_path)
    if len(ids) != m.shape[0]:
        raise InputError(f"{matrix_path} has {m.shape[0]:,} rows but {ids_path} has {len(ids):,} IDs")
    lab = read_labels(labels_path, ids, ranks)
    rows = lab.rows
    keep = np.arange(rows.shape[0])
    if max_rows and rows.shape[0] > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows.shape[0], size=max_rows, replace=False))
        rows = rows[keep]
    if rows.shape[0] < 3:
        raise InputError(f"only {rows.shape[0]} labelled rows: need at least 3")
    log(f"embedding {rows.shape[0]:,} labelled rows ...")
    x_clr = clr_rows(m, rows)
    if pca_matrix_path:
        pm = open_matrix(pca_matrix_path)
        pca = fit_pca(pm, np.arange(pm.shape[0]), encoder.latent, pca_fit_rows, seed)
        pca_from = f"rows of {pca_matrix_path}"
    else:
        pca = fit_pca(m, rows, encoder.latent, pca_fit_rows, seed)
        pca_from = "the evaluated rows themselves (give --pca-train TRAIN.npy to fit on training data)"
    vecs = {"VAE": z_mean_of(encoder, m, rows, batch_size), "PCA": pca.transform(x_clr), "CLR": x_clr}
    result_ranks = {}
    neighbours: dict[tuple[str, bytes], np.ndarray] = {}  # ranks labelled on the same rows share one search
    for rank in lab.ranks:
        values = [lab.values[rank][i] for i in keep]
        have = np.array([v is not None for v in values])
        y = np.array([v for v in values if v is not None], dtype=object)
        n_labels = len(set(y.tolist()))
        entry: dict = {"rows": int(have.sum()), "labels": n_labels, "spaces": {}}
        if have.sum() < 3 or n_labels < 2:
            entry["note"] = "fewer than 3 labelled rows or only one label: skipped"
            result_ranks[rank] = entry
            continue
        _, y_int = np.unique(y, return_inverse=True)
        log(f"{rank}: {have.sum():,} rows, {n_labels} labels ...")
        for name, v in vecs.items():
            sub = v[have]
            key = (name, np.packbits(have).tobytes())
            if key not in neighbours:
                neighbours[key] = self_knn(sub, max(ks), metric)
            agree = knn_agreement(neighbours[key], y_int, ks)
            entry["spaces"][name] = {**{f"knn@{k}": agree[k] for k in ks}, **cluster_agreement(sub, y_int, metric, seed)}
        result_ranks[rank] = entry
    return {
        "matrix": matrix_path, "labels": labels_path, "encoder": encoder.source, "latent": int(encoder.latent),
        "rows": int(rows.shape[0]), "labelled_rows": int(lab.rows.shape[0]), "matched_by_piece_prefix": lab.matched_by_prefix,
        "metric": metric, "seed": seed, "clustering": CLUSTERING,
        "pca": {"dim": int(pca.components.shape[0]), "fit_rows": pca.n_fit, "fitted_on": pca_from},
        "ks": list(ks), "ranks": result_ranks,
    }


LABEL_METRICS = ("knn@{k}", "ari", "v_measure", "purity", "completeness")


def format_labels(r: dict) -> str:
    """The table of :func:`label_agreement`: one line per rank and measure, the spaces side by side."""
    lines = [
        f"evaluate_labels: {r['rows']:,} labelled rows of {r['matrix']} (labels {r['labels']}); encoder {r['encoder']}",
        f"metric {r['metric']}; clustering: {r['clustering']}; PCA-{r['pca']['dim']} fitted on {r['pca']['fitted_on']}",
        "knn@k: mean fraction of a row's k nearest neighbours with its label; clustering scored against the labels",
        "",
        f"{'rank':<12}{'rows':>7}{'labels':>7}  {'measure':<13}" + "".join(f"{s:>8}" for s in SPACES),
    ]
    measures = [m.format(k=k) for m in LABEL_METRICS[:1] for k in r["ks"]] + list(LABEL_METRICS[1:])
    for rank, e in r["ranks"].items():
        if not e["spaces"]:
            lines.append(f"{rank:<12}{e['rows']:>7}{e['labels']:>7}  {e.get('note', '')}")
            continue
        for j, meas in enumerate(measures):
            lines.append((f"{rank:<12}{e['rows']:>7}{e['labels']:>7}  " if j == 0 else " " * 28)
                         + f"{meas:<13}" + "".join(f"{e['spaces'][s][meas]:>8.3f}" for s in SPACES))
    return "\n".join(lines)


# ---------------------------------------------------------------- the two commands


@dataclass
class EncoderArgs:
    """Options both evaluation commands take (the encoder, the baselines, the output)."""

    encoder: str | None = option(None, flags=("-e", "--encoder"), metavar="ENCODER",
                                 help="encoder .keras or portable export (.json); default: RUN_DIR/encoder.keras with "
                                      "--run-dir, else the shipped model")
    engine: str = option("auto", choices=("auto", "keras", "numpy"), help="inference engine (see embedding --help)")
    batch_size: int = option(4096, metavar="N", help="rows per inference batch")
    metric: str = option("euclidean", choices=METRICS, help="distance in every space")
    pca_train: str | None = option(None, metavar="TRAIN.npy",
                                   help="fit the PCA baseline on the rows of this matrix (e.g. the training matrix)")
    pca_fit_rows: int = option(PCA_FIT_ROWS, metavar="N", help="fit PCA on a seeded sample of at most N rows")
    seed: int = option(42, help="seed of every sample (queries, pool, bootstrap, PCA, k-means)")
    json: str | None = option(None, metavar="PATH",
                              help="also write the results as JSON to PATH ('-' = stdout instead of the table)")
    quiet: bool = option(False, help="no progress messages")

    def __post_init__(self) -> None:
        check_non_negative(self, *(n for n in ("batch_size", "pca_fit_rows", "queries", "pool_size", "neighbours",
                                               "bootstrap", "max_rows") if hasattr(self, n)))

    def log(self) -> Callable[[str], None]:
        return (lambda m: None) if self.quiet else (lambda m: print(m, file=sys.stderr))


@dataclass
class VerifyCommand(EncoderArgs):
    """Everything ``verify_local_distances`` takes (the knobs of :func:`verify` are :meth:`knobs`)."""

    input: str | None = option(flags=("-i", "--input"), required=True, metavar="KMERS.npy",
                               help="k-mer matrix (the one the run was trained on, with --run-dir)")
    run_dir: str | None = option(None, metavar="RUN",
                                 help="train_vae output folder: queries come from its saved validation split")
    ids: str | None = option(None, flags=("-id", "--ids"), metavar="IDS.txt", help="the matrix's IDs (needed by --val-ids)")
    val_ids: str | None = option(None, metavar="FILE", help="without --run-dir: IDs of held-out rows, one per line")
    query_fraction: float = option(DEFAULT_QUERY_FRACTION, metavar="F",
                                   help="without --run-dir or --val-ids: hold out a seeded random fraction F of the rows")
    queries: int = option(DEFAULT_QUERIES, metavar="N", help="number of query rows drawn from the held-out rows")
    pool_size: int = option(0, metavar="N",
                            help="search among N rows (a seeded sample that includes the queries); 0 = every row")
    neighbours: int = option(DEFAULT_K, flags=("-k", "--neighbours"), metavar="K", help="nearest neighbours per query")
    bootstrap: int = option(DEFAULT_BOOTSTRAP, metavar="N",
                            help="bootstrap resamples of queries for the 95%% CIs (0 = none)")
    length_bins: list[float] = option(default_factory=lambda: list(LENGTH_EDGES), type=comma_floats, metavar="E1,E2,...",
                                      help="contig-length bin edges in bp")

    def knobs(self) -> VerifyOptions:
        return VerifyOptions(k=self.neighbours, n_queries=self.queries, pool_size=self.pool_size, metric=self.metric,
                             n_boot=self.bootstrap, length_edges=self.length_bins, pca_fit_rows=self.pca_fit_rows,
                             seed=self.seed, batch_size=max(1, self.batch_size))


@dataclass
class LabelsCommand(EncoderArgs):
    """Everything ``evaluate_labels`` takes."""

    input: str | None = option(flags=("-i", "--input"), required=True, metavar="KMERS.npy", help="k-mer matrix")
    ids: str | None = option(flags=("-id", "--ids"), required=True, metavar="IDS.txt", help="its IDs file")
    labels: str | None = option(flags=("-l", "--labels"), required=True, metavar="LABELS.tsv",
                                help="ID -> label columns (with a header line)")
    ranks: str | None = option(None, metavar="R1,R2", help="columns to evaluate (default: all)")
    max_rows: int = option(DEFAULT_LABEL_ROWS, metavar="N",
                           help="evaluate a seeded sample of at most N labelled rows (k-NN and k-means are "
                                "quadratic-ish); 0 = all")


def encoder_for(model: str | None, run_dir: str | None, engine: str) -> Encoder:
    """-e, else the run's encoder.keras, else the default model."""
    import os

    from .artifacts import KERAS_NAME
    from .encoder import load_encoder

    if model is None and run_dir is not None and os.path.exists(os.path.join(run_dir, KERAS_NAME)):
        model = os.path.join(run_dir, KERAS_NAME)
    return load_encoder(model, engine)


def emit_json(path: str, result: dict) -> None:
    """The result as JSON to a file (atomically) or to stdout ('-')."""
    import json

    from .matrix import atomic_text, check_output_dir

    text = json.dumps(jsonable(result), indent=1, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    check_output_dir(path)
    with atomic_text(path) as fh:
        fh.write(text)


def check_run_input(run_dir: str, matrix: str) -> None:
    """The matrix must be the one the run was trained on (its recorded fingerprint), or held-out rows are not held out."""
    import json
    import os

    from .artifacts import CONFIG_FILE
    from .matrix import check_fingerprint

    try:
        with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as fh:
            recorded = json.load(fh).get("input", {}).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the split check is all there is (older or foreign run folder)
    check_fingerprint(matrix, recorded, f"the run {run_dir}")


def _report(opts: EncoderArgs, result: dict, table: str) -> None:
    if opts.json != "-":
        print(table)
    if opts.json:
        emit_json(opts.json, result)


def run_verify(opts: VerifyCommand) -> dict:
    """``verify_local_distances``: check the inputs, pick the held-out rows and the encoder, :func:`verify`, report."""
    from .paths import check_paths, encoder_files

    check_paths([opts.input, opts.ids, opts.val_ids, opts.pca_train] + encoder_files(opts.encoder), [opts.json])
    n_rows = open_matrix(opts.input).shape[0]
    ids = read_ids(opts.ids) if opts.ids else None
    if ids is not None and len(ids) != n_rows:
        raise InputError(f"{opts.input} has {n_rows:,} rows but {opts.ids} has {len(ids):,} IDs")
    if opts.run_dir and opts.val_ids:
        raise InputError("give --run-dir or --val-ids, not both")
    source = split_rows(n_rows, opts.run_dir, opts.val_ids, ids, opts.query_fraction, opts.seed)
    if opts.run_dir:
        check_run_input(opts.run_dir, opts.input)
    encoder = encoder_for(opts.encoder, opts.run_dir, opts.engine)
    result = verify(opts.input, encoder, source, opts.knobs(), pca_matrix_path=opts.pca_train, log=opts.log())
    _report(opts, result, format_verify(result))
    return result


def run_labels(opts: LabelsCommand) -> dict:
    """``evaluate_labels``: :func:`label_agreement` of the encoder's space and the baselines, reported."""
    from .paths import check_paths, encoder_files

    check_paths([opts.input, opts.ids, opts.labels, opts.pca_train] + encoder_files(opts.encoder), [opts.json])
    encoder = encoder_for(opts.encoder, None, opts.engine)
    ranks = [r.strip() for r in opts.ranks.split(",") if r.strip()] if opts.ranks else None
    result = label_agreement(opts.input, opts.ids, opts.labels, encoder, ranks, opts.metric, opts.max_rows,
                             opts.pca_train, opts.pca_fit_rows, opts.seed, max(1, opts.batch_size), log=opts.log())
    _report(opts, result, format_labels(result))
    return result
