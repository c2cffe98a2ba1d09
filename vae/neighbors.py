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
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from typing import Sequence

import numpy as np

from .errors import InputError
from .matrix import NpyStreamWriter, open_matrix, read_ids

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
    bounded by ``chunk_elements`` distances at a time.
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    data = np.asarray(data, dtype=np.float32)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = data.shape[0]
    k = min(k, n)
    if metric == "cosine":
        data, queries = _normalise(data), _normalise(queries)
    else:
        sq = np.einsum("ij,ij->i", data, data, dtype=np.float64)
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    dist = np.empty((queries.shape[0], k), dtype=np.float32)
    step = max(1, chunk_elements // max(1, n))
    for a in range(0, queries.shape[0], step):
        q = queries[a : a + step]
        dots = q.astype(np.float64) @ data.T.astype(np.float64)
        if metric == "cosine":
            d = 1.0 - dots
        else:
            d = np.einsum("ij,ij->i", q, q, dtype=np.float64)[:, None] - 2.0 * dots + sq[None, :]
            np.maximum(d, 0.0, out=d)
        if k < n:
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (q.shape[0], n))
        pd = np.take_along_axis(d, part, axis=1)
        # Sort by (distance, row) so equal distances come out in row order.
        order = np.lexsort((part, pd), axis=1)
        part = np.take_along_axis(part, order, axis=1)
        pd = np.take_along_axis(pd, order, axis=1)
        idx[a : a + q.shape[0]] = part
        dist[a : a + q.shape[0]] = np.sqrt(pd) if metric == "euclidean" else np.maximum(pd, 0.0)
    return idx, dist


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
        from .explore import n_threads

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
        from .explore import n_threads

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
        folder = os.path.abspath(folder)
        parent = os.path.dirname(folder)
        if not os.path.isdir(parent):
            raise InputError(f"output folder {parent} does not exist")
        if os.path.exists(folder) and not _is_index(folder):
            raise InputError(f"{folder} exists and is not a neighbour index: remove it or choose another name")
        tmp = os.path.join(parent, f".{os.path.basename(folder)}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp)
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
            if os.path.exists(folder):
                old = os.path.join(parent, f".{os.path.basename(folder)}.old-{os.getpid()}")
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: str) -> "NeighborIndex":
        """Reload an index folder written by :meth:`save`, checking that its parts agree."""
        if not os.path.isdir(folder):
            raise InputError(f"{folder}: no such index folder (build one with --build-index)")
        meta_path = os.path.join(folder, "meta.json")
        try:
            with open(meta_path, encoding="utf-8") as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise InputError(f"{folder}: not a neighbour index (no meta.json)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{meta_path}: unreadable ({e})") from None
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


def fasta_profiles(path: str) -> tuple[list[str], np.ndarray]:
    """(IDs, k-mer matrix rows (N, 2773)) of every record of a (small) FASTA file, counted in memory."""
    from .fasta import iter_blocks, parse_block
    from .kmers import profiles

    if path != "-" and not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ids: list[str] = []
    rows = []
    for buf in iter_blocks(path):
        block = parse_block(buf, path)
        ids.extend(block.ids())
        rows.append(profiles(block.codes, block.seq_start.astype(np.int64), block.seq_end.astype(np.int64)))
    if not ids:
        raise InputError(f"{path}: no FASTA records")
    return ids, np.concatenate(rows)


def embed_fasta(path: str, model_path: str | None = None, engine: str = "auto") -> tuple[list[str], np.ndarray]:
    """IDs and latent vectors (z_mean) of the records of a FASTA file, through the encoder at ``model_path``
    (None = the shipped default model; see :func:`vae.embed.load_encoder`)."""
    from .embed import embed_matrix

    ids, rows = fasta_profiles(path)
    z = np.asarray(embed_matrix(rows, model_path, engine=engine), dtype=np.float32)
    if z.ndim != 2 or z.shape[0] != len(ids):
        raise InputError(f"the encoder returned shape {z.shape} for {len(ids)} sequences")
    return ids, z
