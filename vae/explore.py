"""Exploring the latent space: loading embeddings and maps, t-SNE, HDBSCAN clusters, group comparison.

Everything here takes and returns NumPy arrays so it can be called from Python
(the demo, a notebook) as well as from the commands in :mod:`vae.cli`; figures
live in :mod:`vae.plots`, neighbour search in :mod:`vae.neighbors`.

An embeddings matrix is what ``embedding`` writes: (N, 1 + latent), column 0
the contig length, columns 1.. the encoder's z_mean. A plain (N, latent)
matrix is accepted with ``length_column=False``. A map is (N, 2) t-SNE
coordinates. Rows are aligned with an IDs file, one ID per line.
"""
from __future__ import annotations

import csv
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import InputError
from .matrix import Embeddings, atomic_text, load_coords, load_embeddings, open_matrix, read_ids  # noqa: F401 (re-exported)
from .runtime import n_threads  # noqa: F401 (re-exported: bench and older callers import it from here)

#: Noise label of HDBSCAN (points in no cluster).
NOISE = -1


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def subsample(n: int, max_points: int, seed: int = 42) -> np.ndarray | None:
    """Sorted row indices of a seeded random subsample of ``max_points`` rows, or None when ``n`` fits."""
    if max_points <= 0 or n <= max_points:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# --------------------------------------------------------------------------- t-SNE


def auto_exaggeration(n: int) -> float:
    """Exaggeration of the main t-SNE phase for ``n`` points: 1 up to 100k, rising log-linearly to 4 at 1M and beyond.

    Large maps with plain t-SNE (exaggeration 1) fragment clusters into many
    islands and lose the global layout; exaggeration ~4 at millions of points
    keeps clusters compact (Kobak & Berens 2019, Böhm et al. 2022).
    """
    if n <= 100_000:
        return 1.0
    return float(min(4.0, 1.0 + 3.0 * math.log10(n / 100_000)))


#: Below this many points t-SNE uses Barnes-Hut gradients, FFT at and above.
BH_MAX_POINTS = 10_000


def tsne_settings(
    n: int,
    *,
    perplexity: float = 30.0,
    affinity: str = "perplexity",
    k_neighbors: int | None = None,
    neighbors: str = "auto",
    exaggeration: float | None = None,
    early_exaggeration: float = 12.0,
    early_exaggeration_iter: int = 250,
    n_iter: int = 500,
    initialization: str = "pca",
    pca_dims: int = 0,
    threads: int = 0,
    seed: int = 42,
) -> dict:
    """The t-SNE settings that :func:`run_tsne` will use for ``n`` points, with every 'auto' resolved."""
    if affinity not in ("perplexity", "uniform"):
        raise InputError(f"affinity must be 'perplexity' or 'uniform', not {affinity!r}")
    if neighbors not in ("auto", "annoy", "hnsw", "exact"):
        raise InputError(f"neighbors must be auto, annoy, hnsw or exact, not {neighbors!r}")
    if initialization not in ("pca", "spectral", "random"):
        raise InputError(f"initialization must be pca, spectral or random, not {initialization!r}")
    if n < 4:
        raise InputError(f"t-SNE needs at least 4 points, got {n}")
    if affinity == "perplexity":
        if perplexity <= 0:
            raise InputError(f"perplexity must be > 0, got {perplexity}")
        # openTSNE needs 3 * perplexity neighbours: shrink it on tiny inputs rather than fail.
        perplexity = float(min(perplexity, (n - 1) / 3))
        k = int(min(n - 1, 3 * perplexity))
    else:
        k = int(min(n - 1, k_neighbors or 15))
        if k < 1:
            raise InputError(f"k_neighbors must be >= 1, got {k_neighbors}")
    if neighbors == "auto":
        neighbors = "exact" if n < 1000 else "annoy"
    return {
        "n_points": n,
        "affinity": affinity,
        "perplexity": perplexity if affinity == "perplexity" else None,
        "k_neighbors": k,
        "neighbors": neighbors,
        "exaggeration": float(exaggeration) if exaggeration is not None else auto_exaggeration(n),
        "early_exaggeration": float(early_exaggeration),
        "early_exaggeration_iter": int(early_exaggeration_iter),
        "n_iter": int(n_iter),
        "learning_rate": "auto (N / exaggeration of the phase)",
        "initialization": initialization,
        "pca_dims": int(pca_dims),
        # FFT's interpolation grid has a fixed cost per iteration that dominates
        # below ~10k points; Barnes-Hut is faster there (openTSNE's own rule).
        "negative_gradient_method": "fft" if n >= BH_MAX_POINTS else "bh",
        "threads": n_threads(threads),
        "seed": int(seed),
    }


def reduce_pca(x: np.ndarray, dims: int, seed: int = 42) -> np.ndarray:
    """Project onto the first ``dims`` principal components (randomised SVD), float32."""
    from sklearn.decomposition import PCA

    if dims <= 0 or dims >= x.shape[1]:
        return x
    return PCA(n_components=dims, svd_solver="randomized", random_state=seed).fit_transform(x).astype(np.float32)


def run_tsne(x: np.ndarray, *, quiet: bool = False, progress: bool = True, **settings) -> np.ndarray:
    """2-D t-SNE (openTSNE; FFT-accelerated from BH_MAX_POINTS points, Barnes-Hut below) of the rows of ``x``; returns (N, 2) float32 coordinates.

    Keyword settings are those of :func:`tsne_settings` (perplexity, affinity,
    k_neighbors, neighbors, exaggeration, n_iter, threads, seed ...). Stage
    messages and a progress bar over iterations go to stderr unless ``quiet``.
    """
    from openTSNE import TSNEEmbedding, affinity as aff_mod, initialization as init_mod

    s = tsne_settings(x.shape[0], **settings)
    x = np.ascontiguousarray(x, dtype=np.float32)
    jobs, seed = s["threads"], s["seed"]
    t0 = time.perf_counter()
    if s["pca_dims"]:
        _log(f"tsne: PCA {x.shape[1]} -> {s['pca_dims']} dimensions ...", quiet)
        x = reduce_pca(x, s["pca_dims"], seed)
    _log(f"tsne: {s['k_neighbors']} nearest neighbours of {x.shape[0]:,} points ({s['neighbors']}, {jobs} threads) ...", quiet)
    if s["affinity"] == "perplexity":
        P = aff_mod.PerplexityBasedNN(x, perplexity=s["perplexity"], method=s["neighbors"], n_jobs=jobs, random_state=seed)
    else:
        P = aff_mod.Uniform(x, k_neighbors=s["k_neighbors"], method=s["neighbors"], n_jobs=jobs, random_state=seed)
    # The kNN index (with its copy of the data) is no longer needed: free it before the optimisation.
    P.knn_index = None
    _log(f"tsne: affinities done in {time.perf_counter() - t0:.1f} s; {s['initialization']} initialisation ...", quiet)
    if s["initialization"] == "pca":
        init = init_mod.pca(x, n_components=2, random_state=seed)
    elif s["initialization"] == "spectral":
        init = init_mod.spectral(P.P, n_components=2, random_state=seed)
    else:
        init = init_mod.random(x.shape[0], n_components=2, random_state=seed)
    del x
    emb = TSNEEmbedding(init, P, negative_gradient_method=s["negative_gradient_method"], n_jobs=jobs, random_state=seed)

    total = s["early_exaggeration_iter"] + s["n_iter"]
    bar = None
    if progress and not quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="it", desc="tsne", file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
    every = 10
    offset = [0]

    def tick(iteration: int, error: float, embedding) -> None:
        bar.n = offset[0] + iteration  # openTSNE passes the 1-based iteration of the phase
        bar.set_postfix_str(f"KL {error:.3f}", refresh=False)
        bar.refresh()

    cb = {"callbacks": [tick], "callbacks_every_iters": every} if bar is not None else {}
    try:
        if s["early_exaggeration_iter"]:
            emb = emb.optimize(n_iter=s["early_exaggeration_iter"], exaggeration=max(s["early_exaggeration"], s["exaggeration"]),
                               momentum=0.8, inplace=True, **cb)
        offset[0] = s["early_exaggeration_iter"]
        if s["n_iter"]:
            emb = emb.optimize(n_iter=s["n_iter"], exaggeration=s["exaggeration"], momentum=0.8, inplace=True, **cb)
        if bar is not None:
            bar.n = total
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    _log(f"tsne: {total} iterations done, {time.perf_counter() - t0:.1f} s in all", quiet)
    out = np.asarray(emb, dtype=np.float32)
    if not np.isfinite(out).all():
        # e.g. all points identical: the affinities are undefined and openTSNE returns NaN.
        raise InputError(f"t-SNE gave non-finite coordinates for {int((~np.isfinite(out).all(axis=1)).sum()):,} of "
                         f"{out.shape[0]:,} points (are the points identical or nearly so?); nothing written")
    return out


def knn_preservation(x: np.ndarray, y: np.ndarray, k: int = 10, n_queries: int = 1000, seed: int = 42) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours in ``x`` that are also among its ``k`` nearest in ``y``.

    Exact search on a seeded sample of ``n_queries`` points: a quick check that
    a map keeps local neighbourhoods (1 = perfect, k/N = random).
    """
    from .neighbors import exact_knn

    n = x.shape[0]
    q = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    nx, _ = exact_knn(x, x[q], k + 1)
    ny, _ = exact_knn(y, y[q], k + 1)
    hits = [len((set(a.tolist()) - {i}) & (set(b.tolist()) - {i})) / k for i, a, b in zip(q.tolist(), nx, ny)]
    return float(np.mean(hits))


# --------------------------------------------------------------------------- clustering


def default_min_cluster_size(n: int) -> int:
    """HDBSCAN min_cluster_size for ``n`` points: the original 1000 at 4.8M, scaled with N, at least 15.

    Keeping the smallest cluster the same fraction of the map (1/4800) makes the
    result comparable across map sizes; the floor keeps small maps from
    splitting into tens of fragments of a few points.
    """
    return max(15, int(round(n * 1000 / 4.8e6)))


def default_min_samples(min_cluster_size: int) -> int:
    """HDBSCAN min_samples: a tenth of min_cluster_size as in the original (100 for 1000), at least 5."""
    return max(5, int(round(min_cluster_size / 10)))


def cluster_points(
    x: np.ndarray,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    threads: int = 0,
) -> np.ndarray:
    """HDBSCAN labels (int32, noise = -1) of the rows of ``x`` (t-SNE coordinates or latent vectors).

    Clusters are renumbered by decreasing size (0 is the largest), so labels
    are stable and readable. Defaults scale with N (:func:`default_min_cluster_size`).
    """
    import hdbscan

    n = x.shape[0]
    mcs = int(min_cluster_size or default_min_cluster_size(n))
    ms = int(min_samples or default_min_samples(mcs))
    if mcs < 2:
        raise InputError(f"min_cluster_size must be >= 2, got {mcs}")
    if ms < 1:
        raise InputError(f"min_samples must be >= 1, got {ms}")
    if n <= max(mcs, ms):
        raise InputError(f"{n:,} points are too few for min_cluster_size={mcs}, min_samples={ms}")
    model = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, core_dist_n_jobs=n_threads(threads))
    raw = model.fit_predict(np.ascontiguousarray(x, dtype=np.float64)).astype(np.int64)
    return relabel_by_size(raw)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster labels 0.. by decreasing size (ties by old label); noise stays -1."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, NOISE, dtype=np.int32)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = np.lexsort((ids, -counts))
    mapping = np.full(int(ids.max()) + 1 if ids.size else 1, NOISE, dtype=np.int32)
    mapping[ids[order]] = np.arange(ids.size, dtype=np.int32)
    keep = labels >= 0
    out[keep] = mapping[labels[keep]]
    return out


def cluster_summary(labels: np.ndarray) -> dict:
    """Numbers of a clustering: points, clusters, noise fraction and the size distribution."""
    labels = np.asarray(labels)
    n = int(labels.size)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
    sizes = np.sort(sizes[sizes > 0])[::-1]
    n_noise = int((labels < 0).sum())
    q = (lambda p: int(np.percentile(sizes, p))) if sizes.size else (lambda p: 0)
    return {
        "n_points": n,
        "n_clusters": int(sizes.size),
        "n_noise": n_noise,
        "noise_fraction": n_noise / n if n else 0.0,
        "size_min": q(0),
        "size_median": q(50),
        "size_max": q(100),
        "largest_fraction": float(sizes[0] / n) if sizes.size else 0.0,
        "sizes": sizes.tolist(),
    }


def format_cluster_summary(summary: dict) -> str:
    """One line for stderr."""
    s = summary
    return (f"{s['n_clusters']:,} clusters over {s['n_points']:,} points, noise {s['noise_fraction']:.1%}; "
            f"cluster sizes min {s['size_min']:,}, median {s['size_median']:,}, max {s['size_max']:,}")


def write_cluster_tsv(path: str, ids: Sequence[str], labels: np.ndarray) -> None:
    """``ID<TAB>cluster`` lines (noise = -1), written atomically."""
    with atomic_text(path) as fh:
        fh.writelines(f"{i}\t{int(c)}\n" for i, c in zip(ids, np.asarray(labels).tolist()))


def read_cluster_tsv(path: str, ids: Sequence[str]) -> np.ndarray:
    """Labels from an ``ID<TAB>cluster`` file aligned to ``ids``; IDs absent from the file get -2 (unknown)."""
    table: dict[str, int] = {}
    for lineno, fields in _tsv_rows(path):
        if len(fields) < 2:
            raise InputError(f"{path}:{lineno}: expected ID<TAB>cluster, got {len(fields)} column(s)")
        try:
            table[fields[0]] = int(fields[1])
        except ValueError:
            if lineno == 1:  # a header line
                continue
            raise InputError(f"{path}:{lineno}: cluster {fields[1]!r} is not an integer") from None
    out = np.fromiter((table.get(i, -2) for i in ids), dtype=np.int32, count=len(ids))
    if (out == -2).all():
        raise InputError(f"{path}: none of its {len(table):,} IDs are in the map's IDs (e.g. {next(iter(table), '?')!r} vs {ids[0]!r})")
    return out


def _tsv_rows(path: str):
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line or line.startswith("#"):
                    continue
                yield lineno, line.split("\t")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e})") from None


# --------------------------------------------------------------------------- groups


def parse_named(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``NAME=PATTERN`` strings -> (name, pattern) pairs; regexes are compiled to check them."""
    out = []
    for item in items:
        name, sep, pat = item.partition("=")
        if not sep or not name or not pat:
            raise InputError(f"--{what} {item!r}: expected NAME={what.upper()}, e.g. water=W_")
        if what == "regex":
            try:
                re.compile(pat)
            except re.error as e:
                raise InputError(f"--regex {item!r}: invalid regular expression ({e})") from None
        out.append((name, pat))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise InputError(f"group names must be unique, got {names}")
    return out


def read_group_table(path: str) -> dict[str, str]:
    """ID -> group from a two-column ``ID<TAB>group`` TSV (lines starting with # are skipped, as is an 'id' header)."""
    table: dict[str, str] = {}
    for lineno, fields in _tsv_rows(path):
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise InputError(f"{path}:{lineno}: expected two tab-separated columns ID<TAB>group")
        if lineno == 1 and fields[0].lower() in ("id", "contig", "contig_id", "seqid"):
            continue
        prev = table.setdefault(fields[0], fields[1])
        if prev != fields[1]:
            raise InputError(f"{path}:{lineno}: ID {fields[0]!r} is in two groups ({prev!r} and {fields[1]!r})")
    if not table:
        raise InputError(f"{path}: no ID<TAB>group lines")
    return table


def assign_groups(
    ids: Sequence[str],
    *,
    prefixes: Sequence[tuple[str, str]] = (),
    regexes: Sequence[tuple[str, str]] = (),
    table: dict[str, str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Group index per ID (int32, -1 = in no group) and the group names, from prefixes, regexes or an ID -> group table.

    Prefixes match the start of the ID, regexes anywhere (anchor with ^ ... $).
    Every group must match at least one ID, and no ID may match two groups.
    """
    if table is not None and (prefixes or regexes):
        raise InputError("give groups either as a TSV or as --prefix/--regex, not both")
    n = len(ids)
    idx = np.full(n, -1, dtype=np.int32)
    if table is not None:
        names = sorted(set(table.values()))
        code = {g: i for i, g in enumerate(names)}
        idx[:] = [code[table[i]] if i in table else -1 for i in ids]
        known = set(ids)
        for g in names:
            if not (idx == code[g]).any():
                example = next(i for i, gg in table.items() if gg == g)
                raise InputError(f"group {g!r} matches none of the {n:,} IDs of the map (e.g. {example!r} is not among them)")
        missing = sum(1 for i in table if i not in known)
        if missing:
            _log(f"warning: {missing:,} IDs of the group table are not in the map and are ignored")
        return idx, names

    rules: list[tuple[str, Callable[[str], bool], str]] = []
    for name, pre in prefixes:
        rules.append((name, (lambda s, p=pre: s.startswith(p)), f"prefix {pre!r}"))
    for name, pat in regexes:
        rx = re.compile(pat)
        rules.append((name, (lambda s, r=rx: r.search(s) is not None), f"regex {pat!r}"))
    if len(rules) < 1:
        raise InputError("no groups given: use --groups-tsv, --prefix NAME=PREFIX or --regex NAME=REGEX")
    names = [r[0] for r in rules]
    for g, (name, match, desc) in enumerate(rules):
        hit = np.fromiter((match(s) for s in ids), dtype=bool, count=n)
        if not hit.any():
            raise InputError(f"group {name!r} ({desc}) matches none of the {n:,} IDs (first ID: {ids[0]!r})")
        clash = hit & (idx >= 0)
        if clash.any():
            j = int(np.flatnonzero(clash)[0])
            raise InputError(f"ID {ids[j]!r} matches both group {names[idx[j]]!r} and {name!r}: make the patterns exclusive")
        idx[hit] = g
    return idx, names


def group_counts(group_idx: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Members per group."""
    counts = np.bincount(group_idx[group_idx >= 0], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts)}


# --------------------------------------------------------------------------- densities and composition


def map_extent(coords: np.ndarray, pad: float = 0.03) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of the map with a small margin."""
    lo, hi = coords.min(axis=0).astype(float), coords.max(axis=0).astype(float)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def default_bins(n: int) -> int:
    """Histogram bins per axis: about 10 points per bin on average, between 40 and 300."""
    return int(np.clip(round(math.sqrt(n / 10)), 40, 300))


def group_densities(
    coords: np.ndarray,
    group_idx: np.ndarray,
    n_groups: int,
    bins: int | None = None,
    extent: tuple[float, float, float, float] | None = None,
    smooth: float = 1.0,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Per-group 2-D histograms over one common grid, each normalised to sum to 1 (then Gaussian-smoothed by ``smooth`` bins).

    Returns (densities of shape (G, bins, bins) indexed [group, x, y], extent).
    """
    from scipy.ndimage import gaussian_filter

    extent = extent or map_extent(coords)
    bins = bins or default_bins(int((group_idx >= 0).sum()))
    out = np.zeros((n_groups, bins, bins), dtype=np.float64)
    for g in range(n_groups):
        pts = coords[group_idx == g]
        h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=[extent[:2], extent[2:]])
        if smooth > 0:
            h = gaussian_filter(h, smooth, mode="constant")
        total = h.sum()
        out[g] = h / total if total > 0 else h
    return out, extent


def density_differences(densities: np.ndarray, names: Sequence[str]) -> list[tuple[str, str, np.ndarray]]:
    """Signed density differences (first, second, first − second): for two groups A − B; for more, each group minus
    the mean of the others ("rest").

    Every group's density is normalised first, so groups of unequal size weigh
    the same: a positive cell means that group is over-represented there.
    """
    g = densities.shape[0]
    if g < 2:
        raise InputError(f"comparing needs at least two groups, got {g}")
    if g == 2:
        return [(names[0], names[1], densities[0] - densities[1])]
    out = []
    for i in range(g):
        rest = np.delete(densities, i, axis=0).mean(axis=0)
        out.append((names[i], "rest", densities[i] - rest))
    return out


@dataclass
class Composition:
    """Group make-up of every cluster: counts, fractions (rows sum to 1), and fractions with groups weighted equally."""

    clusters: np.ndarray  # (C,) cluster labels, noise (-1) last when present
    names: list[str]
    counts: np.ndarray  # (C, G) int
    fractions: np.ndarray  # (C, G): share of the cluster's grouped members from each group
    balanced: np.ndarray  # (C, G): the same after dividing each group's counts by the group's size

    def write_csv(self, path: str) -> None:
        """CSV: cluster, n, then count_/fraction_/balanced_ columns per group; written atomically."""
        with atomic_text(path) as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["cluster", "n"] + [f"count_{g}" for g in self.names] + [f"fraction_{g}" for g in self.names]
                       + [f"balanced_fraction_{g}" for g in self.names])
            for c, cnt, fr, bal in zip(self.clusters.tolist(), self.counts, self.fractions, self.balanced):
                w.writerow([c, int(cnt.sum())] + cnt.tolist() + [f"{v:.6f}" for v in fr] + [f"{v:.6f}" for v in bal])


def composition_table(labels: np.ndarray, group_idx: np.ndarray, names: Sequence[str]) -> Composition:
    """Fraction of each group in each cluster, over the points that are in a group and have a cluster label (>= -1).

    Clusters with no grouped member are left out. ``balanced`` divides each
    group's counts by its total first, so a sample with twice the contigs does
    not dominate every cluster.
    """
    labels = np.asarray(labels)
    keep = (group_idx >= 0) & (labels >= NOISE)
    lab, grp = labels[keep], group_idx[keep]
    if lab.size == 0:
        raise InputError("no point is both in a group and in the clusters file")
    clusters = np.unique(lab)
    clusters = np.concatenate([clusters[clusters >= 0], clusters[clusters < 0]])  # noise last
    row = {int(c): i for i, c in enumerate(clusters.tolist())}
    counts = np.zeros((clusters.size, len(names)), dtype=np.int64)
    np.add.at(counts, (np.fromiter((row[int(c)] for c in lab), dtype=np.int64, count=lab.size), grp), 1)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    totals = counts.sum(axis=0, keepdims=True).astype(float)
    per_group = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    balanced = per_group / per_group.sum(axis=1, keepdims=True)
    return Composition(clusters=clusters, names=list(names), counts=counts, fractions=fractions, balanced=balanced)
