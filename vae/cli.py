"""Argument parsing for every command, and nothing else: each command parses, then calls the library.

Every entry point goes through :func:`run`, which turns the errors a user can
cause into one line on stderr and a non-zero exit status:

* :class:`~vae.errors.InputError` (bad input or arguments): status 2;
* a full disk or another OS error while writing: status 1;
* Ctrl-C: status 130 (temporary outputs are removed by the writers).

Heavy libraries (TensorFlow, Keras, openTSNE ...) are imported inside the
commands that need them, so the light commands start fast.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, Sequence

from .errors import InputError

Argv = Sequence[str] | None


def run(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser, argv: Argv) -> int:
    """Parse ``argv``, run ``main`` and map failures to one clear line and an exit status."""
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        return int(main(args) or 0)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Downstream of a pipe closed early (e.g. `| head`): not our failure to report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"{prog}: error: disk full while writing{' ' + e.filename if e.filename else ''}; no output was written", file=sys.stderr)
        else:
            print(f"{prog}: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", file=sys.stderr)
        return 1


def _exit(code: int) -> None:
    raise SystemExit(code)


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; shows defaults only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=_Formatter)


# --------------------------------------------------------------------------- counting (issue 2)


def calculate_kmer_frequencies_parser() -> argparse.ArgumentParser:
    p = _parser(
        "calculate_kmer_frequencies",
        "Count canonical 1- to 6-mers of every FASTA record into a k-mer matrix (N, 2773):\n"
        "column 0 the number of A/C/G/T bases, then 6-,5-,4-,3-,2-,1-mer frequencies, each group\n"
        "summing to 1. Row i belongs to line i of the IDs file. Characters other than A/C/G/T\n"
        "break k-mers. Plain or gzipped FASTA; '-' reads stdin.\n\n"
        "example: calculate_kmer_frequencies -i a.fa.gz b.fa -id ids.txt -k kmers.npy --chop 10000",
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="FASTA", help="FASTA files (plain or .gz), counted in order; '-' for stdin")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="output IDs file, one per row")
    p.add_argument("-k", "--kmers", required=True, metavar="KMERS.npy", help="output matrix")
    p.add_argument("--min-length", type=_positive_int, default=0, metavar="N", help="skip sequences shorter than N characters")
    p.add_argument("--chop", type=_positive_int, default=0, metavar="L",
                   help="cut each sequence of length >= L into floor(len/L) equal pieces (IDs id.1, id.2, ...); shorter ones are kept whole")
    p.add_argument("--keep-full", action="store_true", help="with --chop, also keep the whole sequence")
    p.add_argument("--threads", type=_positive_int, default=0, help="worker threads (0 = all cores)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="matrix dtype (float16 halves the size; lengths saturate at 65504)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _calculate_kmer_frequencies(args: argparse.Namespace) -> int:
    from .count import CountOptions, count_files
    from .progress import counting_bar

    opts = CountOptions(min_length=args.min_length, chop=args.chop, keep_full=args.keep_full,
                        threads=args.threads, dtype=args.dtype)
    with counting_bar(disable=args.quiet) as update:
        stats = count_files(args.input, args.ids, args.kmers, opts, progress=update)
    print(f"calculate_kmer_frequencies: {stats.summary()} -> {args.kmers}", file=sys.stderr)
    return 0


def calculate_kmer_frequencies(argv: Argv = None) -> int:
    """Console entry point of ``calculate_kmer_frequencies``."""
    _exit(run(_calculate_kmer_frequencies, calculate_kmer_frequencies_parser(), argv))


def concatenate_matrices_parser() -> argparse.ArgumentParser:
    p = _parser(
        "concatenate_matrices",
        "Concatenate k-mer matrices and their ID files into NAME.npy and NAME.txt, keeping every\n"
        "(ID, row) pair together; --shuffle permutes rows out of core (bounded memory).\n\n"
        "example: concatenate_matrices -i a.npy b.npy -id a.txt b.txt -o train --shuffle",
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="NPY", help="input matrices")
    p.add_argument("-id", "--ids", nargs="+", required=True, metavar="TXT", help="their ID files (.txt or .txt.gz), same order")
    p.add_argument("-o", "--output", required=True, metavar="NAME", help="output prefix: writes NAME.npy and NAME.txt")
    p.add_argument("--shuffle", action="store_true", help="shuffle rows (IDs move with them)")
    p.add_argument("--seed", type=int, default=42, help="seed of the shuffle")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _concatenate_matrices(args: argparse.Namespace) -> int:
    from .matrix import concatenate, open_matrix
    from .progress import rows_bar

    prefix = args.output[:-4] if args.output.endswith(".npy") else args.output
    total = sum(open_matrix(p, n_cols=None).shape[0] for p in args.input) if len(args.input) == len(args.ids) else 0
    with rows_bar(total, disable=args.quiet) as update:
        n, n_dup = concatenate(args.input, args.ids, prefix, shuffle=args.shuffle, seed=args.seed, progress=update)
    print(f"concatenate_matrices: {n:,} rows from {len(args.input)} matrices"
          f"{' (shuffled, seed ' + str(args.seed) + ')' if args.shuffle else ''} -> {prefix}.npy, {prefix}.txt", file=sys.stderr)
    return 0


def concatenate_matrices(argv: Argv = None) -> int:
    """Console entry point of ``concatenate_matrices``."""
    _exit(run(_concatenate_matrices, concatenate_matrices_parser(), argv))


# --------------------------------------------------------------------------- training (issue 3)


def train_vae_parser() -> argparse.ArgumentParser:
    from .train import TrainOptions as D  # light: Keras is imported only when training starts

    p = _parser(
        "train_vae",
        "Train the beta-VAE on a k-mer matrix (N, 2773), streaming rows from disk (float32 or float16).\n"
        "Input to the model: CLR of columns 1..2772 per k-mer group (Jeffreys pseudocounts), computed on the fly.\n"
        "RUN_DIR gets config.json, split.npz (train/validation rows), train.log, history.csv,\n"
        "training_curves.png, best/ and final/ {vae,encoder,decoder}.keras, encoder.keras (the best\n"
        "encoder: give it to `embedding`) and resume/ (the last completed epoch, for --resume).\n"
        "The KL weight rises linearly to --beta over --warmup-epochs; the best checkpoint, LR plateaus\n"
        "and early stopping only count epochs after warm-up. Ctrl-C keeps the last completed epoch.\n\n"
        "example: train_vae -i train.npy --latent 384 --beta 0.05 --epochs 500 -o Models/run1\n"
        "         train_vae -o Models/run1 --resume --epochs 800",
    )
    p.add_argument("-i", "--input", metavar="MATRIX.npy", help="k-mer matrix (required unless --resume: then the run's input)")
    p.add_argument("-o", "--output", metavar="RUN_DIR", default=None,
                   help="run folder, created (default: Models/vae-<date>-<time>)")
    p.add_argument("--latent", type=int, default=D.latent, help="latent dimensions")
    p.add_argument("--hidden", type=int, nargs="+", default=list(D.hidden), metavar="W",
                   help="hidden layer widths of the encoder (the decoder mirrors them)")
    p.add_argument("--beta", type=float, default=D.beta, help="weight of the KL term after warm-up")
    p.add_argument("--epochs", type=int, default=D.epochs, help="total epochs (with --resume: train up to this many)")
    p.add_argument("--lr", type=float, default=D.lr, help="initial learning rate (Adam)")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help="rows per training batch")
    p.add_argument("--warmup-epochs", type=int, default=D.warmup_epochs, help="epochs of linear KL warm-up (0 = none)")
    p.add_argument("--val-fraction", type=float, default=D.val_fraction, help="fraction of rows held out for validation (seeded random split)")
    p.add_argument("--max-samples", type=_positive_int, default=D.max_samples, metavar="N",
                   help="use a random subset of N rows (0 = all)")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the split, the shuffling and the weights")
    p.add_argument("--dropout", type=float, default=D.dropout, help="dropout after each hidden layer")
    p.add_argument("--patience", type=int, default=D.patience, help="epochs without a better validation loss before the LR is cut")
    p.add_argument("--lr-factor", type=float, default=D.lr_factor, help="LR multiplier on a plateau")
    p.add_argument("--min-lr", type=float, default=D.min_lr, help="the LR is never cut below this")
    p.add_argument("--early-stopping", type=_positive_int, default=D.early_stopping, metavar="N",
                   help="stop after N epochs without a better validation loss (0 = off)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR (epoch, optimiser, LR, KL weight, best value); options that "
                        "define the model or data must be unchanged")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute with float32 weights (GPU)")
    p.add_argument("--steps-per-epoch", type=_positive_int, default=D.steps_per_epoch, metavar="N",
                   help="batches per epoch (0 = one pass over the training rows)")
    p.add_argument("--workers", type=_positive_int, default=D.workers, help="reader threads (0 = from the number of cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the per-epoch lines remain)")
    p.add_argument("--kmers", default=D.kmers, metavar="A-B",
                   help="model only the k-mer groups of k = A..B (e.g. 1-5: 692 inputs); the encoder records its "
                        "columns, so it still takes the full matrix")
    p.add_argument("--denoise", default=D.denoise, metavar="MIN:MAX",
                   help="denoising: replace part of each training batch by the profile each sequence would show if "
                        "it were only L bp long (L log-uniform in MIN..MAX, below its length; k-mer counts resampled), "
                        "the target staying the clean profile (default: off)")
    p.add_argument("--denoise-fraction", type=float, default=D.denoise_fraction, metavar="F",
                   help="share of each batch resampled with --denoise")
    return p


def _train_vae(args: argparse.Namespace) -> int:
    import time

    from .train import TrainingInterrupted, TrainOptions, train

    run_dir = args.output
    if run_dir is None:
        if args.resume:
            raise InputError("--resume needs the run folder: -o RUN_DIR")
        run_dir = os.path.join("Models", time.strftime("vae-%Y%m%d-%H%M%S"))
    opts = TrainOptions(
        input=args.input, run_dir=run_dir, latent=args.latent, hidden=tuple(args.hidden), beta=args.beta,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction, max_samples=args.max_samples, seed=args.seed, dropout=args.dropout,
        patience=args.patience, lr_factor=args.lr_factor, min_lr=args.min_lr, early_stopping=args.early_stopping,
        resume=args.resume, mixed_precision=args.mixed_precision, steps_per_epoch=args.steps_per_epoch,
        workers=args.workers, quiet=args.quiet, kmers=args.kmers,
        denoise=args.denoise, denoise_fraction=args.denoise_fraction,
    )
    try:
        train(opts)
    except TrainingInterrupted:
        return 130  # train() has said where the last completed epoch is
    return 0


def train_vae(argv: Argv = None) -> int:
    """Console entry point of ``train_vae``."""
    _exit(run(_train_vae, train_vae_parser(), argv))


# --------------------------------------------------------------------------- inference and evaluation (issue 4)


def embedding_parser() -> argparse.ArgumentParser:
    p = _parser(
        "embedding",
        "Embed contigs: k-mer matrix (or FASTA) -> (N, 1 + latent) float32 .npy, column 0 the contig\n"
        "length, then z_mean of the encoder (never a sample: same input, same output, bit for bit).\n"
        "Reads a .npy from stdin and writes one to stdout unless -i/-o are given; FASTA input is\n"
        "counted on the fly and its IDs written beside the output. Streams in batches: inputs\n"
        "larger than RAM work.\n\n"
        "examples:\n"
        "  embedding -m encoder.keras < kmers.npy > emb.npy\n"
        "  embedding -i contigs.fa.gz -o emb.npy            # default model; IDs -> emb.txt\n"
        "  embedding -i kmers.npy -o emb.npy --engine numpy  # no TensorFlow needed",
    )
    p.add_argument("-m", "--model", metavar="ENCODER",
                   help="encoder .keras, or a portable export (.json/.npz from export_encoder); "
                        "default: Models/default/ of the checkout")
    p.add_argument("-i", "--input", nargs="+", metavar="FILE",
                   help="k-mer matrix .npy, or FASTA files (plain or .gz; detected by name or content); default: .npy on stdin")
    p.add_argument("-o", "--output", metavar="EMB.npy", help="output .npy (written atomically); default: stdout")
    p.add_argument("--ids-out", metavar="IDS.txt", help="IDs file for FASTA input (default: the output name with .txt)")
    p.add_argument("--engine", choices=["auto", "keras", "numpy"], default="auto",
                   help="keras (TensorFlow) or numpy (portable export, no TensorFlow); auto = keras when TensorFlow is installed")
    p.add_argument("--batch-size", type=_positive_int, default=4096, metavar="N", help="rows per inference batch")
    p.add_argument("--min-length", type=_positive_int, default=0, metavar="N", help="FASTA input: skip sequences shorter than N")
    p.add_argument("--chop", type=_positive_int, default=0, metavar="L",
                   help="FASTA input: cut sequences of length >= L into floor(len/L) equal pieces (IDs id.1, id.2, ...)")
    p.add_argument("--threads", type=_positive_int, default=0, help="FASTA input: counting threads (0 = all cores)")
    p.add_argument("--tmp-dir", metavar="DIR",
                   help="FASTA input written to stdout: where the embeddings wait until counting ends (~1.5 KB a contig at latent 384; default: the system's temp folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _embedding(args: argparse.Namespace) -> int:
    import time

    from .embed import default_ids_path, embed_fasta, embed_matrix_file, embed_stream, load_encoder, sniff_input
    from .progress import counting_bar, rows_bar

    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if args.input == ["-"]:
        args.input = None  # stdin: a .npy stream (FASTA must be a file, counted before embedding)
    kinds = [sniff_input(p) for p in args.input] if args.input else ["npy"]
    if "npy" in kinds and len(kinds) > 1:
        raise InputError("give one .npy matrix, or one or more FASTA files (concatenate matrices with concatenate_matrices)")
    fasta = kinds[0] == "fasta"
    ids_out = args.ids_out or (default_ids_path(args.output) if fasta and args.output else None)
    if fasta and ids_out is None:
        raise InputError("FASTA input written to stdout needs --ids-out IDS.txt (where the contig IDs go)")
    if not fasta and (args.ids_out or args.chop or args.min_length):
        raise InputError("--ids-out, --chop and --min-length are for FASTA input; a matrix keeps its IDs file (rows keep their order)")
    if args.output is None and sys.stdout.isatty():
        raise InputError("refusing to write a binary .npy to the terminal: redirect stdout or give -o EMB.npy")
    if not args.input and sys.stdin.isatty():
        raise InputError("no input: pipe a .npy k-mer matrix into stdin or give -i FILE")
    encoder = load_encoder(args.model, args.engine)
    engine = "keras" if type(encoder).__name__ == "KerasEncoder" else "numpy"
    out_stream, saved_stdout = None, sys.stdout
    if args.output is None:
        # Keep stray prints (ours or a library's) out of the binary stream.
        out_stream, sys.stdout = sys.stdout.buffer, sys.stderr
    t0 = time.perf_counter()
    try:
        total = None
        if args.input and not fasta:
            from .matrix import open_matrix

            total = open_matrix(args.input[0]).shape[0]  # also validates before anything is written
        with rows_bar(total, desc="embedding", disable=args.quiet) as update:
            if fasta:
                from .count import CountOptions

                opts = CountOptions(min_length=args.min_length, chop=args.chop, threads=args.threads)
                with counting_bar(disable=args.quiet) as count_update:
                    n = embed_fasta(encoder, args.input, args.output or out_stream, ids_out, opts, args.batch_size,
                                    args.tmp_dir, count_progress=count_update, progress=update)
            elif args.input:
                if args.output is None:
                    with open(args.input[0], "rb") as fh:
                        n = embed_stream(encoder, fh, out_stream, args.batch_size, update, name=args.input[0])
                else:
                    n = embed_matrix_file(encoder, args.input[0], args.output, args.batch_size, update)
            else:
                if args.output is None:
                    n = embed_stream(encoder, sys.stdin.buffer, out_stream, args.batch_size, update)
                else:
                    n = _embed_stdin_to_file(encoder, args.output, args.batch_size, update)
    finally:
        sys.stdout = saved_stdout
    dt = time.perf_counter() - t0
    where = args.output or "stdout"
    print(f"embedding: {n:,} rows -> {where} ({engine} engine, latent {encoder.latent}, {encoder.source}; "
          f"{n / dt if dt > 0 else 0:,.0f} rows/s){'; IDs -> ' + ids_out if fasta else ''}", file=sys.stderr)
    return 0


def _embed_stdin_to_file(encoder, out_path: str, batch_size: int, update) -> int:
    """stdin .npy -> file: stream through the atomic writer (stdin is not seekable)."""
    from .embed import OUT_DTYPE, check_width, iter_embeddings, iter_npy_stream, read_npy_stream_header
    from .matrix import NpyStreamWriter, check_output_dir

    check_width(encoder)
    check_output_dir(out_path)
    shape, dtype = read_npy_stream_header(sys.stdin.buffer)
    with NpyStreamWriter(out_path, 1 + encoder.latent, OUT_DTYPE) as w:
        for emb in iter_embeddings(encoder, iter_npy_stream(sys.stdin.buffer, shape, dtype, batch_size)):
            w.write(emb)
            update(emb.shape[0])
        w.commit()
    return shape[0]


def embedding(argv: Argv = None) -> int:
    """Console entry point of ``embedding``."""
    _exit(run(_embedding, embedding_parser(), argv))


def export_encoder_parser() -> argparse.ArgumentParser:
    p = _parser(
        "export_encoder",
        "Export a .keras encoder to the portable NumPy format: NAME.npz (weights) + NAME.json (layers),\n"
        "BatchNorm folded into the Dense layers, z_mean branch only. `embedding --engine numpy` runs it\n"
        "without TensorFlow. The export is checked against Keras on random input (max |difference|).\n\n"
        "example: export_encoder -m Models/run1/encoder.keras      # -> Models/run1/encoder.npz + .json",
    )
    p.add_argument("-m", "--model", required=True, metavar="ENCODER.keras", help="the encoder to export")
    p.add_argument("-o", "--output", metavar="NAME", help="output name (NAME.npz + NAME.json); default: beside the encoder")
    p.add_argument("--tolerance", type=float, default=1e-4, help="fail if NumPy and Keras z_mean differ by more than this")
    return p


def _export_encoder(args: argparse.Namespace) -> int:
    import numpy as np

    from .embed import KerasEncoder, NumpyEncoder, export_encoder as export

    spec_path, weights_path = export(args.model, args.output)
    keras_enc, numpy_enc = KerasEncoder(args.model), NumpyEncoder.load(spec_path)
    # CLR-like input: zero-mean values of the scale the encoder sees.
    x = np.random.default_rng(0).normal(0.0, 1.0, size=(256, keras_enc.input_dim)).astype(np.float32)
    diff = float(np.max(np.abs(keras_enc.z_mean(x) - numpy_enc.z_mean(x))))
    size = os.path.getsize(weights_path) + os.path.getsize(spec_path)
    print(f"export_encoder: {args.model} -> {weights_path} + {spec_path} ({size / 1e6:.1f} MB; "
          f"latent {numpy_enc.latent}; max |numpy - keras| z_mean = {diff:.2e})", file=sys.stderr)
    if not diff <= args.tolerance:
        for p in (spec_path, weights_path):
            os.unlink(p)
        raise InputError(f"the export differs from Keras by {diff:.2e} > {args.tolerance:g}; removed it (unsupported layer semantics?)")
    return 0


def export_encoder(argv: Argv = None) -> int:
    """Console entry point of ``export_encoder``."""
    _exit(run(_export_encoder, export_encoder_parser(), argv))


def _encoder_for_evaluation(model: str | None, run_dir: str | None, engine: str):
    """-e, else the run's encoder.keras, else the default model."""
    from .embed import KERAS_NAME, load_encoder

    if model is None and run_dir is not None and os.path.exists(os.path.join(run_dir, KERAS_NAME)):
        model = os.path.join(run_dir, KERAS_NAME)
    return load_encoder(model, engine)


def _emit_json(path: str, result: dict) -> None:
    """The result as JSON to a file (atomically) or to stdout ('-')."""
    import json

    from .evaluate import jsonable
    from .matrix import atomic_text, check_output_dir

    text = json.dumps(jsonable(result), indent=1, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    check_output_dir(path)
    with atomic_text(path) as fh:
        fh.write(text)


def _edges(text: str) -> list[float]:
    try:
        edges = sorted(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated lengths in bp, e.g. 2000,5000,10000; got {text!r}") from None
    if any(e <= 0 for e in edges):
        raise argparse.ArgumentTypeError("length bin edges must be > 0")
    return edges


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--encoder", metavar="ENCODER",
                   help="encoder .keras or portable export (.json); default: RUN_DIR/encoder.keras with --run-dir, else Models/default/")
    p.add_argument("--engine", choices=["auto", "keras", "numpy"], default="auto", help="inference engine (see embedding --help)")
    p.add_argument("--batch-size", type=_positive_int, default=4096, metavar="N", help="rows per inference batch")
    p.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean", help="distance in every space")
    p.add_argument("--pca-train", metavar="TRAIN.npy", help="fit the PCA baseline on the rows of this matrix (e.g. the training matrix)")
    p.add_argument("--pca-fit-rows", type=_positive_int, default=100_000, metavar="N",
                   help="fit PCA on a seeded sample of at most N rows")
    p.add_argument("--seed", type=int, default=42, help="seed of every sample (queries, pool, bootstrap, PCA, k-means)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-' = stdout instead of the table)")


def verify_local_distances_parser() -> argparse.ArgumentParser:
    p = _parser(
        "verify_local_distances",
        "Does latent distance track k-mer composition locally? Queries drawn from held-out rows get their\n"
        "K nearest neighbours (exact search) in the VAE space and, in the same pool, in two baselines:\n"
        "PCA of the same dimension (fitted on training rows) and raw CLR (Spearman 1 by construction:\n"
        "the ceiling). Reports Pearson and Spearman of distance vs CLR-MSE over the K-NN pairs with\n"
        "bootstrap 95% CIs over queries, the mean CLR-MSE of the top 1/5/10/20/50 neighbours against\n"
        "random pairs, and all of it per contig-length bin. Results depend on the pool size: it is printed.\n\n"
        "examples:\n"
        "  verify_local_distances -i train.npy --run-dir Models/run1            # the run's held-out rows\n"
        "  verify_local_distances -i heldout.npy -e enc.keras --query-fraction 0.2 --pca-train train.npy --json r.json",
    )
    p.add_argument("-i", "--input", required=True, metavar="KMERS.npy", help="k-mer matrix (the one the run was trained on, with --run-dir)")
    p.add_argument("--run-dir", metavar="RUN", help="train_vae output folder: queries come from its saved validation split")
    p.add_argument("-id", "--ids", metavar="IDS.txt", help="the matrix's IDs (needed by --val-ids)")
    p.add_argument("--val-ids", metavar="FILE", help="without --run-dir: IDs of held-out rows, one per line")
    p.add_argument("--query-fraction", type=float, default=0.1, metavar="F",
                   help="without --run-dir or --val-ids: hold out a seeded random fraction F of the rows")
    p.add_argument("--queries", type=_positive_int, default=1000, metavar="N", help="number of query rows drawn from the held-out rows")
    p.add_argument("--pool-size", type=_positive_int, default=0, metavar="N",
                   help="search among N rows (a seeded sample that includes the queries); 0 = every row")
    p.add_argument("-k", "--neighbours", type=_positive_int, default=50, metavar="K", help="nearest neighbours per query")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, metavar="N", help="bootstrap resamples of queries for the 95%% CIs (0 = none)")
    p.add_argument("--length-bins", type=_edges, default=[2000, 5000, 10000, 20000, 50000], metavar="E1,E2,...",
                   help="contig-length bin edges in bp")
    _add_encoder_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def _verify_local_distances(args: argparse.Namespace) -> int:
    from .evaluate import VerifyOptions, format_verify, split_rows, verify_local_distances as verify
    from .matrix import open_matrix, read_ids

    n_rows = open_matrix(args.input).shape[0]
    ids = read_ids(args.ids) if args.ids else None
    if ids is not None and len(ids) != n_rows:
        raise InputError(f"{args.input} has {n_rows:,} rows but {args.ids} has {len(ids):,} IDs")
    if args.run_dir and args.val_ids:
        raise InputError("give --run-dir or --val-ids, not both")
    source = split_rows(n_rows, args.run_dir, args.val_ids, ids, args.query_fraction, args.seed)
    encoder = _encoder_for_evaluation(args.encoder, args.run_dir, args.engine)
    opts = VerifyOptions(k=args.neighbours, n_queries=args.queries, pool_size=args.pool_size, metric=args.metric,
                         n_boot=args.bootstrap, length_edges=args.length_bins, pca_fit_rows=args.pca_fit_rows,
                         seed=args.seed, batch_size=max(1, args.batch_size))
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    result = verify(args.input, encoder, source, opts, pca_matrix_path=args.pca_train, log=log)
    if args.json != "-":
        print(format_verify(result))
    if args.json:
        _emit_json(args.json, result)
    return 0


def verify_local_distances(argv: Argv = None) -> int:
    """Console entry point of ``verify_local_distances``."""
    _exit(run(_verify_local_distances, verify_local_distances_parser(), argv))


def evaluate_labels_parser() -> argparse.ArgumentParser:
    p = _parser(
        "evaluate_labels",
        "Are neighbours biologically related? For the VAE space and, side by side, PCA of the same\n"
        "dimension and raw CLR: k-NN label agreement (k = 1 and 10) per taxonomic rank, and how well a\n"
        "k-means clustering (k = number of labels at the rank) agrees with the labels (ARI, V-measure,\n"
        "purity, completeness). Labels: a TSV with a header, the ID in the first column and one column\n"
        "per rank (e.g. genome, genus, family, order, class, phylum); empty/NA = unlabelled. IDs of\n"
        "--chop pieces (ID.1, ID.2, ...) inherit the labels of ID.\n\n"
        "example: evaluate_labels -i heldout.npy -id heldout.txt -l labels.tsv --pca-train train.npy",
    )
    p.add_argument("-i", "--input", required=True, metavar="KMERS.npy", help="k-mer matrix")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="its IDs file")
    p.add_argument("-l", "--labels", required=True, metavar="LABELS.tsv", help="ID -> label columns (with a header line)")
    p.add_argument("--ranks", metavar="R1,R2", help="columns to evaluate (default: all)")
    p.add_argument("--max-rows", type=_positive_int, default=20_000, metavar="N",
                   help="evaluate a seeded sample of at most N labelled rows (k-NN and k-means are quadratic-ish); 0 = all")
    _add_encoder_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def _evaluate_labels(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_labels as evaluate, format_labels

    encoder = _encoder_for_evaluation(args.encoder, None, args.engine)
    ranks = [r.strip() for r in args.ranks.split(",") if r.strip()] if args.ranks else None
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    result = evaluate(args.input, args.ids, args.labels, encoder, ranks, args.metric, args.max_rows, args.pca_train,
                      args.pca_fit_rows, args.seed, max(1, args.batch_size), log=log)
    if args.json != "-":
        print(format_labels(result))
    if args.json:
        _emit_json(args.json, result)
    return 0


def evaluate_labels(argv: Argv = None) -> int:
    """Console entry point of ``evaluate_labels``."""
    _exit(run(_evaluate_labels, evaluate_labels_parser(), argv))

# --------------------------------------------------------------------------- exploration (issue 5)


def _stem(path: str, *suffixes: str) -> str:
    for s in suffixes:
        if path.endswith(s):
            return path[: -len(s)]
    return path


def _add_plot_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--png", metavar="PNG", help=f"{what} (default: beside the output, .png)")
    p.add_argument("--no-plot", action="store_true", help="write no figure")
    p.add_argument("--pdf", action="store_true", help="also write each figure as PDF (same name, .pdf)")


def tsne_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tsne",
        "2-D t-SNE map of an embeddings matrix (openTSNE: FFT-accelerated from 10k points, Barnes-Hut\n"
        "below; all cores): writes the coordinates (N, 2) .npy, rows aligned with the IDs, a PNG of\n"
        "the map (coloured by log10 contig length when the matrix has a length column), and the\n"
        "settings and timings as JSON.\n\n"
        "Defaults scale to millions of points: PCA initialisation, learning rate N/exaggeration,\n"
        "exaggeration rising from 1 (<=100k points) to 4 (>=1M). To save memory at millions of\n"
        "points use --affinity uniform --k-neighbors 15 (15 instead of 90 neighbours per point).\n\n"
        "example: tsne -e emb.npy -id ids.txt -o map.npy            # writes map.npy, map.png, map.json\n"
        "         tsne -e emb.npy -id ids.txt -o map.npy --max-points 200000   # + map.txt (sampled IDs)",
    )
    p.add_argument("-e", "--embeddings", required=True, metavar="EMB.npy", help="embeddings (N, 1 + latent): column 0 length, then z_mean")
    p.add_argument("-id", "--ids", metavar="IDS.txt", help="IDs of the rows (.txt or .txt.gz); checked against the row count")
    p.add_argument("-o", "--output", required=True, metavar="MAP.npy", help="output coordinates (N, 2), float32")
    p.add_argument("--no-length-column", action="store_true", help="the input is a plain (N, latent) matrix with no length column")
    p.add_argument("--perplexity", type=float, default=30.0, help="perplexity of the Gaussian affinities (uses 3x as many neighbours)")
    p.add_argument("--affinity", choices=["perplexity", "uniform"], default="perplexity",
                   help="perplexity-based affinities, or uniform weights over --k-neighbors neighbours (less memory)")
    p.add_argument("--k-neighbors", type=_positive_int, default=15, help="neighbours per point with --affinity uniform")
    p.add_argument("--neighbors", choices=["auto", "annoy", "hnsw", "exact"], default="auto",
                   help="nearest-neighbour search (auto: exact below 1000 points, else Annoy)")
    p.add_argument("--exaggeration", type=float, default=None, help="exaggeration of the main phase (default: 1 up to 100k points, rising to 4 at 1M)")
    p.add_argument("--early-exaggeration", type=float, default=12.0, help="exaggeration of the early phase")
    p.add_argument("--early-iter", type=_positive_int, default=250, help="iterations of the early-exaggeration phase")
    p.add_argument("--n-iter", type=_positive_int, default=500, help="iterations of the main phase")
    p.add_argument("--init", choices=["pca", "spectral", "random"], default="pca", help="initial layout")
    p.add_argument("--pca-dims", type=_positive_int, default=0, help="first project onto this many principal components (0 = no)")
    p.add_argument("--max-points", type=_positive_int, default=0,
                   help="map a seeded random subsample of this many rows (0 = all); writes their IDs to MAP.txt (needs -id)")
    p.add_argument("--color-by", choices=["length", "none"], default="length", help="colour of the map's points")
    _add_plot_args(p, "the map's figure")
    p.add_argument("--threads", type=_positive_int, default=0, help="threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=42, help="seed of the neighbour search, initialisation and subsample")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def _tsne(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .explore import load_embeddings, run_tsne, subsample, tsne_settings
    from .matrix import NpyStreamWriter, atomic_text, check_output_dir

    stem = _stem(args.output, ".npy")
    png = None if args.no_plot else (args.png or stem + ".png")
    ids_out = stem + ".txt" if args.max_points else None
    for path in filter(None, [args.output, png, ids_out]):
        check_output_dir(path)
    if args.max_points and not args.ids:
        raise InputError("--max-points needs -id/--ids: the sampled rows' IDs are written beside the map")
    emb = load_embeddings(args.embeddings, args.ids, length_column=not args.no_length_column)
    rows = subsample(len(emb), args.max_points, args.seed)
    z, lengths, ids = emb.z, emb.lengths, emb.ids
    if rows is not None:
        z, lengths = z[rows], (lengths[rows] if lengths is not None else None)
        ids = [ids[i] for i in rows.tolist()]
        print(f"tsne: mapping a random subsample of {rows.size:,} of {len(emb):,} rows (seed {args.seed})", file=sys.stderr)
    settings = dict(perplexity=args.perplexity, affinity=args.affinity, k_neighbors=args.k_neighbors, neighbors=args.neighbors,
                    exaggeration=args.exaggeration, early_exaggeration=args.early_exaggeration,
                    early_exaggeration_iter=args.early_iter, n_iter=args.n_iter, initialization=args.init,
                    pca_dims=args.pca_dims, threads=args.threads, seed=args.seed)
    resolved = tsne_settings(z.shape[0], **settings)
    t0 = time.perf_counter()
    coords = run_tsne(z, quiet=args.quiet, **settings)
    seconds = time.perf_counter() - t0
    del z
    written = []
    with NpyStreamWriter(args.output, 2, np.float32) as w:
        w.write(coords)
        if ids_out:
            with atomic_text(ids_out) as fh:
                fh.writelines(i + "\n" for i in ids)
            written.append(ids_out)
        if png:
            from .plots import plot_map

            color = np.log10(np.maximum(lengths, 1.0)) if (lengths is not None and args.color_by == "length") else None
            written += plot_map(coords, png, values=color, pdf=args.pdf)
        w.commit()
    info = {"input": os.path.abspath(args.embeddings), "n_input_rows": len(emb), "latent_dims": emb.z.shape[1],
            "subsampled_rows": None if rows is None else int(rows.size), "settings": resolved, "seconds": round(seconds, 1),
            "peak_rss_gb": round(_peak_rss_gb(), 2)}
    _emit_json(stem + ".json", info)
    print(f"tsne: {coords.shape[0]:,} points in {seconds:.1f} s (peak memory {info['peak_rss_gb']:.1f} GB) -> "
          f"{', '.join([args.output] + written + [stem + '.json'])}", file=sys.stderr)
    return 0


def _peak_rss_gb() -> float:
    import resource

    # ru_maxrss is in KiB on Linux (bytes on macOS).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1 << 30) if sys.platform == "darwin" else r / (1 << 20)


def tsne(argv: Argv = None) -> int:
    """Console entry point of ``tsne``."""
    _exit(run(_tsne, tsne_parser(), argv))


def cluster_parser() -> argparse.ArgumentParser:
    p = _parser(
        "cluster",
        "HDBSCAN clusters of a t-SNE map (default) or of the latent vectors (--space latent).\n"
        "Writes ID<TAB>cluster (noise = -1; clusters numbered by decreasing size), a JSON summary\n"
        "(clusters, noise fraction, sizes; also printed) and a PNG of the map coloured by cluster.\n\n"
        "Defaults scale with N: min_cluster_size = max(15, N/4800) (the original's 1000 at 4.8M\n"
        "points), min_samples = max(5, min_cluster_size/10) (its 100).\n\n"
        "example: cluster -c map.npy -id ids.txt -o clusters.tsv   # + clusters.json, clusters.png\n"
        "         cluster --space latent -e emb.npy -c map.npy -id ids.txt -o latent_clusters.tsv",
    )
    p.add_argument("-c", "--coords", metavar="MAP.npy", help="t-SNE coordinates (N, 2): clustered by default, and drawn")
    p.add_argument("-e", "--embeddings", metavar="EMB.npy", help="embeddings (N, 1 + latent), clustered with --space latent")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="IDs of the rows")
    p.add_argument("-o", "--output", required=True, metavar="CLUSTERS.tsv", help="output ID<TAB>cluster")
    p.add_argument("--space", choices=["tsne", "latent"], default="tsne", help="cluster the map or the latent vectors")
    p.add_argument("--no-length-column", action="store_true", help="the embeddings are a plain (N, latent) matrix")
    p.add_argument("--min-cluster-size", type=_positive_int, default=None, help="smallest cluster (default: scaled with N, see above)")
    p.add_argument("--min-samples", type=_positive_int, default=None, help="HDBSCAN min_samples: larger = more conservative, more noise (default: max(5, min_cluster_size/10))")
    p.add_argument("--summary", metavar="JSON", help="summary file (default: beside the output, .json)")
    _add_plot_args(p, "the map coloured by cluster (needs -c)")
    p.add_argument("--threads", type=_positive_int, default=0, help="threads for core distances (0 = all cores)")
    return p


def _cluster(args: argparse.Namespace) -> int:
    import time

    from .explore import (cluster_points, cluster_summary, default_min_cluster_size, default_min_samples,
                          format_cluster_summary, load_coords, load_embeddings, write_cluster_tsv)
    from .matrix import check_output_dir

    stem = _stem(args.output, ".tsv", ".txt")
    summary_path = args.summary or stem + ".json"
    png = None if (args.no_plot or not args.coords) else (args.png or stem + ".png")
    for path in filter(None, [args.output, summary_path, png]):
        check_output_dir(path)
    if args.space == "tsne" and not args.coords:
        raise InputError("--space tsne needs the map: -c MAP.npy (or use --space latent with -e EMB.npy)")
    if args.space == "latent" and not args.embeddings:
        raise InputError("--space latent needs the embeddings: -e EMB.npy")
    coords = ids = None
    if args.coords:
        coords, ids = load_coords(args.coords, args.ids)
    if args.space == "latent":
        emb = load_embeddings(args.embeddings, args.ids, length_column=not args.no_length_column)
        if coords is not None and coords.shape[0] != len(emb):
            raise InputError(f"{args.coords} has {coords.shape[0]:,} rows but {args.embeddings} has {len(emb):,}")
        x, ids = emb.z, emb.ids
    else:
        x = coords
    n = x.shape[0]
    mcs = args.min_cluster_size or default_min_cluster_size(n)
    ms = args.min_samples or default_min_samples(mcs)
    if args.space == "latent" and n > 200_000:
        print(f"cluster: warning: HDBSCAN in {x.shape[1]} dimensions over {n:,} points is slow; the map (--space tsne) is much faster",
              file=sys.stderr)
    print(f"cluster: HDBSCAN of {n:,} points in the {args.space} space ({x.shape[1]}-D), "
          f"min_cluster_size={mcs}, min_samples={ms} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    labels = cluster_points(x, mcs, ms, threads=args.threads)
    seconds = time.perf_counter() - t0
    summary = cluster_summary(labels)
    summary.update(space=args.space, min_cluster_size=mcs, min_samples=ms, seconds=round(seconds, 2),
                   input=os.path.abspath(args.coords if args.space == "tsne" else args.embeddings))
    written = [args.output, summary_path]
    if png:
        from .plots import plot_clusters

        written += plot_clusters(coords, labels, png, pdf=args.pdf,
                                 title=f"HDBSCAN on the {'t-SNE map' if args.space == 'tsne' else 'latent space'}: "
                                       f"{summary['n_clusters']:,} clusters, {summary['noise_fraction']:.1%} noise (N = {n:,})")
    _emit_json(summary_path, summary)
    write_cluster_tsv(args.output, ids, labels)  # last: the main output appears only when all else is done
    print(f"cluster: {format_cluster_summary(summary)} ({seconds:.1f} s) -> {', '.join(written)}", file=sys.stderr)
    return 0


def cluster(argv: Argv = None) -> int:
    """Console entry point of ``cluster``."""
    _exit(run(_cluster, cluster_parser(), argv))


def compare_groups_parser() -> argparse.ArgumentParser:
    p = _parser(
        "compare_groups",
        "Compare groups of contigs (e.g. samples) over one t-SNE map. Writes PREFIX.density.png (the\n"
        "difference of the groups' normalised 2-D densities on a diverging colour map: for two groups\n"
        "A - B, for more each group - the mean of the others), PREFIX.overlay.png (each group its own\n"
        "colour), and with --clusters the share of each group in each cluster as PREFIX.composition.csv\n"
        "and PREFIX.composition.png.\n\n"
        "Groups: --groups-tsv with ID<TAB>group lines, or repeated --prefix NAME=PREFIX (IDs starting\n"
        "with PREFIX) or --regex NAME=REGEX (IDs containing a match; anchor with ^). An ID may be in\n"
        "one group at most; IDs in no group are left out of the comparison.\n\n"
        "example: compare_groups -c map.npy -id ids.txt --prefix water=W_ --prefix sediment=S_ \\\n"
        "             --clusters clusters.tsv -o results/water_vs_sediment",
    )
    p.add_argument("-c", "--coords", required=True, metavar="MAP.npy", help="t-SNE coordinates (N, 2)")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="IDs of the map's rows")
    p.add_argument("--groups-tsv", metavar="TSV", help="ID<TAB>group lines")
    p.add_argument("--prefix", action="append", default=[], metavar="NAME=PREFIX", help="a group of the IDs starting with PREFIX (repeat)")
    p.add_argument("--regex", action="append", default=[], metavar="NAME=REGEX", help="a group of the IDs matching REGEX (repeat)")
    p.add_argument("--clusters", metavar="CLUSTERS.tsv", help="ID<TAB>cluster from `cluster`: adds the composition table and chart")
    p.add_argument("-o", "--output", required=True, metavar="PREFIX", help="output prefix (or an existing folder: FOLDER/compare.*)")
    p.add_argument("--bins", type=_positive_int, default=0, help="histogram bins per axis (0 = about 10 points per bin, 40 to 300)")
    p.add_argument("--smooth", type=float, default=1.0, help="Gaussian smoothing of the histograms, in bins (0 = none)")
    p.add_argument("--balanced", action="store_true", help="composition chart with groups weighted equally (the CSV has both)")
    p.add_argument("--pdf", action="store_true", help="also write each figure as PDF")
    return p


def _compare_groups(args: argparse.Namespace) -> int:
    from .explore import (assign_groups, composition_table, density_differences, group_counts, group_densities,
                          load_coords, parse_named, read_cluster_tsv, read_group_table)
    from .matrix import check_output_dir
    from .plots import plot_composition, plot_density_difference, plot_overlay

    prefix = os.path.join(args.output, "compare") if os.path.isdir(args.output) else args.output
    check_output_dir(prefix + ".density.png")
    if args.groups_tsv and (args.prefix or args.regex):
        raise InputError("give groups either with --groups-tsv or with --prefix/--regex, not both")
    coords, ids = load_coords(args.coords, args.ids)
    if args.groups_tsv:
        group_idx, names = assign_groups(ids, table=read_group_table(args.groups_tsv))
    else:
        group_idx, names = assign_groups(ids, prefixes=parse_named(args.prefix, "prefix"), regexes=parse_named(args.regex, "regex"))
    if len(names) < 2:
        raise InputError(f"comparing needs at least two groups, got {len(names)} ({', '.join(names)})")
    counts = group_counts(group_idx, names)
    n_grouped = int(sum(counts.values()))
    print(f"compare_groups: {len(names)} groups over {len(ids):,} points: "
          + ", ".join(f"{g} {c:,}" for g, c in counts.items())
          + (f"; {len(ids) - n_grouped:,} in no group (left out)" if n_grouped < len(ids) else ""), file=sys.stderr)
    labels = read_cluster_tsv(args.clusters, ids) if args.clusters else None
    dens, extent = group_densities(coords, group_idx, len(names), bins=args.bins or None, smooth=args.smooth)
    written = plot_density_difference(density_differences(dens, names), extent, prefix + ".density.png",
                                      n_points=n_grouped, pdf=args.pdf)
    written += plot_overlay(coords, group_idx, names, prefix + ".overlay.png", pdf=args.pdf)
    if labels is not None:
        unknown = int(((labels == -2) & (group_idx >= 0)).sum())
        if unknown:
            print(f"compare_groups: warning: {unknown:,} grouped IDs are not in {args.clusters} and are left out of the composition",
                  file=sys.stderr)
        comp = composition_table(labels, group_idx, names)
        written += plot_composition(comp, prefix + ".composition.png", balanced=args.balanced, pdf=args.pdf)
        comp.write_csv(prefix + ".composition.csv")
        written.append(prefix + ".composition.csv")
    print(f"compare_groups: wrote {', '.join(written)}", file=sys.stderr)
    return 0


def compare_groups(argv: Argv = None) -> int:
    """Console entry point of ``compare_groups``."""
    _exit(run(_compare_groups, compare_groups_parser(), argv))


def query_neighbors_parser() -> argparse.ArgumentParser:
    p = _parser(
        "query_neighbors",
        "The k nearest contigs of given contigs (by ID) or of new sequences (FASTA, embedded with an\n"
        "encoder), from an index built once over an embeddings matrix. Exact NumPy search below 50,000\n"
        "vectors, an HNSW graph (hnswlib) above. The index is a folder (meta.json, ids.txt, vectors or\n"
        "HNSW graph; no pickle). Output: TSV query_id, rank, neighbor_id, distance (nearest first; a\n"
        "contig queried by ID is not its own neighbour).\n\n"
        "example: query_neighbors --build-index emb_index -e emb.npy -id ids.txt\n"
        "         query_neighbors --index emb_index --ids contig_7 contig_42 -k 20 > nn.tsv\n"
        "         query_neighbors --index emb_index --fasta new.fa -m Models/run1/encoder.keras -o nn.tsv",
    )
    g = p.add_argument_group("index (one of)")
    g.add_argument("--build-index", metavar="DIR", help="build an index over -e/-id, save it to DIR (then answer any queries)")
    g.add_argument("--index", metavar="DIR", help="load a saved index")
    b = p.add_argument_group("building")
    b.add_argument("-e", "--embeddings", metavar="EMB.npy", help="embeddings (N, 1 + latent) to index")
    b.add_argument("-id", "--ids-of-rows", dest="row_ids", metavar="IDS.txt", help="IDs of the embeddings' rows")
    b.add_argument("--no-length-column", action="store_true", help="the matrices (-e, --vectors) are plain (N, latent)")
    b.add_argument("--metric", choices=["euclidean", "cosine"], default=None, help="distance, fixed when the index is built (euclidean if not given)")
    b.add_argument("--method", choices=["auto", "exact", "hnsw"], default=None, help="search method (auto if not given: exact below 50,000 rows, else hnsw)")
    b.add_argument("--M", type=_positive_int, default=16, dest="hnsw_m", help="HNSW links per node (more = better recall, more memory)")
    b.add_argument("--ef-construction", type=_positive_int, default=200, help="HNSW build-time search breadth")
    q = p.add_argument_group("queries (any of)")
    q.add_argument("--ids", nargs="+", default=[], metavar="ID", help="IDs of indexed contigs")
    q.add_argument("--ids-file", metavar="TXT", help="a file of IDs, one per line")
    q.add_argument("--vectors", metavar="Q.npy", help="query embeddings (same layout as -e), e.g. from `embedding`")
    q.add_argument("--vectors-ids", metavar="Q.txt", help="IDs of --vectors' rows (default: row numbers)")
    q.add_argument("--fasta", metavar="FASTA", help="new sequences: k-mers counted and embedded with -m")
    q.add_argument("-m", "--model", metavar="ENCODER",
                   help="the encoder for --fasta, .keras or portable .json (Models/default if not given); use the one that made the indexed embeddings")
    q.add_argument("--engine", choices=["auto", "keras", "numpy"], default="auto", help="inference engine for --fasta")
    p.add_argument("-k", type=_positive_int, default=10, help="neighbours per query")
    p.add_argument("--ef", type=_positive_int, default=100, help="HNSW query-time search breadth (>= k; more = better recall, slower)")
    p.add_argument("-o", "--output", metavar="TSV", help="output file (default: stdout)")
    p.add_argument("--threads", type=_positive_int, default=0, help="threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=42, help="seed of the HNSW graph")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _query_neighbors(args: argparse.Namespace) -> int:
    from .matrix import atomic_text, check_output_dir, read_ids
    from .neighbors import NeighborIndex, embed_fasta, write_neighbors_tsv

    if bool(args.build_index) == bool(args.index):
        raise InputError("give exactly one of --build-index DIR (with -e, -id) and --index DIR")
    has_query = bool(args.ids or args.ids_file or args.vectors or args.fasta)
    if args.index and not has_query:
        raise InputError("nothing to query: give --ids, --ids-file, --vectors or --fasta")
    if args.output:
        check_output_dir(args.output)
    if args.k < 1:
        raise InputError("-k must be >= 1")
    if args.index and (args.embeddings or args.row_ids):
        raise InputError("-e/-id build an index: use them with --build-index, not --index")

    if args.build_index:
        from .explore import load_embeddings
        from .progress import rows_bar

        if not args.embeddings or not args.row_ids:
            raise InputError("--build-index needs the embeddings and their IDs: -e EMB.npy -id IDS.txt")
        check_output_dir(args.build_index)
        emb = load_embeddings(args.embeddings, args.row_ids, length_column=not args.no_length_column)
        with rows_bar(len(emb), desc="indexing", disable=args.quiet) as update:
            index = NeighborIndex.build(emb.z, emb.ids, metric=args.metric or "euclidean", method=args.method or "auto", M=args.hnsw_m,
                                        ef_construction=args.ef_construction, ef_search=args.ef, threads=args.threads,
                                        seed=args.seed, source=args.embeddings, progress=update)
        index.params["length_column"] = not args.no_length_column
        index.save(args.build_index)
        print(f"query_neighbors: indexed {len(index):,} vectors of {index.dim} dimensions ({index.method}, {index.metric}) "
              f"-> {args.build_index}", file=sys.stderr)
        if not has_query:
            return 0
    else:
        index = NeighborIndex.load(args.index)
        for opt, want, have in (("--metric", args.metric, index.metric), ("--method", args.method, index.method)):
            if want and want not in (have, "auto"):
                raise InputError(f"{opt} {want}: the index {args.index} was built with {have}; rebuild it with --build-index {opt} {want}")
    index.params["ef_search"] = args.ef

    query_ids: list[str] = []
    rows_nb, rows_d = [], []
    by_id = list(args.ids) + (read_ids(args.ids_file) if args.ids_file else [])
    by_id = [i for i in (s.strip() for s in by_id) if i]
    if args.ids_file and not by_id and not (args.vectors or args.fasta):
        raise InputError(f"{args.ids_file}: no IDs in it")
    if by_id:
        nb, d = index.query_rows(index.rows_of(by_id), args.k, args.threads)
        query_ids += by_id
        rows_nb.append(nb)
        rows_d.append(d)
    if args.vectors:
        from .explore import load_embeddings

        q = load_embeddings(args.vectors, args.vectors_ids, length_column=not args.no_length_column)
        if q.z.shape[1] != index.dim:
            raise InputError(f"{args.vectors}: vectors of {q.z.shape[1]} dimensions but the index has {index.dim}"
                             + (" (is --no-length-column right?)" if abs(q.z.shape[1] - index.dim) == 1 else ""))
        nb, d = index.query(q.z, args.k, args.threads)
        query_ids += q.ids or [f"row{i}" for i in range(len(q))]
        rows_nb.append(nb)
        rows_d.append(d)
    if args.fasta:
        fids, z = embed_fasta(args.fasta, args.model, args.engine)
        if z.shape[1] != index.dim:
            raise InputError(f"the encoder {args.model} makes {z.shape[1]}-D vectors but the index has {index.dim}: "
                             "use the encoder that made the indexed embeddings")
        nb, d = index.query(z, args.k, args.threads)
        query_ids += fids
        rows_nb.append(nb)
        rows_d.append(d)
    # Blocks may have different widths when k exceeds what an ID query can return: pad nothing, write row by row.
    nbs = [r for block in rows_nb for r in block]
    ds = [r for block in rows_d for r in block]
    if args.output:
        with atomic_text(args.output) as fh:
            lines = write_neighbors_tsv(fh, query_ids, nbs, ds, index.ids)
    else:
        lines = write_neighbors_tsv(sys.stdout, query_ids, nbs, ds, index.ids)
        sys.stdout.flush()
    print(f"query_neighbors: {len(query_ids):,} queries, {lines:,} neighbours ({index.method}, {index.metric})"
          + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def query_neighbors(argv: Argv = None) -> int:
    """Console entry point of ``query_neighbors``."""
    _exit(run(_query_neighbors, query_neighbors_parser(), argv))


# --------------------------------------------------------------------------- the demo (issue 5)


def demo_parser() -> argparse.ArgumentParser:
    p = _parser(
        "demo",
        "The whole pipeline on a small mock metagenome, in a few minutes on a laptop CPU: two samples\n"
        "(water, sediment) of contigs from known genomes (the real ones in ../shared/data when present,\n"
        "simulated ones otherwise) are counted, concatenated and shuffled, a small VAE is trained, the\n"
        "contigs embedded, verified against PCA and CLR baselines, mapped with t-SNE, clustered, and the\n"
        "samples compared. Everything lands in one folder with an index.html report.\n\n"
        "example: demo -o demo_out",
    )
    p.add_argument("-o", "--output", default="demo_out", metavar="DIR", help="output folder (created)")
    p.add_argument("--quick", action="store_true", help="a reduced version (what CI runs end to end)")
    p.add_argument("--simulated", action="store_true", help="use simulated genomes even when the real ones are present")
    p.add_argument("--seed", type=int, default=42, help="seed of every step")
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings.seed = args.seed
    if args.simulated:
        settings.use_real = False
    out_parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_parent):
        raise InputError(f"output folder {out_parent} does not exist")
    report = run_demo(args.output, settings)
    print(report)
    return 0


def demo(argv: Argv = None) -> int:
    """Console entry point of ``demo``."""
    _exit(run(_demo, demo_parser(), argv))
