"""Embedding pipelines: k-mer matrices, .npy streams and FASTA files -> embeddings, and the ``embedding`` command.

An embedding row is the contig length, then z_mean of the encoder
(:mod:`vae.encoder`: engines, loading, the portable export). Everything
streams in batches (memmap in, streaming writer out), so inputs larger than RAM
work; FASTA is counted on the fly (:mod:`vae.count`).

This module must not import TensorFlow or Keras at module level (the NumPy
engine is part of the light path).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

from .encoder import (DEFAULT_BATCH, ENGINES, OUT_DTYPE, Encoder, check_width, embed_rows, iter_embeddings,  # noqa: F401
                      load_encoder, z_mean_of)
from .errors import InputError
from .fasta import FASTA_SUFFIXES, sniff_input
from .kmers import N_COLUMNS
from .matrix import (NpyStreamWriter, StreamNpyWriter, atomic_path, atomic_text, check_output_dir, commit_now,
                     commit_together, iter_npy_stream, open_matrix, read_ids, read_npy_stream_header)
from .options import check_non_negative, option, quiet_option


def embed_matrix(rows: np.ndarray, model_path: str | None = None, engine: str = "auto",
                 batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """z_mean (n, latent) float32 of in-memory k-mer matrix rows (n, 2773), no length column; None = default model."""
    encoder = load_encoder(model_path, engine)
    check_width(encoder)
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise InputError(f"expected k-mer matrix rows of {N_COLUMNS} columns, got shape {rows.shape}")
    return z_mean_of(encoder, rows, batch_size=batch_size)


def _iter_memmap(matrix: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, matrix.shape[0], batch_size):
        yield np.asarray(matrix[start : start + batch_size])


def embed_matrix_file(encoder: Encoder, in_path: str, out_path: str, batch_size: int = DEFAULT_BATCH,
                      progress: Callable[[int], None] | None = None) -> int:
    """Embed the matrix at ``in_path`` into ``out_path`` (atomic); returns the number of rows."""
    check_width(encoder)
    matrix = open_matrix(in_path)
    check_output_dir(out_path)
    with NpyStreamWriter(out_path, 1 + encoder.latent, OUT_DTYPE) as w:
        for emb in iter_embeddings(encoder, _iter_memmap(matrix, batch_size), in_path):
            w.write(emb)
            if progress is not None:
                progress(emb.shape[0])
        w.commit()
    return matrix.shape[0]


def embed_stream(encoder: Encoder, in_fh: BinaryIO, out_fh: BinaryIO, batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[int], None] | None = None, name: str = "stdin") -> int:
    """Embed a .npy read from a stream (e.g. stdin) into a .npy written to a stream (e.g. stdout)."""
    check_width(encoder)
    shape, dtype = read_npy_stream_header(in_fh, name)
    w = StreamNpyWriter(out_fh, shape[0], 1 + encoder.latent, OUT_DTYPE)
    for emb in iter_embeddings(encoder, iter_npy_stream(in_fh, shape, dtype, batch_size, name), name):
        w.write(emb)
        if progress is not None:
            progress(emb.shape[0])
    w.commit()
    return shape[0]


def default_ids_path(out_path: str) -> str:
    """``emb.npy`` -> ``emb.txt``: where the IDs of FASTA input go."""
    return (out_path[:-4] if out_path.endswith(".npy") else out_path) + ".txt"


def _move_into_place(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; across filesystems copy beside ``dst`` first so the final step stays a rename."""
    try:
        os.replace(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def embed_fasta(encoder: Encoder, inputs: Sequence[str], out: str | BinaryIO, ids_path: str, count_opts=None,
                batch_size: int = DEFAULT_BATCH, tmp_dir: str | None = None,
                count_progress=None, progress: Callable[[int], None] | None = None) -> int:
    """Count FASTA ``inputs`` and embed each counted block as it comes; IDs to ``ids_path``; returns rows.

    No k-mer matrix is written. A file output is written under a temporary name
    and renamed when complete. A stream output (stdout) must state the row count
    in its .npy header first, so there the embeddings (1.5 KB a contig at latent
    384) wait in a temporary file in ``tmp_dir`` until counting is done.
    """
    from .count import CountOptions, CountStats, iter_counted

    check_width(encoder)
    check_output_dir(ids_path)
    opts = count_opts or CountOptions()
    stats = CountStats(files=list(inputs))
    to_stream = not isinstance(out, str)
    work = tempfile.mkdtemp(prefix=".embedding-", dir=tmp_dir) if to_stream else None
    if not to_stream:
        check_output_dir(out)
    target = os.path.join(work, "emb.npy") if to_stream else out
    ids_target = os.path.join(work, "ids.txt") if to_stream else ids_path
    try:
        # Embeddings and IDs appear together or not at all; the stream's work files are private (renamed at once).
        with (commit_now() if to_stream else commit_together()), \
                NpyStreamWriter(target, 1 + encoder.latent, OUT_DTYPE) as w, atomic_text(ids_target) as id_fh:
            for block in iter_counted(list(inputs), opts, stats, count_progress):
                for a in range(0, block.rows.shape[0], batch_size):
                    emb = embed_rows(encoder, block.rows[a : a + batch_size])
                    w.write(emb)
                    if progress is not None:
                        progress(emb.shape[0])
                id_fh.writelines(i + "\n" for i in block.ids)
            if stats.rows == 0:
                raise InputError("no sequences were counted (all inputs empty or shorter than --min-length)")
            w.commit()
        if to_stream:
            emb_all = np.load(target, mmap_mode="r", allow_pickle=False)
            sw = StreamNpyWriter(out, emb_all.shape[0], emb_all.shape[1], OUT_DTYPE)
            for a in range(0, emb_all.shape[0], batch_size):
                sw.write(np.asarray(emb_all[a : a + batch_size]))
            sw.commit()
            del emb_all
            _move_into_place(ids_target, ids_path)
        return stats.rows
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def input_stem(path: str) -> str:
    """``dir/sample1.fa.gz`` -> ``sample1``; ``kmers/a.npy`` -> ``a``: the name of a per-input output."""
    base = os.path.basename(path)
    low = base.lower()
    if low.endswith(".gz"):
        base, low = base[:-3], low[:-3]
    for suffix in (".npy", *FASTA_SUFFIXES):
        if low.endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclass
class EmbedManyOptions:
    """``embedding -i A B ... -o DIR/``: one output pair DIR/<name>.npy + .txt per input, one encoder load."""

    inputs: Sequence[str]
    out_dir: str
    batch_size: int = DEFAULT_BATCH
    count_opts: object | None = None  # vae.count.CountOptions for FASTA inputs


def plan_many(opts: EmbedManyOptions) -> list[tuple[str, str, str, str]]:
    """(input, kind, DIR/name.npy, DIR/name.txt) per input; every check that needs no encoder, before any work."""
    plan, seen = [], {}
    for p in opts.inputs:
        kind = sniff_input(p)
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        name = input_stem(p)
        if name in seen:
            raise InputError(f"{seen[name]} and {p} would both write {name}.npy: rename one of them")
        seen[name] = p
        out = os.path.join(opts.out_dir, name + ".npy")
        ids = os.path.join(opts.out_dir, name + ".txt")
        for o in (out, ids):
            if os.path.exists(o) and os.path.samefile(o, p):
                raise InputError(f"{p}: the output {o} would overwrite this input: choose another -o folder")
        if kind == "npy":
            rows = open_matrix(p).shape[0]  # a bad 10th input fails before the first 9 are embedded
            src_ids = matrix_ids_path(p)
            if src_ids is not None:
                if os.path.exists(ids) and os.path.samefile(src_ids, ids):
                    raise InputError(f"{src_ids}: the output {ids} would overwrite this input: choose another -o folder")
                n_ids = len(read_ids(src_ids))
                if n_ids != rows:
                    raise InputError(f"{p} has {rows} rows but {src_ids} has {n_ids} IDs")
        plan.append((p, kind, out, ids))
    return plan


def matrix_ids_path(npy_path: str) -> str | None:
    """The IDs file beside a matrix (``a.npy`` -> ``a.txt`` or ``a.txt.gz``), or None."""
    stem = npy_path[:-4] if npy_path.endswith(".npy") else npy_path
    for cand in (stem + ".txt", stem + ".txt.gz"):
        if os.path.exists(cand):
            return cand
    return None


def embed_many(encoder: Encoder, opts: EmbedManyOptions, progress: Callable[[int], None] | None = None,
               count_progress=None) -> list[tuple[str, int, str]]:
    """Embed each input to DIR/<name>.npy (+ DIR/<name>.txt) with the one loaded ``encoder``.

    A FASTA input is counted on the fly (its IDs written beside); a matrix's IDs
    are copied from the ``.txt`` beside it (rows keep their order), so every
    output is a self-contained pair. Returns (output, rows, note) per input.
    """
    from .count import CountOptions

    check_width(encoder)
    os.makedirs(opts.out_dir, exist_ok=True)
    plan = plan_many(opts)
    done = []
    for path, kind, out, ids in plan:
        if kind == "fasta":
            n = embed_fasta(encoder, [path], out, ids, opts.count_opts or CountOptions(), opts.batch_size,
                            count_progress=count_progress, progress=progress)
            note = "IDs " + ids
        else:
            n = embed_matrix_file(encoder, path, out, opts.batch_size, progress)
            src_ids = matrix_ids_path(path)
            if src_ids is None:
                note = f"no IDs file beside {path}: none written"
            else:
                with atomic_text(ids) as fh:
                    fh.writelines(i + "\n" for i in read_ids(src_ids))
                note = "IDs " + ids
        done.append((out, n, note))
    return done


@dataclass
class EmbedOptions:
    """Everything ``embedding`` takes."""

    model: str | None = option(None, flags=("-m", "--model"), metavar="ENCODER",
                               help="encoder .keras, or a portable export (.json/.npz from export_encoder); "
                                    "default: the shipped model (Models/default/)")
    inputs: list[str] | None = option(None, flags=("-i", "--input"), metavar="FILE",
                                      help="k-mer matrix .npy, or FASTA files (plain or .gz; detected by name or "
                                           "content); default: .npy on stdin")
    output: str | None = option(None, flags=("-o", "--output"), metavar="EMB.npy",
                                help="output .npy (written atomically); default: stdout. A folder (ending in / or "
                                     "existing): each input gets FOLDER/<name>.npy + <name>.txt (a matrix's IDs copied "
                                     "from the .txt beside it)")
    ids_out: str | None = option(None, metavar="IDS.txt",
                                 help="IDs file for FASTA input (default: the output name with .txt)")
    engine: str = option("auto", choices=ENGINES,
                         help="keras (TensorFlow) or numpy (portable export, no TensorFlow); auto = keras when "
                              "TensorFlow is installed")
    batch_size: int = option(DEFAULT_BATCH, metavar="N", help="rows per inference batch")
    min_length: int = option(0, metavar="N", help="FASTA input: skip sequences shorter than N")
    chop: int = option(0, metavar="L", help="FASTA input: cut sequences of length >= L into floor(len/L) equal pieces "
                                            "(IDs id.1, id.2, ...)")
    threads: int = option(0, help="FASTA input: counting threads (0 = all cores)")
    tmp_dir: str | None = option(None, metavar="DIR",
                                 help="FASTA input written to stdout: where the embeddings wait until counting ends "
                                      "(~1.5 KB a contig at latent 384; default: the system's temp folder)")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        check_non_negative(self, "batch_size", "min_length", "chop", "threads")
        if self.batch_size < 1:
            raise InputError("--batch-size must be >= 1")
        if self.inputs is not None and list(self.inputs) == ["-"]:
            self.inputs = None  # stdin: a .npy stream (FASTA must be a file, counted before embedding)

    def count_options(self):
        from .count import CountOptions

        return CountOptions(min_length=self.min_length, chop=self.chop, threads=self.threads)


def run(opts: EmbedOptions) -> "EmbedResult":
    """``embedding``: matrix or FASTA (files or a .npy on stdin) -> embeddings (a file, stdout, or a folder); rows."""
    import time

    from .paths import check_paths, encoder_files
    from .progress import counting_bar, rows_bar

    if opts.output and (opts.output.endswith(("/", os.sep)) or os.path.isdir(opts.output)):
        return _run_to_dir(opts)
    kinds = [sniff_input(p) for p in opts.inputs] if opts.inputs else ["npy"]
    if "npy" in kinds and len(kinds) > 1:
        raise InputError("give one .npy matrix, or one or more FASTA files (concatenate matrices with concatenate_matrices)")
    fasta = kinds[0] == "fasta"
    ids_out = opts.ids_out or (default_ids_path(opts.output) if fasta and opts.output else None)
    if fasta and ids_out is None:
        raise InputError("FASTA input written to stdout needs --ids-out IDS.txt (where the contig IDs go)")
    check_paths((opts.inputs or []) + encoder_files(opts.model), [opts.output, ids_out])
    if not fasta and (opts.ids_out or opts.chop or opts.min_length):
        raise InputError("--ids-out, --chop and --min-length are for FASTA input; a matrix keeps its IDs file (rows keep their order)")
    if opts.output is None and sys.stdout.isatty():
        raise InputError("refusing to write a binary .npy to the terminal: redirect stdout or give -o EMB.npy")
    if not opts.inputs and sys.stdin.isatty():
        raise InputError("no input: pipe a .npy k-mer matrix into stdin or give -i FILE")
    encoder = load_encoder(opts.model, opts.engine)
    engine = "keras" if type(encoder).__name__ == "KerasEncoder" else "numpy"
    out_stream, saved_stdout = None, sys.stdout
    if opts.output is None:
        # Keep stray prints (ours or a library's) out of the binary stream.
        out_stream, sys.stdout = sys.stdout.buffer, sys.stderr
    t0 = time.perf_counter()
    try:
        total = None
        if opts.inputs and not fasta:
            total = open_matrix(opts.inputs[0]).shape[0]  # also validates before anything is written
        with rows_bar(total, desc="embedding", disable=opts.quiet) as update:
            if fasta:
                with counting_bar(disable=opts.quiet) as count_update:
                    n = embed_fasta(encoder, opts.inputs, opts.output or out_stream, ids_out, opts.count_options(),
                                    opts.batch_size, opts.tmp_dir, count_progress=count_update, progress=update)
            elif opts.inputs:
                if opts.output is None:
                    with open(opts.inputs[0], "rb") as fh:
                        n = embed_stream(encoder, fh, out_stream, opts.batch_size, update, name=opts.inputs[0])
                else:
                    n = embed_matrix_file(encoder, opts.inputs[0], opts.output, opts.batch_size, update)
            else:
                if opts.output is None:
                    n = embed_stream(encoder, sys.stdin.buffer, out_stream, opts.batch_size, update)
                else:
                    n = embed_stdin_to_file(encoder, opts.output, opts.batch_size, update)
    finally:
        sys.stdout = saved_stdout
    dt = time.perf_counter() - t0
    if not opts.quiet:
        print(f"embedding: {n:,} rows -> {opts.output or 'stdout'} ({engine} engine, latent {encoder.latent}, "
              f"{encoder.source}; {n / dt if dt > 0 else 0:,.0f} rows/s){'; IDs -> ' + ids_out if fasta else ''}",
              file=sys.stderr)
    return EmbedResult(n)


@dataclass
class EmbedResult:
    rows: int


def _run_to_dir(opts: EmbedOptions) -> EmbedResult:
    """``-o DIR/``: every input to DIR/<name>.npy + .txt with one encoder load."""
    import time

    from .progress import counting_bar, rows_bar

    if not opts.inputs:
        raise InputError("-o FOLDER/ needs input files (-i A B ...): stdin has no name to write under")
    if opts.ids_out:
        raise InputError("--ids-out is for a single output; with -o FOLDER/ the IDs go to FOLDER/<name>.txt")
    many = EmbedManyOptions(opts.inputs, opts.output, opts.batch_size, opts.count_options())
    if not os.path.isdir(opts.output) and os.path.exists(opts.output.rstrip("/" + os.sep)):
        raise InputError(f"{opts.output}: exists and is not a folder")
    kinds = [k for _, k, _, _ in plan_many(many)]  # checks names and matrices before the encoder loads
    if "fasta" not in kinds and (opts.chop or opts.min_length):
        raise InputError("--chop and --min-length are for FASTA input; a matrix keeps its rows")
    encoder = load_encoder(opts.model, opts.engine)
    t0 = time.perf_counter()
    with rows_bar(None, desc="embedding", disable=opts.quiet) as update, counting_bar(disable=opts.quiet) as cupdate:
        done = embed_many(encoder, many, progress=update, count_progress=cupdate)
    dt = time.perf_counter() - t0
    n = sum(r for _, r, _ in done)
    if not opts.quiet:
        for out, rows, note in done:
            print(f"embedding: {rows:,} rows -> {out}; {note}", file=sys.stderr)
        print(f"embedding: {len(done)} inputs, {n:,} rows, one encoder load ({encoder.source}; "
              f"{n / dt if dt > 0 else 0:,.0f} rows/s)", file=sys.stderr)
    return EmbedResult(n)


def embed_stdin_to_file(encoder: Encoder, out_path: str, batch_size: int, update) -> int:
    """stdin .npy -> file: stream through the atomic writer (stdin is not seekable)."""
    check_width(encoder)
    check_output_dir(out_path)
    shape, dtype = read_npy_stream_header(sys.stdin.buffer)
    with NpyStreamWriter(out_path, 1 + encoder.latent, OUT_DTYPE) as w:
        for emb in iter_embeddings(encoder, iter_npy_stream(sys.stdin.buffer, shape, dtype, batch_size)):
            w.write(emb)
            update(emb.shape[0])
        w.commit()
    return shape[0]
