"""Clustering contigs: a kNN graph + Leiden on the latent vectors (or HDBSCAN), scores against labels, and bins.

The ``cluster`` command is :class:`ClusterOptions` + :func:`run`. Two methods:

* ``leiden`` (what the field does now: COMEBin, McDevol, single-cell tools):
  the k nearest neighbours of every point from :class:`vae.neighbors.NeighborIndex`
  (exact below 50,000 points, HNSW above), an undirected graph of union or
  mutual kNN edges weighted by shared neighbours (``snn``: Jaccard index of the
  two points' neighbour sets, each with the point itself) or by distance
  (``distance``: exp(-d² / σᵢσⱼ), σ = distance to the k-th neighbour, so dense
  and sparse regions weigh alike), then Leiden (igraph) maximising modularity
  at one or several resolutions (higher = more, smaller clusters). Every point
  gets a cluster; seeded.
* ``hdbscan``: :func:`vae.explore.cluster_points` on a t-SNE map or on the
  latent vectors (noise = -1), as before.

Clusters are numbered by decreasing size. Scores against labels (ARI, NMI,
purity, completeness) count noise points as singletons. Bins are one FASTA per
cluster whose contigs add up to ``min_bin_size`` bp, each record copied byte
for byte, plus ``contig_bins.tsv`` (contig<TAB>bin, no header: the DAS Tool /
vamb column order); everything lands in a temporary folder that is renamed
into place only when every binned contig was found.
"""
from __future__ import annotations

import itertools
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numba
import numpy as np

from .errors import InputError
from .explore import relabel_by_size
from .matrix import staging_folder, swap_folder
from .options import float_list, option, quiet_option

METHODS = ("leiden", "hdbscan")
WEIGHTS = ("snn", "distance")
SPACES = ("tsne", "latent")
#: Leiden iterations per resolution (igraph and leidenalg default; -1 = until stable, several times slower).
LEIDEN_ITERATIONS = 2
#: HNSW settings for the graph: half the build cost of the query_neighbors defaults (200, 100); a clustering
#: tolerates the lower recall (bench/bench_cluster.py, VAE.md).
EF_CONSTRUCTION = 100
EF_SEARCH = 50
#: Rows per neighbour query: bounds the (rows, k + 1) result blocks and the progress granularity.
QUERY_ROWS = 50_000
#: Bins are written from memory once this many record bytes are buffered.
BIN_BUFFER_BYTES = 64 << 20
BINS_TABLE = "contig_bins.tsv"
BIN_SUFFIX = ".fna"


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"cluster: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the kNN graph


def check_graph_args(n: int, k: int, resolutions: Sequence[float], weight: str) -> None:
    """One-line errors for arguments Leiden cannot use (before any expensive step)."""
    if weight not in WEIGHTS:
        raise InputError(f"weight must be one of {', '.join(WEIGHTS)}, not {weight!r}")
    if not len(resolutions):
        raise InputError("give at least one resolution")
    bad = [r for r in resolutions if not (np.isfinite(r) and r > 0)]
    if bad:
        raise InputError(f"resolution must be > 0, got {bad[0]:g}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if k >= n:
        raise InputError(f"k = {k} neighbours needs more than {k} points, got {n:,}: lower -k")


def _search_method(method: str, n: int) -> str:
    from .neighbors import EXACT_MAX

    return method if method != "auto" else ("exact" if n < EXACT_MAX else "hnsw")


def knn_lists(vectors: np.ndarray, k: int, *, metric: str = "euclidean", method: str = "auto", threads: int = 0,
              seed: int = 42, ids: Sequence[str] | None = None, ef_construction: int = EF_CONSTRUCTION,
              ef_search: int = EF_SEARCH, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of every row: (rows int64 (N, k), distances float32 (N, k)), nearest first.

    The search is :class:`vae.neighbors.NeighborIndex` (the project's one k-NN
    implementation); a point missing from its own approximate result loses its
    farthest neighbour instead. ``progress(n)`` is called as rows are indexed and queried.
    """
    from .neighbors import NeighborIndex

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k = {k} neighbours needs more than {k} points, got {n:,}: lower -k")
    index = NeighborIndex.build(vectors, ids if ids is not None else range(n), metric=metric, method=method,
                                ef_construction=ef_construction, ef_search=ef_search, threads=threads, seed=seed,
                                progress=progress)
    nb = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, QUERY_ROWS):
        b = min(n, a + QUERY_ROWS)
        # Query with the caller's vectors (already in memory) rather than copies read back from the index.
        rows, d = index.query(vectors[a:b], k + 1, threads)
        is_self = rows == np.arange(a, b)[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        nb[a:b] = rows[keep].reshape(b - a, k)
        dist[a:b] = d[keep].reshape(b - a, k)
        if progress:
            progress(b - a)
    return nb, dist


@numba.njit(nogil=True, cache=True)
def _shared_counts(sets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """|sets[a[e]] ∩ sets[b[e]]| for every edge e; the rows of ``sets`` are sorted."""
    m = sets.shape[1]
    out = np.zeros(a.shape[0], dtype=np.int32)
    for e in range(a.shape[0]):
        x = sets[a[e]]
        y = sets[b[e]]
        i = 0
        j = 0
        c = 0
        while i < m and j < m:
            if x[i] == y[j]:
                c += 1
                i += 1
                j += 1
            elif x[i] < y[j]:
                i += 1
            else:
                j += 1
        out[e] = c
    return out


def knn_graph(nb: np.ndarray, dist: np.ndarray, weight: str = "snn", mutual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Undirected weighted edges from kNN lists: (edges int64 (E, 2) with i < j, weights float64 (E,)).

    Union (default) keeps a pair when either point lists the other, ``mutual``
    only when both do. Weights: see the module docstring. Edges of weight 0 are dropped.
    """
    if weight not in WEIGHTS:
        raise InputError(f"weight must be one of {', '.join(WEIGHTS)}, not {weight!r}")
    n, k = nb.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = nb.ravel()
    valid = (dst >= 0) & (dst != src)
    src, dst, d = src[valid], dst[valid], dist.ravel()[valid]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    # Each directed kNN pair occurs once per direction: a pair listed twice is mutual.
    keys, first, counts = np.unique(lo * n + hi, return_index=True, return_counts=True)
    if mutual:
        keys, first = keys[counts >= 2], first[counts >= 2]
    edges = np.stack([keys // n, keys % n], axis=1)
    del src, dst, lo, hi
    if weight == "snn":
        sets = np.sort(np.concatenate([np.arange(n, dtype=np.int64)[:, None], np.where(nb >= 0, nb, -1 - np.arange(n)[:, None])],
                                      axis=1), axis=1)
        shared = _shared_counts(sets, edges[:, 0], edges[:, 1]).astype(np.float64)
        w = shared / (2.0 * sets.shape[1] - shared)
    else:
        sigma = np.maximum(dist[:, -1].astype(np.float64), 1e-12)
        de = d[first].astype(np.float64)
        w = np.exp(-(de * de) / (sigma[edges[:, 0]] * sigma[edges[:, 1]]))
    keep = w > 0
    return edges[keep], w[keep]


def leiden_partitions(n: int, edges: np.ndarray, weights: np.ndarray, resolutions: Sequence[float], seed: int = 42,
                      n_iterations: int = LEIDEN_ITERATIONS) -> np.ndarray:
    """Leiden (igraph, modularity with a resolution) of a weighted graph: int32 labels (len(resolutions), n), 0 = largest."""
    import igraph as ig

    g = ig.Graph(n=n, edges=edges, directed=False)
    out = np.empty((len(resolutions), n), dtype=np.int32)
    try:
        for r, res in enumerate(resolutions):
            # igraph draws from Python's RNG interface: a fresh seeded generator per resolution makes each column reproducible alone.
            ig.set_random_number_generator(random.Random(seed))
            part = g.community_leiden(objective_function="modularity", weights=weights, resolution=float(res),
                                      n_iterations=n_iterations)
            out[r] = relabel_by_size(np.asarray(part.membership, dtype=np.int64))
    finally:
        ig.set_random_number_generator(random)
    return out


def leiden_clusters(vectors: np.ndarray, k: int = 15, resolutions: Sequence[float] = (1.0,), weight: str = "snn",
                    mutual: bool = False, seed: int = 42) -> np.ndarray:
    """Leiden clusters of the rows of ``vectors`` on their kNN graph: int labels of shape (len(resolutions), N).

    Library entry point (the quality benchmark imports it): Euclidean
    neighbours (exact below 50,000 rows, HNSW above), ``snn`` or ``distance``
    weights, union or ``mutual`` edges; clusters numbered by decreasing size.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise InputError(f"expected an (N, D) matrix of vectors, got shape {vectors.shape}")
    resolutions = [float(r) for r in resolutions]
    check_graph_args(vectors.shape[0], k, resolutions, weight)
    nb, dist = knn_lists(vectors, k, seed=seed)
    edges, w = knn_graph(nb, dist, weight, mutual)
    return leiden_partitions(vectors.shape[0], edges, w, resolutions, seed)


# --------------------------------------------------------------------------- scores against labels


def _noise_as_singletons(clusters: np.ndarray) -> np.ndarray:
    c = np.asarray(clusters, dtype=np.int64).copy()
    noise = c < 0
    c[noise] = c.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return c


def score_clusters(truth: Sequence[str], clusters: np.ndarray) -> dict[str, float]:
    """ARI, NMI, purity (share of points in their cluster's majority label) and completeness (share of points in
    their label's majority cluster) of ``clusters`` against ``truth``; noise (-1) counts as singletons."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from .evaluate import purity

    _, y = np.unique(np.asarray(truth, dtype=object), return_inverse=True)
    c = _noise_as_singletons(clusters)
    return {"ari": float(adjusted_rand_score(y, c)), "nmi": float(normalized_mutual_info_score(y, c)),
            "purity": purity(y, c), "completeness": purity(c, y)}


@dataclass
class LabelTable:
    """Label columns aligned to the clustered points: ``values[column]`` has None where a point has no label."""

    path: str
    columns: list[str]
    values: dict[str, list[str | None]]


def read_label_table(path: str, ids: Sequence[str]) -> LabelTable:
    """``ID<TAB>label...`` with a header (as ``evaluate_labels`` reads it); an ID that is not clustered is an error."""
    from .evaluate import read_labels

    lab = read_labels(path, ids)
    known = set(ids)
    # Labels given per contig also cover its --chop pieces (ID.N), as in evaluate_labels.
    known.update(i.rpartition(".")[0] for i in ids if i.rpartition(".")[2].isdigit())
    unknown = []
    with open(path, encoding="utf-8", newline="") as fh:
        next(fh)
        for line in fh:
            ident = line.split("\t", 1)[0].strip()
            if ident and ident not in known:
                unknown.append(ident)
    if unknown:
        more = f" and {len(unknown) - 1:,} more" if len(unknown) > 1 else ""
        raise InputError(f"{path}: unknown ID {unknown[0]!r}{more}: not among the {len(ids):,} clustered IDs")
    values = {}
    for col in lab.ranks:
        full: list[str | None] = [None] * len(ids)
        for row, v in zip(lab.rows.tolist(), lab.values[col]):
            full[row] = v
        values[col] = full
    return LabelTable(path, list(lab.ranks), values)


def score_table(table: LabelTable, labels: np.ndarray, resolutions: Sequence[float] | None) -> dict:
    """Scores of every clustering (row of ``labels``) against every label column, and the best resolution by ARI."""
    out = {}
    for col in table.columns:
        have = np.array([v is not None for v in table.values[col]])
        truth = [v for v in table.values[col] if v is not None]
        entry: dict = {"labelled": int(have.sum()), "labels": len(set(truth)), "by_resolution": []}
        if have.sum() < 2:
            entry["note"] = "fewer than 2 labelled points: not scored"
            out[col] = entry
            continue
        for r in range(labels.shape[0]):
            s = score_clusters(truth, labels[r][have])
            if resolutions is not None:
                s = {"resolution": float(resolutions[r]), **s}
            entry["by_resolution"].append(s)
        if resolutions is not None:
            best = max(entry["by_resolution"], key=lambda s: s["ari"])
            entry["best_resolution"] = best["resolution"]
        out[col] = entry
    return out


def format_scores(scores: dict) -> str:
    """The score table for stderr: one line per label column and clustering."""
    lines = [f"{'labels':<12}{'resolution':>11}{'ARI':>8}{'NMI':>8}{'purity':>8}{'complete':>9}"]
    for col, e in scores.items():
        if not e["by_resolution"]:
            lines.append(f"{col:<12}  {e.get('note', '')}")
        for s in e["by_resolution"]:
            res = f"{s['resolution']:g}" if "resolution" in s else "-"
            star = " *" if "best_resolution" in e and len(e["by_resolution"]) > 1 and s.get("resolution") == e["best_resolution"] else ""
            lines.append(f"{col:<12}{res:>11}{s['ari']:>8.3f}{s['nmi']:>8.3f}{s['purity']:>8.3f}{s['completeness']:>9.3f}{star}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- bins


def iter_records(path: str) -> Iterator[tuple[str, bytes, int]]:
    """(ID, the record's bytes exactly as in the file, sequence length in bp) of every record of a FASTA file."""
    from .fasta import iter_blocks

    for buf in iter_blocks(path):
        data = bytes(buf)
        arr = np.frombuffer(data, dtype=np.uint8)
        first = data.find(b">")
        if first < 0:
            continue
        starts = np.flatnonzero((arr[first:-1] == 10) & (arr[first + 1:] == 62)) + first + 1
        bounds = [first] + starts.tolist() + [len(data)]
        for s, e in itertools.pairwise(bounds):
            he = data.find(b"\n", s, e)
            he = e if he < 0 else he
            head = data[s + 1 : he].split(None, 1)
            ident = head[0].decode("utf-8", "replace") if head else ""
            body = data[he:e]
            yield ident, data[s:e], len(body) - body.count(b"\n") - body.count(b"\r")


@dataclass
class BinResult:
    folder: str
    tmp: str
    bins: dict[str, dict]  # bin name -> {"contigs", "bp", "file"}
    n_contigs: int
    min_bin_size: int


def write_bins(fastas: Sequence[str], ids: Sequence[str], labels: np.ndarray, folder: str, *, min_bin_size: int = 200_000,
               gzip_out: bool = False, quiet: bool = False) -> BinResult:
    """One FASTA per cluster of at least ``min_bin_size`` bp, and ``contig_bins.tsv``, into a temporary folder.

    Call :func:`commit_bins` to rename it into place (or :func:`discard_bins`).
    Noise (-1) goes nowhere. Every contig of a cluster must be found exactly
    once across ``fastas``; otherwise an InputError names the first offender.
    """
    label_of: dict[str, int] = {}
    for i, c in zip(ids, np.asarray(labels).tolist()):
        if c >= 0:
            if i in label_of:
                raise InputError(f"ID {i!r} occurs twice among the clustered IDs: bins need unique contig IDs")
            label_of[i] = c
    folder, tmp = staging_folder(folder, _is_bins_dir, f"a bins folder (no {BINS_TABLE})")
    try:
        found: dict[str, int] = {}  # contig -> cluster, in input order
        bp: dict[int, int] = {}
        buffers: dict[int, list[bytes]] = {}
        buffered = 0

        def flush() -> None:
            nonlocal buffered
            for c, recs in buffers.items():
                with open(os.path.join(tmp, f"{c}.part"), "ab") as fh:
                    fh.writelines(recs)
            buffers.clear()
            buffered = 0

        for path in fastas:
            for ident, rec, length in iter_records(path):
                c = label_of.get(ident)
                if c is None:
                    continue
                if ident in found:
                    raise InputError(f"{path}: contig {ident!r} occurs twice in the FASTA input: it would land in a bin twice")
                found[ident] = c
                bp[c] = bp.get(c, 0) + length
                if not rec.endswith(b"\n"):  # the last record of a file without a final newline
                    rec += b"\n"
                buffers.setdefault(c, []).append(rec)
                buffered += len(rec)
                if buffered >= BIN_BUFFER_BYTES:
                    flush()
        flush()
        if len(found) < len(label_of):
            missing = next(i for i in label_of if i not in found)
            hint = " (IDs ending in .N are --chop pieces: bins need the whole contigs)" if missing.rpartition(".")[2].isdigit() else ""
            raise InputError(f"{len(label_of) - len(found):,} clustered contigs are not in the FASTA input, e.g. {missing!r}{hint}")
        bins: dict[str, dict] = {}
        name_of: dict[int, str] = {}
        for c in sorted(bp):
            part = os.path.join(tmp, f"{c}.part")
            if bp[c] < min_bin_size:
                os.unlink(part)
                continue
            name = f"bin_{c}"
            fname = name + BIN_SUFFIX + (".gz" if gzip_out else "")
            if gzip_out:
                from isal import igzip

                with open(part, "rb") as src, igzip.open(os.path.join(tmp, fname), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.unlink(part)
            else:
                os.replace(part, os.path.join(tmp, fname))
            name_of[c] = name
            bins[name] = {"cluster": c, "contigs": 0, "bp": bp[c], "file": fname}
        with open(os.path.join(tmp, BINS_TABLE), "w", encoding="utf-8", newline="\n") as fh:
            for ident, c in found.items():
                if c in name_of:
                    fh.write(f"{ident}\t{name_of[c]}\n")
                    bins[name_of[c]]["contigs"] += 1
        n_contigs = sum(b["contigs"] for b in bins.values())
        _log(f"{len(bins):,} bins of >= {min_bin_size:,} bp hold {n_contigs:,} of {len(label_of):,} clustered contigs", quiet)
        return BinResult(folder, tmp, bins, n_contigs, min_bin_size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_bins_dir(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, BINS_TABLE))


def commit_bins(res: BinResult) -> None:
    """Rename the temporary bins folder into place (replacing an older bins folder)."""
    swap_folder(res.tmp, res.folder)


def discard_bins(res: BinResult | None) -> None:
    if res is not None:
        shutil.rmtree(res.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the command


#: Headings of ``cluster --help``.
_LEIDEN, _HDBSCAN, _SCORES = "Leiden", "HDBSCAN", "scores and bins"


@dataclass
class ClusterOptions:
    """Options of the ``cluster`` command: the parser is built from these fields (see ``cluster --help``)."""

    # -c: what to cluster (embeddings or a map); a map when -e is given too (old form)
    input: str | None = option(None, flags=("-c", "--coords"), metavar="EMB.npy|MAP.npy",
                               help="what to cluster: embeddings (N, 1 + latent) or a t-SNE map (N, 2); with -e: the map")
    embeddings: str | None = option(None, flags=("-e", "--embeddings"), metavar="EMB.npy",
                                    help="(older form) embeddings, clustered with --space latent; -c is then the map")
    ids: str = option(flags=("-id", "--ids"), required=True, metavar="IDS.txt", help="IDs of the rows")
    output: str = option(flags=("-o", "--output"), required=True, metavar="CLUSTERS.tsv", help="output ID<TAB>cluster")
    map: str | None = option(None, metavar="MAP.npy", help="t-SNE map (N, 2) to draw the clusters on")
    method: str = option("hdbscan", choices=METHODS[::-1], help="clustering method")
    space: str | None = option(None, choices=SPACES, help="force what is clustered (default: by the shape of -c)")
    length_column: bool = option(True, flags=("--no-length-column",), action="store_false",
                                 help="the embeddings are a plain (N, latent) matrix")
    # leiden
    k: int = option(15, flags=("-k",), group=_LEIDEN, help="neighbours per point in the graph")
    weight: str = option("snn", choices=WEIGHTS, group=_LEIDEN,
                         help="edge weight: shared neighbours, or a Gaussian of the distance")
    mutual: bool = option(False, group=_LEIDEN, help="keep only mutual kNN edges (default: union)")
    resolutions: list[float] = option(default_factory=lambda: [1.0], flags=("--resolution",), nargs="+", type=float_list,
                                      metavar="R", group=_LEIDEN,
                                      help="one or several resolutions (> 0; higher = more clusters); one output column each")
    neighbors: str = option("auto", choices=("auto", "exact", "hnsw"), group=_LEIDEN,
                            help="neighbour search (auto: exact below 50,000 points)")
    ef_construction: int = option(EF_CONSTRUCTION, group=_LEIDEN,
                                  help="HNSW build-time search breadth (more = better recall, slower)")
    ef: int = option(EF_SEARCH, group=_LEIDEN, help="HNSW query-time search breadth")
    # hdbscan
    min_cluster_size: int | None = option(None, group=_HDBSCAN, help="smallest cluster (default: scaled with N, see above)")
    min_samples: int | None = option(None, group=_HDBSCAN,
                                     help="HDBSCAN min_samples: larger = more conservative, more noise "
                                          "(default: max(5, min_cluster_size/10))")
    # scores and bins
    labels: str | None = option(None, metavar="TSV", group=_SCORES,
                                help="ID<TAB>label... with a header (e.g. id, genome, genus): score each clustering")
    fasta: list[str] = option(default_factory=list, metavar="FASTA", group=_SCORES,
                              help="the contigs (plain or gzip) for --bins-dir")
    bins_dir: str | None = option(None, metavar="DIR", group=_SCORES,
                                  help="write one FASTA per cluster (bin_C.fna) and DIR/contig_bins.tsv")
    min_bin_size: int = option(200_000, metavar="BP", group=_SCORES, help="smallest bin written, in bp")
    bins_gzip: bool = option(False, group=_SCORES, help="gzip the bins (.fna.gz)")
    bins_resolution: float | None = option(None, metavar="R", group=_SCORES,
                                           help="resolution whose clusters become bins (default: the first)")
    # outputs
    summary: str | None = option(None, metavar="JSON", help="summary file (default: beside the output, .json)")
    png: str | None = option(None, metavar="PNG",
                             help="the map coloured by cluster (needs a map: -c MAP.npy or --map) (default: beside the output, .png)")
    no_plot: bool = option(False, help="write no figure")
    pdf: bool = option(False, help="also write each figure as PDF (same name, .pdf)")
    threads: int = option(0, help="threads (0 = all cores)")
    seed: int = option(42, help="seed of the neighbour graph and of Leiden")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        # Ranges (once argparse types): one-line errors before anything is read.
        for name in ("ef_construction", "ef", "min_cluster_size", "min_samples", "threads"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {v}")

    def validate(self) -> None:
        """Everything that can be checked before reading any data."""
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.space is not None and self.space not in SPACES:
            raise InputError(f"space must be one of {', '.join(SPACES)}, not {self.space!r}")
        if not self.input and not self.embeddings:
            raise InputError("nothing to cluster: give -c EMB.npy (latent vectors) or -c MAP.npy (a t-SNE map)")
        if self.method == "leiden":
            check_graph_args(self.k + 1, self.k, self.resolutions, self.weight)
            if self.bins_resolution is not None and self.bins_resolution not in self.resolutions:
                raise InputError(f"--bins-resolution {self.bins_resolution:g} is not one of --resolution "
                                 f"{' '.join(f'{r:g}' for r in self.resolutions)}")
        elif len(self.resolutions) != 1 or self.resolutions != [1.0] or self.bins_resolution is not None:
            raise InputError("--resolution and --bins-resolution are Leiden settings: add --method leiden")
        if bool(self.fasta) != bool(self.bins_dir):
            raise InputError("bins need both the contigs and a folder: --fasta CONTIGS.fa ... --bins-dir DIR")
        if self.min_bin_size < 0:
            raise InputError(f"--min-bin-size must be >= 0, got {self.min_bin_size}")
        for p in self.fasta:
            if p != "-" and not os.path.isfile(p):
                raise InputError(f"{p}: no such file")
        if self.labels and not os.path.isfile(self.labels):
            raise InputError(f"{self.labels}: no such file")


def _stem(path: str) -> str:
    for s in (".tsv", ".txt"):
        if path.endswith(s):
            return path[: -len(s)]
    return path


def _n_columns(path: str) -> int:
    from .matrix import open_matrix

    return int(open_matrix(path, n_cols=None, mmap=True).shape[1])


def load_inputs(o: ClusterOptions) -> tuple[np.ndarray, list[str], str, np.ndarray | None, str]:
    """(points to cluster, IDs, space, map to draw or None, path clustered) from the options.

    ``-c`` is what is clustered: a 2-column matrix is a t-SNE map (clustered and
    drawn), anything wider an embeddings matrix. With ``-e`` (the older form)
    ``-c`` is the map and ``--space`` picks which of the two is clustered.
    """
    from .matrix import load_coords, load_embeddings

    coords = ids = None
    if o.embeddings:  # old form: -e the vectors, -c the map
        map_path = o.map or o.input
        space = o.space or "tsne"
        if space == "tsne" and not map_path:
            raise InputError("--space tsne needs the map: -c MAP.npy (or use --space latent with -e EMB.npy)")
        if map_path:
            coords, ids = load_coords(map_path, o.ids)
        if space == "latent":
            emb = load_embeddings(o.embeddings, o.ids, length_column=o.length_column)
            if coords is not None and coords.shape[0] != len(emb):
                raise InputError(f"{map_path} has {coords.shape[0]:,} rows but {o.embeddings} has {len(emb):,}")
            return emb.z, emb.ids, space, coords, o.embeddings
        return coords, ids, space, coords, map_path
    is_map = _n_columns(o.input) == 2
    space = o.space or ("tsne" if is_map else "latent")
    if space == "latent" and is_map and not o.map:
        raise InputError(f"--space latent needs the embeddings: {o.input} has 2 columns, a map; give -c EMB.npy")
    if space == "tsne":
        coords, ids = load_coords(o.input, o.ids)
        return coords, ids, space, (load_coords(o.map, o.ids)[0] if o.map else coords), o.input
    emb = load_embeddings(o.input, o.ids, length_column=o.length_column)
    if o.map:
        coords, _ = load_coords(o.map, o.ids)
        if coords.shape[0] != len(emb):
            raise InputError(f"{o.map} has {coords.shape[0]:,} rows but {o.input} has {len(emb):,}")
    return emb.z, emb.ids, space, coords, o.input


def write_multi_tsv(path: str, ids: Sequence[str], labels: np.ndarray, resolutions: Sequence[float]) -> None:
    """``ID<TAB>cluster`` for one clustering; with several, a header ``id<TAB>leiden_r...`` and one column each."""
    from .matrix import atomic_text

    with atomic_text(path) as fh:
        if labels.shape[0] > 1:
            fh.write("id\t" + "\t".join(f"leiden_r{r:g}" for r in resolutions) + "\n")
        cols = [lab.tolist() for lab in labels]
        for j, i in enumerate(ids):
            fh.write(i + "\t" + "\t".join(str(c[j]) for c in cols) + "\n")


def run(o: ClusterOptions) -> dict:
    """The ``cluster`` command: cluster, score, bin, draw; returns the summary (also written as JSON)."""
    from .explore import (cluster_points, cluster_summary, default_min_cluster_size, default_min_samples,
                          format_cluster_summary)
    from .matrix import check_output_dir

    from .paths import check_paths

    o.validate()
    stem = _stem(o.output)
    summary_path = o.summary or stem + ".json"
    maybe_png = None if o.no_plot else (o.png or stem + ".png")
    check_paths([o.input, o.embeddings, o.map, o.ids, o.labels, *o.fasta],
                [o.output, summary_path, maybe_png, maybe_png and o.pdf and os.path.splitext(maybe_png)[0] + ".pdf"],
                folders=[o.bins_dir])
    for path in filter(None, [o.output, summary_path, o.png]):
        check_output_dir(path)
    x, ids, space, coords, clustered = load_inputs(o)
    png = None if (o.no_plot or coords is None) else (o.png or stem + ".png")
    n = x.shape[0]
    table = read_label_table(o.labels, ids) if o.labels else None  # bad labels fail before the long step
    t0 = time.perf_counter()
    info: dict = {"method": o.method, "space": space, "input": os.path.abspath(clustered), "n_dimensions": int(x.shape[1])}
    if o.method == "leiden":
        check_graph_args(n, o.k, o.resolutions, o.weight)
        _log(f"Leiden on the {o.k}-NN graph of {n:,} points in the {space} space ({x.shape[1]}-D; {o.weight} weights, "
             f"{'mutual' if o.mutual else 'union'} edges; resolution {', '.join(f'{r:g}' for r in o.resolutions)}) ...", o.quiet)
        from .progress import rows_bar

        with rows_bar(2 * n, desc="neighbours", disable=o.quiet) as update:
            nb, dist = knn_lists(x, o.k, method=o.neighbors, threads=o.threads, seed=o.seed, ef_construction=o.ef_construction,
                                 ef_search=o.ef, progress=update)
        t_knn = time.perf_counter() - t0
        del x  # the vectors are not needed past the neighbours: their memory goes to the graph (GBs at millions of points)
        edges, w = knn_graph(nb, dist, o.weight, o.mutual)
        del nb, dist
        _log(f"graph of {edges.shape[0]:,} edges ({t_knn:.1f} s for the neighbours); Leiden ...", o.quiet)
        labels = leiden_partitions(n, edges, w, o.resolutions, o.seed)
        per_res = []
        for r, lab in zip(o.resolutions, labels):
            s = cluster_summary(lab)
            per_res.append({"resolution": r, **{k: v for k, v in s.items() if k != "sizes"}, "sizes": s["sizes"]})
        info.update(k=o.k, weight=o.weight, edges="mutual" if o.mutual else "union", n_edges=int(edges.shape[0]),
                    resolutions=per_res, neighbor_search=_search_method(o.neighbors, n),
                    seed=o.seed, knn_seconds=round(t_knn, 2))
        del edges, w
        resolutions: list[float] | None = list(o.resolutions)
    else:
        mcs = o.min_cluster_size or default_min_cluster_size(n)
        ms = o.min_samples or default_min_samples(mcs)
        if space == "latent" and n > 200_000:
            _log(f"warning: HDBSCAN in {x.shape[1]} dimensions over {n:,} points is slow; Leiden (--method leiden) scales", o.quiet)
        _log(f"HDBSCAN of {n:,} points in the {space} space ({x.shape[1]}-D), min_cluster_size={mcs}, min_samples={ms} ...", o.quiet)
        labels = cluster_points(x, mcs, ms, threads=o.threads)[None, :]
        info.update(min_cluster_size=mcs, min_samples=ms)
        resolutions = None
    seconds = time.perf_counter() - t0
    primary = 0 if o.bins_resolution is None else o.resolutions.index(o.bins_resolution)
    summary = {**cluster_summary(labels[0]), **info, "seconds": round(seconds, 2)}
    if table is not None:
        summary["scores"] = score_table(table, labels, resolutions)
        if not o.quiet:
            print(format_scores(summary["scores"]), file=sys.stderr)
    bins = None
    try:
        if o.bins_dir:
            _log(f"writing bins of clustering {primary + 1} to {o.bins_dir} ...", o.quiet)
            bins = write_bins(o.fasta, ids, labels[primary], o.bins_dir, min_bin_size=o.min_bin_size, gzip_out=o.bins_gzip,
                              quiet=o.quiet)
            summary["bins"] = {"folder": bins.folder, "n_bins": len(bins.bins), "n_contigs": bins.n_contigs,
                               "min_bin_size": o.min_bin_size,
                               "resolution": o.resolutions[primary] if o.method == "leiden" else None, "bins": bins.bins}
        written = [o.output, summary_path]
        if png:
            from .plots import plot_clusters

            what = "t-SNE map" if space == "tsne" else "latent space"
            extra = f", resolution {o.resolutions[0]:g}" if o.method == "leiden" else ""
            ari = ""
            if table is not None:
                # The title scores the finest taxonomic column: "genome" when there is one.
                col = "genome" if "genome" in table.columns else table.columns[0]
                if summary["scores"][col]["by_resolution"]:
                    ari = f", ARI {summary['scores'][col]['by_resolution'][0]['ari']:.2f} ({col})"
            written += plot_clusters(coords, labels[0], png, pdf=o.pdf,
                                     title=f"{'Leiden' if o.method == 'leiden' else 'HDBSCAN'} on the {what}{extra}: "
                                           f"{summary['n_clusters']:,} clusters{ari} (N = {n:,})")
        from .evaluate import emit_json

        emit_json(summary_path, summary)
        if bins is not None:
            commit_bins(bins)
            written.append(bins.folder)
            bins = None
        if o.method == "leiden":
            write_multi_tsv(o.output, ids, labels, o.resolutions)  # last: the main output appears when all else is done
        else:
            from .explore import write_cluster_tsv

            write_cluster_tsv(o.output, ids, labels[0])
    finally:
        discard_bins(bins)
    _log(f"{format_cluster_summary(summary)} ({seconds:.1f} s) -> {', '.join(written)}", o.quiet)
    return summary
