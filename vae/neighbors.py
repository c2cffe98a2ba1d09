"""Nearest-neighbour search over latent vectors: an index built once, saved, reloaded and queried.

Two methods behind one interface:

* ``exact``: brute-force NumPy search in bounded chunks — exact, no build
  cost, the default below :data:`EXACT_MAX` vectors;
* ``hnsw``: an approximate HNSW graph (hnswlib) for large sets.

An index is a folder, no pickle anywhere: ``meta.json`` (method, metric,
sizes, parameters), ``ids.txt`` (row i's ID) and either ``vectors.npy``
(exact) or ``hnsw.bin`` (hnswlib's own format). It is written under a
temporary name and renamed into place when complete.

Distances: Euclidean (not squared) or cosine distance 1 − cos.

:func:`knn_blocks` is the project's one exact k-NN search (the index's exact
method, :func:`exact_knn`, and ``verify_local_distances`` through
:func:`vae.evaluate.knn` use it). The ``query_neighbors`` command is
:class:`QueryOptions` + :func:`run`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, reading
from .matrix import NpyStreamWriter, open_matrix, read_ids, staging_folder, swap_folder
from .options import option, quiet_option

#: Below this many vectors ``method="auto"`` searches exactly.
EXACT_MAX = 50_000
FORMAT = "kmer-vae-neighbor-index"
FORMAT_VERSION = 1
METRICS = ("euclidean", "cosine")
METHODS = ("auto", "exact", "hnsw")


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def exact_knn(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str = "euclidean",
    chunk_elements: int = 1 << 26,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``data`` for each query: (indices int64, distances float32), nearest first.

    Ties are broken by row index, so results are deterministic. Memory is
    bounded by ``chunk_elements`` distances at a time. ``k`` is capped at the
    number of rows.
    """
    data = np.asarray(data)
    return knn_blocks(queries, [(0, data)], min(k, data.shape[0]), metric, chunk_elements=chunk_elements)


def knn_blocks(
    queries: np.ndarray,
    blocks: Iterable[tuple[int, np.ndarray]],
    k: int,
    metric: str = "euclidean",
    *,
    exclude: np.ndarray | None = None,
    dtype: type = np.float64,
    chunk_elements: int = 1 << 26,
) -> tuple[np.ndarray, np.ndarray]:
    """The one exact k-NN search of the project: brute force over the base rows, given as blocks.

    ``blocks`` yields ``(first row number, rows)``, so a base that does not fit
    in memory (``verify_local_distances``' CLR pool, computed on the fly) is
    streamed; each block is searched in query slices of at most
    ``chunk_elements`` distances and merged into the running k best.
    ``exclude[i]`` is a base row query i must not get (itself), or -1.
    Distances are computed in ``dtype`` (float64: exact ranking of near
    neighbours; float32: twice as fast for long vectors) by expanding
    |q - p|² = |q|² - 2 q·p + |p|² and clamping at 0 before ranking, so equal
    points tie and ties go to the lower row. Returns (rows int64 (Q, k),
    distances float32 (Q, k)), nearest first; slots beyond the base's rows hold
    row -1 at distance inf.
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if metric == "cosine":
        q = _normalise(q)
    q = q.astype(dtype, copy=False)
    nq = q.shape[0]
    best_d = np.full((nq, k), np.inf, dtype=dtype)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    if k == 0:
        return best_i, best_d.astype(np.float32)
    qsq = np.einsum("ij,ij->i", q, q)
    ex = None if exclude is None else np.asarray(exclude, dtype=np.int64)
    for start, block in blocks:
        p = np.asarray(block, dtype=np.float32)
        if metric == "cosine":
            p = _normalise(p)
        p = p.astype(dtype, copy=False)
        psq = np.einsum("ij,ij->i", p, p)
        step = max(1, chunk_elements // max(1, p.shape[0]))
        for a in range(0, nq, step):
            b = min(nq, a + step)
            d = q[a:b] @ p.T
            if metric == "euclidean":
                d *= -2.0
                d += qsq[a:b, None]
                d += psq[None, :]
                np.maximum(d, 0.0, out=d)
            else:
                np.subtract(1.0, d, out=d)
            if ex is not None:
                local = ex[a:b] - start
                hit = np.flatnonzero((local >= 0) & (local < p.shape[0]))
                d[hit, local[hit]] = np.inf
            kk = min(k, d.shape[1])
            part = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < d.shape[1] else np.broadcast_to(np.arange(d.shape[1]), d.shape)
            cand_d = np.concatenate([best_d[a:b], np.take_along_axis(d, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i[a:b], part + start], axis=1)
            # Keep the k best by (distance, row): equal distances go to the lower row, whatever the block order.
            order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]
            best_d[a:b] = np.take_along_axis(cand_d, order, axis=1)
            best_i[a:b] = np.take_along_axis(cand_i, order, axis=1)
    best_i[~np.isfinite(best_d)] = -1
    dist = np.sqrt(best_d) if metric == "euclidean" else np.maximum(best_d, 0.0)
    return best_i, dist.astype(np.float32)


class NeighborIndex:
    """k-nearest-neighbour index over row vectors with their IDs (see the module docstring)."""

    def __init__(self, ids: list[str], dim: int, method: str, metric: str, vectors: np.ndarray | None = None,
                 hnsw=None, params: dict | None = None):
        self.ids = ids
        self.dim = dim
        self.method = method
        self.metric = metric
        self.vectors = vectors
        self.hnsw = hnsw
        self.params = params or {}
        self._row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    # ----------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        *,
        metric: str = "euclidean",
        method: str = "auto",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 100,
        threads: int = 0,
        seed: int = 42,
        source: str | None = None,
        progress=None,
    ) -> "NeighborIndex":
        """Index ``vectors`` (N, D); ``method`` auto = exact below :data:`EXACT_MAX` rows, else HNSW.

        HNSW graphs are reproducible bit for bit only with ``threads=1``
        (parallel insertion order varies); results are near-identical anyway.
        ``progress(n_rows)`` is called as rows are added.
        """
        if metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
        if method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise InputError(f"expected a non-empty (N, D) matrix of vectors, got shape {vectors.shape}")
        if len(ids) != vectors.shape[0]:
            raise InputError(f"{vectors.shape[0]:,} vectors but {len(ids):,} IDs")
        n, dim = vectors.shape
        if method == "auto":
            method = "exact" if n < EXACT_MAX else "hnsw"
        from .runtime import n_threads

        params = {"source": os.path.abspath(source) if source else None, "seed": seed}
        if method == "exact":
            idx = cls(list(ids), dim, method, metric, vectors=vectors, params=params)
            if progress:
                progress(n)
            return idx
        import hnswlib

        params.update(M=M, ef_construction=ef_construction, ef_search=ef_search)
        h = hnswlib.Index(space="l2" if metric == "euclidean" else "cosine", dim=dim)
        h.init_index(max_elements=n, ef_construction=ef_construction, M=M, random_seed=seed)
        step = 50_000
        for a in range(0, n, step):
            b = min(n, a + step)
            h.add_items(vectors[a:b], np.arange(a, b), num_threads=n_threads(threads))
            if progress:
                progress(b - a)
        h.set_ef(ef_search)
        return cls(list(ids), dim, "hnsw", metric, hnsw=h, params=params)

    # ----------------------------------------------------------- querying

    def row_of(self, id_: str) -> int:
        """Row of an ID (the first, if an ID occurs twice)."""
        if self._row_of is None:
            self._row_of = {}
            for i, s in enumerate(self.ids):
                self._row_of.setdefault(s, i)
        return self._row_of[id_]

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of the given IDs; an unknown ID is a one-line InputError naming it."""
        self.row_of(self.ids[0])  # builds the ID -> row map once
        missing = [i for i in ids if i not in self._row_of]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise InputError(f"unknown ID {missing[0]!r}{more}: not in the index ({len(self):,} IDs)")
        return np.array([self._row_of[i] for i in ids], dtype=np.int64)

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` (for a cosine HNSW index: normalised, which does not change the neighbours)."""
        if self.vectors is not None:
            return np.asarray(self.vectors[rows], dtype=np.float32)
        return np.asarray(self.hnsw.get_items(np.asarray(rows, dtype=np.uint64), return_type="numpy"), dtype=np.float32)

    def query(self, queries: np.ndarray, k: int = 10, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows of each query vector: (rows int64 (Q, k), distances float32 (Q, k)), nearest first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise InputError(f"query vectors have {queries.shape[1]} dimensions but the index has {self.dim}")
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        if self.method == "exact":
            return exact_knn(self.vectors, queries, k, self.metric)
        from .runtime import n_threads

        self.hnsw.set_ef(max(int(self.params.get("ef_search", 100)), k))
        labels, d = self.hnsw.knn_query(queries, k=k, num_threads=n_threads(threads))
        d = np.sqrt(np.maximum(d, 0.0)) if self.metric == "euclidean" else np.maximum(d, 0.0)
        return labels.astype(np.int64), d.astype(np.float32)

    def query_rows(self, rows: np.ndarray, k: int = 10, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of indexed rows, each row itself excluded."""
        rows = np.asarray(rows, dtype=np.int64)
        kk = min(k + 1, len(self))
        nb, d = self.query(self.vectors_of(rows), kk, threads)
        out_nb = np.empty((rows.size, kk - 1), dtype=np.int64)
        out_d = np.empty((rows.size, kk - 1), dtype=np.float32)
        for i, r in enumerate(rows.tolist()):
            keep = nb[i] != r
            if keep.all():  # approximate search may miss the point itself: drop the farthest instead
                keep[-1] = False
            out_nb[i], out_d[i] = nb[i][keep][: kk - 1], d[i][keep][: kk - 1]
        return out_nb, out_d

    # ----------------------------------------------------------- saving and loading

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "metric": self.metric,
            "n": len(self),
            "dim": self.dim,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in self.params.items() if k not in ("format", "version")},
        }

    def save(self, folder: str) -> None:
        """Write the index folder atomically (a temporary folder beside it, renamed into place).

        An existing folder is replaced only if it is a kmer-vae index.
        """
        folder, tmp = staging_folder(folder, _is_index, "a neighbour index")
        try:
            with open(os.path.join(tmp, "ids.txt"), "w", encoding="utf-8", newline="\n") as fh:
                fh.writelines(i + "\n" for i in self.ids)
            if self.method == "exact":
                with NpyStreamWriter(os.path.join(tmp, "vectors.npy"), self.dim, np.float32) as w:
                    w.write(self.vectors)
                    w.commit()
            else:
                self.hnsw.save_index(os.path.join(tmp, "hnsw.bin"))
            with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as fh:
                json.dump(self.meta(), fh, indent=2)
                fh.write("\n")
            swap_folder(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: str) -> "NeighborIndex":
        """Reload an index folder written by :meth:`save`, checking that its parts agree."""
        if not os.path.isdir(folder):
            raise InputError(f"{folder}: no such index folder (build one with --build-index)")
        meta_path = os.path.join(folder, "meta.json")
        with reading(meta_path, what="not a readable index description", missing=" (no meta.json: not a neighbour index)",
                     also=(json.JSONDecodeError,)):
            with open(meta_path, encoding="utf-8") as fh:
                meta = json.load(fh)
        if meta.get("format") != FORMAT:
            raise InputError(f"{folder}: not a kmer-vae neighbour index")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise InputError(f"{folder}: index format version {meta.get('version')} is newer than this kmer-vae understands")
        ids = read_ids(os.path.join(folder, "ids.txt"))
        n, dim, method, metric = int(meta["n"]), int(meta["dim"]), meta["method"], meta["metric"]
        if len(ids) != n:
            raise InputError(f"{folder}: ids.txt has {len(ids):,} IDs but meta.json says {n:,}")
        params = {k: v for k, v in meta.items() if k not in ("format", "version", "method", "metric", "n", "dim", "created")}
        if method == "exact":
            vectors = open_matrix(os.path.join(folder, "vectors.npy"), n_cols=dim, mmap=True)
            if vectors.shape[0] != n:
                raise InputError(f"{folder}: vectors.npy has {vectors.shape[0]:,} rows but meta.json says {n:,}")
            return cls(ids, dim, method, metric, vectors=vectors, params=params)
        if method != "hnsw":
            raise InputError(f"{folder}: unknown index method {method!r}")
        import hnswlib

        path = os.path.join(folder, "hnsw.bin")
        if not os.path.isfile(path):
            raise InputError(f"{folder}: hnsw.bin is missing")
        h = hnswlib.Index(space="l2" if metric == "euclidean" else "cosine", dim=dim)
        try:
            h.load_index(path, max_elements=n)
        except RuntimeError as e:
            raise InputError(f"{path}: cannot load the HNSW index ({e})") from None
        if h.get_current_count() != n:
            raise InputError(f"{path}: holds {h.get_current_count():,} vectors but meta.json says {n:,}")
        h.set_ef(int(params.get("ef_search", 100)))
        return cls(ids, dim, method, metric, hnsw=h, params=params)


def _is_index(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as fh:
            return json.load(fh).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def write_neighbors_tsv(fh, query_ids: Sequence[str], rows: np.ndarray, dists: np.ndarray, ids: Sequence[str]) -> int:
    """``query_id, rank, neighbor_id, distance`` lines (with a header) to an open text file; returns the lines written."""
    fh.write("query_id\trank\tneighbor_id\tdistance\n")
    lines = 0
    for q, nb, d in zip(query_ids, rows, dists):
        for rank, (r, dist) in enumerate(zip(nb.tolist(), d.tolist()), 1):
            fh.write(f"{q}\t{rank}\t{ids[r]}\t{dist:.6g}\n")
            lines += 1
    return lines


def embed_fasta_file(path: str, encoder, threads: int = 0) -> tuple[list[str], np.ndarray]:
    """IDs and latent vectors (z_mean, float32) of the records of a FASTA file: :func:`vae.embed.embed_fasta`
    (the one FASTA-to-embeddings pipeline) into a private temporary folder, read back."""
    import tempfile

    from .count import CountOptions
    from .embed import embed_fasta

    if path != "-" and not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    work = tempfile.mkdtemp(prefix=".query-")
    try:
        emb_path, ids_path = os.path.join(work, "emb.npy"), os.path.join(work, "ids.txt")
        embed_fasta(encoder, [path], emb_path, ids_path, CountOptions(threads=threads))
        z = np.ascontiguousarray(np.load(emb_path, allow_pickle=False)[:, 1:], dtype=np.float32)
        return read_ids(ids_path), z
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the query_neighbors command

_INDEX, _BUILD, _QUERY = "index (one of)", "building", "queries (any of)"


@dataclass
class QueryOptions:
    """Everything ``query_neighbors`` takes."""

    build_index: str | None = option(None, metavar="DIR", group=_INDEX,
                                     help="build an index over -e/-id, save it to DIR (then answer any queries)")
    index: str | None = option(None, metavar="DIR", group=_INDEX, help="load a saved index")
    embeddings: str | None = option(None, flags=("-e", "--embeddings"), metavar="EMB.npy", group=_BUILD,
                                    help="embeddings (N, 1 + latent) to index")
    row_ids: str | None = option(None, flags=("-id", "--ids-of-rows"), metavar="IDS.txt", group=_BUILD,
                                 help="IDs of the embeddings' rows")
    length_column: bool = option(True, flags=("--no-length-column",), action="store_false", group=_BUILD,
                                 help="the matrices (-e, --vectors) are plain (N, latent)")
    metric: str | None = option(None, choices=METRICS, group=_BUILD,
                                help="distance, fixed when the index is built (euclidean if not given)")
    method: str | None = option(None, choices=METHODS, group=_BUILD,
                                help="search method (auto if not given: exact below 50,000 rows, else hnsw)")
    hnsw_m: int = option(16, flags=("--M",), group=_BUILD, help="HNSW links per node (more = better recall, more memory)")
    ef_construction: int = option(200, group=_BUILD, help="HNSW build-time search breadth")
    ids: list[str] = option(default_factory=list, nargs="+", metavar="ID", group=_QUERY, help="IDs of indexed contigs")
    ids_file: str | None = option(None, metavar="TXT", group=_QUERY, help="a file of IDs, one per line")
    vectors: str | None = option(None, metavar="Q.npy", group=_QUERY,
                                 help="query embeddings (same layout as -e), e.g. from `embedding`")
    vectors_ids: str | None = option(None, metavar="Q.txt", group=_QUERY, help="IDs of --vectors' rows (default: row numbers)")
    fasta: str | None = option(None, metavar="FASTA", group=_QUERY, help="new sequences: k-mers counted and embedded with -m")
    model: str | None = option(None, flags=("-m", "--model"), metavar="ENCODER", group=_QUERY,
                               help="the encoder for --fasta, .keras or portable .json (the shipped model if not given); "
                                    "use the one that made the indexed embeddings")
    engine: str = option("auto", choices=("auto", "keras", "numpy"), group=_QUERY, help="inference engine for --fasta")
    k: int = option(10, flags=("-k",), help="neighbours per query")
    ef: int = option(100, help="HNSW query-time search breadth (>= k; more = better recall, slower)")
    output: str | None = option(None, flags=("-o", "--output"), metavar="TSV", help="output file (default: stdout)")
    threads: int = option(0, help="threads (0 = all cores)")
    seed: int = option(42, help="seed of the HNSW graph")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        for name, flag in (("hnsw_m", "--M"), ("ef_construction", "--ef-construction"), ("ef", "--ef"),
                           ("threads", "--threads")):
            if getattr(self, name) < 0:
                raise InputError(f"{flag} must be >= 0, got {getattr(self, name)}")
        if bool(self.build_index) == bool(self.index):
            raise InputError("give exactly one of --build-index DIR (with -e, -id) and --index DIR")

    @property
    def has_query(self) -> bool:
        return bool(self.ids or self.ids_file or self.vectors or self.fasta)


def run(opts: QueryOptions) -> dict:
    """Build or load the index, answer the queries (TSV to -o or stdout); returns the counts of queries and lines."""
    from .matrix import atomic_text, check_output_dir, load_embeddings
    from .paths import check_paths, encoder_files

    def log(msg: str) -> None:
        if not opts.quiet:
            print(f"query_neighbors: {msg}", file=sys.stderr)

    index_files = [os.path.join(opts.index, n) for n in ("meta.json", "ids.txt", "vectors.npy", "hnsw.bin")] if opts.index else []
    check_paths([opts.embeddings, opts.row_ids, opts.ids_file, opts.vectors, opts.vectors_ids, opts.fasta]
                + index_files + encoder_files(opts.model), [opts.output], folders=[opts.build_index])
    if opts.index and not opts.has_query:
        raise InputError("nothing to query: give --ids, --ids-file, --vectors or --fasta")
    if opts.output:
        check_output_dir(opts.output)
    if opts.k < 1:
        raise InputError("-k must be >= 1")
    if opts.index and (opts.embeddings or opts.row_ids):
        raise InputError("-e/-id build an index: use them with --build-index, not --index")

    if opts.build_index:
        from .progress import rows_bar

        if not opts.embeddings or not opts.row_ids:
            raise InputError("--build-index needs the embeddings and their IDs: -e EMB.npy -id IDS.txt")
        check_output_dir(opts.build_index)
        emb = load_embeddings(opts.embeddings, opts.row_ids, length_column=opts.length_column)
        with rows_bar(len(emb), desc="indexing", disable=opts.quiet) as update:
            index = NeighborIndex.build(emb.z, emb.ids, metric=opts.metric or "euclidean", method=opts.method or "auto",
                                        M=opts.hnsw_m, ef_construction=opts.ef_construction, ef_search=opts.ef,
                                        threads=opts.threads, seed=opts.seed, source=opts.embeddings, progress=update)
        index.params["length_column"] = opts.length_column
        index.save(opts.build_index)
        log(f"indexed {len(index):,} vectors of {index.dim} dimensions ({index.method}, {index.metric}) -> {opts.build_index}")
        if not opts.has_query:
            return {"queries": 0, "lines": 0}
    else:
        index = NeighborIndex.load(opts.index)
        for flag, want, have in (("--metric", opts.metric, index.metric), ("--method", opts.method, index.method)):
            if want and want not in (have, "auto"):
                raise InputError(f"{flag} {want}: the index {opts.index} was built with {have}; "
                                 f"rebuild it with --build-index {flag} {want}")
    index.params["ef_search"] = opts.ef

    query_ids: list[str] = []
    rows_nb, rows_d = [], []
    by_id = list(opts.ids) + (read_ids(opts.ids_file) if opts.ids_file else [])
    by_id = [i for i in (s.strip() for s in by_id) if i]
    if opts.ids_file and not by_id and not (opts.vectors or opts.fasta):
        raise InputError(f"{opts.ids_file}: no IDs in it")
    if by_id:
        nb, d = index.query_rows(index.rows_of(by_id), opts.k, opts.threads)
        query_ids += by_id
        rows_nb.append(nb)
        rows_d.append(d)
    if opts.vectors:
        q = load_embeddings(opts.vectors, opts.vectors_ids, length_column=opts.length_column)
        if q.z.shape[1] != index.dim:
            raise InputError(f"{opts.vectors}: vectors of {q.z.shape[1]} dimensions but the index has {index.dim}"
                             + (" (is --no-length-column right?)" if abs(q.z.shape[1] - index.dim) == 1 else ""))
        nb, d = index.query(q.z, opts.k, opts.threads)
        query_ids += q.ids or [f"row{i}" for i in range(len(q))]
        rows_nb.append(nb)
        rows_d.append(d)
    if opts.fasta:
        from .embed import load_encoder

        if opts.fasta != "-" and not os.path.exists(opts.fasta):
            raise InputError(f"{opts.fasta}: no such file")  # before the encoder (seconds with Keras) is loaded
        encoder = load_encoder(opts.model, opts.engine)
        if encoder.latent != index.dim:
            raise InputError(f"the encoder {opts.model or '(the default model)'} makes {encoder.latent}-D vectors but the index has {index.dim}: "
                             "use the encoder that made the indexed embeddings")
        fids, z = embed_fasta_file(opts.fasta, encoder, opts.threads)
        nb, d = index.query(z, opts.k, opts.threads)
        query_ids += fids
        rows_nb.append(nb)
        rows_d.append(d)
    # Blocks may have different widths when k exceeds what an ID query can return: pad nothing, write row by row.
    nbs = [r for block in rows_nb for r in block]
    ds = [r for block in rows_d for r in block]
    if opts.output:
        with atomic_text(opts.output) as fh:
            lines = write_neighbors_tsv(fh, query_ids, nbs, ds, index.ids)
    else:
        lines = write_neighbors_tsv(sys.stdout, query_ids, nbs, ds, index.ids)
        sys.stdout.flush()
    log(f"{len(query_ids):,} queries, {lines:,} neighbours ({index.method}, {index.metric})"
        + (f" -> {opts.output}" if opts.output else ""))
    return {"queries": len(query_ids), "lines": lines}
