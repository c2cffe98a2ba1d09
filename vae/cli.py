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

from . import encoder
from .errors import InputError
from .options import add_options, from_namespace
from .runtime import quiet_stderr

Argv = Sequence[str] | None


def run(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser, argv: Argv) -> int:
    """Parse ``argv``, run ``main`` and map failures to one clear line and an exit status."""
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        # --quiet: nothing but the error line below on stderr (progress, summaries and warnings are dropped).
        with quiet_stderr(bool(getattr(args, "quiet", False))):
            return int(main(args) or 0)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # A command that kept something (train_vae's last epoch) says what in the exception; it has already said it
        # on stderr unless --quiet silenced that, and --quiet still reports the outcome of an interruption.
        if not e.args:
            print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        elif getattr(args, "quiet", False):
            print(e.args[0], file=sys.stderr)
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


def _command(options_cls, run_fn) -> Callable[[argparse.Namespace], int]:
    """The pattern every command follows: parsed argv -> the options dataclass (its validation) -> the owning module's run."""
    def main(args: argparse.Namespace) -> int:
        result = run_fn(from_namespace(options_cls, args))
        return result if isinstance(result, int) and not isinstance(result, bool) else 0

    return main


def _exit(code: int) -> None:
    raise SystemExit(code)


def _together(main: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int | None]:
    """``main`` with all its file outputs renamed into place together at its end, none on failure (issue 10)."""

    def wrapped(args: argparse.Namespace) -> int | None:
        from .matrix import commit_together

        with commit_together():
            return main(args)

    return wrapped


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; shows defaults only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS \
                or isinstance(action, argparse._StoreFalseAction):  # --no-x switches: "(default: True)" reads wrong
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
        "break k-mers. Plain or gzipped FASTA; '-' reads stdin. A record with fewer than 50% A/C/G/T/N\n"
        "letters (protein, text) is refused, as are CR-only line endings; records with no A/C/G/T base\n"
        "become zero rows and are counted in the summary.\n\n"
        "example: calculate_kmer_frequencies -i a.fa.gz b.fa -id ids.txt -k kmers.npy --chop 10000",
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="FASTA", help="FASTA files (plain or .gz), counted in order; '-' for stdin")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="output IDs file, one per row")
    p.add_argument("-k", "--kmers", required=True, metavar="KMERS.npy", help="output matrix")
    p.add_argument("--min-length", type=_positive_int, default=0, metavar="N", help="skip sequences shorter than N characters")
    p.add_argument("--chop", default="0", metavar="L|MIN:MAX",
                   help="L: cut each sequence of length >= L into floor(len/L) equal pieces (IDs id.1, id.2, ...); "
                        "MIN:MAX: into consecutive pieces of random log-uniform lengths in [MIN, MAX] (--seed), "
                        "the end that a length would leave shorter than MIN joining the last piece; sequences shorter "
                        "than L or MIN are kept whole (0 = no chopping)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of --chop MIN:MAX (each record's pieces depend only on it and the record's ID)")
    p.add_argument("--keep-full", action="store_true", help="with --chop, also keep the whole sequence")
    p.add_argument("--threads", type=_positive_int, default=0, help="worker threads (0 = all cores)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="matrix dtype (float16 halves the size; lengths saturate at 65504)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _calculate_kmer_frequencies(args: argparse.Namespace) -> int:
    from .count import CountOptions, count_files, parse_chop
    from .paths import check_paths
    from .progress import counting_bar

    check_paths(args.input, [args.ids, args.kmers])
    chop, chop_max = parse_chop(args.chop)
    _warn_large_output(args.input, chop, args.dtype)
    opts = CountOptions(min_length=args.min_length, chop=chop, chop_max=chop_max, seed=args.seed,
                        keep_full=args.keep_full, threads=args.threads, dtype=args.dtype)
    with counting_bar(disable=args.quiet) as update:
        stats = count_files(args.input, args.ids, args.kmers, opts, progress=update)
    print(f"calculate_kmer_frequencies: {stats.summary()} -> {args.kmers}", file=sys.stderr)
    return 0


def _warn_large_output(inputs: Sequence[str], chop: int, dtype: str) -> None:
    """With --chop, say before counting how large the matrix will be when that is more than 1 GB (an estimate)."""
    if not chop:
        return
    size = sum(os.path.getsize(p) * (3.5 if p.endswith(".gz") else 1.0) for p in inputs if p != "-" and os.path.isfile(p))
    rows = size / max(chop, 1)
    gb = rows * 2773 * (2 if dtype == "float16" else 4) / 1e9
    if gb > 1:
        print(f"calculate_kmer_frequencies: --chop {chop} makes about {rows:,.0f} rows: a matrix of about {gb:,.1f} GB",
              file=sys.stderr)


def calculate_kmer_frequencies(argv: Argv = None) -> int:
    """Console entry point of ``calculate_kmer_frequencies``."""
    _exit(run(_together(_calculate_kmer_frequencies), calculate_kmer_frequencies_parser(), argv))


def concatenate_matrices_parser() -> argparse.ArgumentParser:
    p = _parser(
        "concatenate_matrices",
        "Concatenate k-mer matrices and their ID files into NAME.npy and NAME.txt, keeping every\n"
        "(ID, row) pair together; --shuffle permutes rows out of core (two sequential passes, ~256 MB of rows in RAM).\n\n"
        "example: concatenate_matrices -i a.npy b.npy -id a.txt b.txt -o train --shuffle",
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="NPY", help="input matrices")
    p.add_argument("-id", "--ids", nargs="+", required=True, metavar="TXT", help="their ID files (.txt or .txt.gz), same order")
    p.add_argument("-o", "--output", required=True, metavar="NAME", help="output prefix: writes NAME.npy and NAME.txt")
    p.add_argument("--shuffle", action="store_true", help="shuffle rows (IDs move with them)")
    p.add_argument("--seed", type=int, default=42, help="seed of the shuffle")
    p.add_argument("--any-width", action="store_true",
                   help="accept matrices of any width shared by all inputs (e.g. embeddings); default: k-mer matrices "
                        "of 2773 columns only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _concatenate_matrices(args: argparse.Namespace) -> int:
    from .kmers import N_COLUMNS
    from .matrix import concatenate, open_matrix
    from .progress import rows_bar

    prefix = args.output[:-4] if args.output.endswith(".npy") else args.output
    from .paths import check_paths

    check_paths(args.input + args.ids, [prefix + ".npy", prefix + ".txt"])
    total = sum(open_matrix(p, n_cols=None).shape[0] for p in args.input) if len(args.input) == len(args.ids) else 0
    with rows_bar(total, disable=args.quiet) as update:
        n, n_dup = concatenate(args.input, args.ids, prefix, shuffle=args.shuffle, seed=args.seed, progress=update,
                               n_cols=None if args.any_width else N_COLUMNS)
    print(f"concatenate_matrices: {n:,} rows from {len(args.input)} matrices"
          f"{' (shuffled, seed ' + str(args.seed) + ')' if args.shuffle else ''} -> {prefix}.npy, {prefix}.txt", file=sys.stderr)
    return 0


def concatenate_matrices(argv: Argv = None) -> int:
    """Console entry point of ``concatenate_matrices``."""
    _exit(run(_together(_concatenate_matrices), concatenate_matrices_parser(), argv))


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
    p.add_argument("--devices", type=int, default=D.devices, metavar="N",
                   help="data-parallel training on N GPUs (tf.distribute.MirroredStrategy: each global batch of "
                        "--batch-size rows split across them); 0 = all visible GPUs")
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
    p.add_argument("--bn-momentum", type=float, default=D.bn_momentum, metavar="M",
                   help="BatchNorm momentum (0 = 1 - 2/steps per epoch within [0.5, 0.99], so that validation, which "
                        "uses the moving statistics, tracks training on small runs; Keras' default is 0.99)")
    p.add_argument("--group-weights", default=D.group_weights, metavar="K=W[,K=W...]",
                   help="weights of each k-mer group's squared errors in the reconstruction loss, e.g. 6=0.2 "
                        "(unnamed groups: 1; all 1 = the plain sum of squared errors)")
    return p


def _train_vae(args: argparse.Namespace) -> int:
    import time

    from .train import TrainOptions, train

    run_dir = args.output
    if run_dir is None:
        if args.resume:
            raise InputError("--resume needs the run folder: -o RUN_DIR")
        run_dir = os.path.join("Models", time.strftime("vae-%Y%m%d-%H%M%S"))
    from .paths import check_paths

    check_paths([args.input], [], folders=[run_dir])
    opts = TrainOptions(
        input=args.input, run_dir=run_dir, latent=args.latent, hidden=tuple(args.hidden), beta=args.beta,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction, max_samples=args.max_samples, seed=args.seed, dropout=args.dropout,
        patience=args.patience, lr_factor=args.lr_factor, min_lr=args.min_lr, early_stopping=args.early_stopping,
        resume=args.resume, mixed_precision=args.mixed_precision, steps_per_epoch=args.steps_per_epoch,
        workers=args.workers, quiet=args.quiet, devices=args.devices, kmers=args.kmers,
        denoise=args.denoise, denoise_fraction=args.denoise_fraction, bn_momentum=args.bn_momentum,
        group_weights=args.group_weights,
    )
    try:
        train(opts)  # TrainingInterrupted (Ctrl-C) says where the last completed epoch is: run() reports it
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        # Not "no output was written": the run folder keeps its last completed epoch.
        print(f"train_vae: error: disk full while writing{' ' + str(e.filename) if e.filename else ''}; "
              f"{_resume_note(run_dir)}", file=sys.stderr)
        return 1
    return 0


def _resume_note(run_dir: str) -> str:
    """What a run folder holds for --resume, for messages after a failure."""
    import json

    try:
        with open(os.path.join(run_dir, "resume", "state.json"), encoding="utf-8") as fh:
            epoch = int(json.load(fh)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no epoch was completed"
    return f"{run_dir}/resume holds epoch {epoch}: free some space, then continue with train_vae -o {run_dir} --resume"


def train_vae(argv: Argv = None) -> int:
    """Console entry point of ``train_vae``."""
    _exit(run(_train_vae, train_vae_parser(), argv))


# --------------------------------------------------------------------------- inference and evaluation (issue 4)


def embedding_parser() -> argparse.ArgumentParser:
    p = _parser(
        "embedding",
        "Embed contigs: k-mer matrix (or FASTA) -> (N, 1 + latent) float32 .npy, column 0 the contig\n"
        "length, then z_mean of the encoder (never a sample: the same command on the same input gives the\n"
        "same output bit for bit; other batch sizes or engines agree to within ~5e-6).\n"
        "Reads a .npy from stdin and writes one to stdout unless -i/-o are given; FASTA input is\n"
        "counted on the fly and its IDs written beside the output. Streams in batches: inputs\n"
        "larger than RAM work.\n\n"
        "examples:\n"
        "  embedding -m encoder.keras < kmers.npy > emb.npy\n"
        "  embedding -i contigs.fa.gz -o emb.npy            # default model; IDs -> emb.txt\n"
        "  embedding -i kmers.npy -o emb.npy --engine numpy  # no TensorFlow needed\n"
        "  embedding -i s1.fa.gz s2.npy -o embeddings/       # one encoder load; embeddings/s1.npy + .txt, ...",
    )
    p.add_argument("-m", "--model", metavar="ENCODER",
                   help="encoder .keras, or a portable export (.json/.npz from export_encoder); "
                        "default: the shipped model (Models/default/)")
    p.add_argument("-i", "--input", nargs="+", metavar="FILE",
                   help="k-mer matrix .npy, or FASTA files (plain or .gz; detected by name or content); default: .npy on stdin")
    p.add_argument("-o", "--output", metavar="EMB.npy",
                   help="output .npy (written atomically); default: stdout. A folder (ending in / or existing): "
                        "each input gets FOLDER/<name>.npy + <name>.txt (a matrix's IDs copied from the .txt beside it)")
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
    if args.output and (args.output.endswith(("/", os.sep)) or os.path.isdir(args.output)):
        return _embedding_to_dir(args)
    kinds = [sniff_input(p) for p in args.input] if args.input else ["npy"]
    if "npy" in kinds and len(kinds) > 1:
        raise InputError("give one .npy matrix, or one or more FASTA files (concatenate matrices with concatenate_matrices)")
    fasta = kinds[0] == "fasta"
    ids_out = args.ids_out or (default_ids_path(args.output) if fasta and args.output else None)
    if fasta and ids_out is None:
        raise InputError("FASTA input written to stdout needs --ids-out IDS.txt (where the contig IDs go)")
    from .paths import check_paths, encoder_files

    check_paths((args.input or []) + encoder_files(args.model), [args.output, ids_out])
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


def _embedding_to_dir(args: argparse.Namespace) -> int:
    """``-o DIR/``: every input to DIR/<name>.npy + .txt with one encoder load."""
    import time

    from .count import CountOptions
    from .embed import EmbedManyOptions, embed_many, load_encoder, plan_many
    from .progress import counting_bar, rows_bar

    if not args.input:
        raise InputError("-o FOLDER/ needs input files (-i A B ...): stdin has no name to write under")
    if args.ids_out:
        raise InputError("--ids-out is for a single output; with -o FOLDER/ the IDs go to FOLDER/<name>.txt")
    opts = EmbedManyOptions(args.input, args.output, args.batch_size,
                            CountOptions(min_length=args.min_length, chop=args.chop, threads=args.threads))
    if not os.path.isdir(args.output) and os.path.exists(args.output.rstrip("/" + os.sep)):
        raise InputError(f"{args.output}: exists and is not a folder")
    kinds = [k for _, k, _, _ in plan_many(opts)]  # checks names and matrices before the encoder loads
    if "fasta" not in kinds and (args.chop or args.min_length):
        raise InputError("--chop and --min-length are for FASTA input; a matrix keeps its rows")
    encoder = load_encoder(args.model, args.engine)
    t0 = time.perf_counter()
    with rows_bar(None, desc="embedding", disable=args.quiet) as update, counting_bar(disable=args.quiet) as cupdate:
        done = embed_many(encoder, opts, progress=update, count_progress=cupdate)
    dt = time.perf_counter() - t0
    n = sum(r for _, r, _ in done)
    for out, rows, note in done:
        print(f"embedding: {rows:,} rows -> {out}; {note}", file=sys.stderr)
    print(f"embedding: {len(done)} inputs, {n:,} rows, one encoder load ({encoder.source}; "
          f"{n / dt if dt > 0 else 0:,.0f} rows/s)", file=sys.stderr)
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
    _exit(run(_together(_embedding), embedding_parser(), argv))


def export_encoder_parser() -> argparse.ArgumentParser:
    p = _parser(
        "export_encoder",
        "Export a .keras encoder to the portable NumPy format: NAME.npz (weights) + NAME.json (layers),\n"
        "BatchNorm folded into the Dense layers, z_mean branch only. `embedding --engine numpy` runs it\n"
        "without TensorFlow. The export is checked against Keras on random input (max |difference|).\n\n"
        "example: export_encoder -m Models/run1/encoder.keras      # -> Models/run1/encoder.npz + .json",
    )
    return add_options(p, encoder.ExportOptions)


def export_encoder(argv: Argv = None) -> int:
    """Console entry point of ``export_encoder``."""
    _exit(run(_together(_command(encoder.ExportOptions, encoder.run)), export_encoder_parser(), argv))


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
                   help="encoder .keras or portable export (.json); default: RUN_DIR/encoder.keras with --run-dir, else the shipped model")
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
    from .paths import check_paths, encoder_files

    check_paths([args.input, args.ids, args.val_ids, args.pca_train] + encoder_files(args.encoder), [args.json])
    n_rows = open_matrix(args.input).shape[0]
    ids = read_ids(args.ids) if args.ids else None
    if ids is not None and len(ids) != n_rows:
        raise InputError(f"{args.input} has {n_rows:,} rows but {args.ids} has {len(ids):,} IDs")
    if args.run_dir and args.val_ids:
        raise InputError("give --run-dir or --val-ids, not both")
    source = split_rows(n_rows, args.run_dir, args.val_ids, ids, args.query_fraction, args.seed)
    if args.run_dir:
        _check_run_input(args.run_dir, args.input)
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


def _check_run_input(run_dir: str, matrix: str) -> None:
    """The matrix must be the one the run was trained on (its recorded fingerprint), or held-out rows are not held out."""
    import json

    from .matrix import check_fingerprint

    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as fh:
            recorded = json.load(fh).get("input", {}).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the split check above is all there is (older or foreign run folder)
    check_fingerprint(matrix, recorded, f"the run {run_dir}")


def verify_local_distances(argv: Argv = None) -> int:
    """Console entry point of ``verify_local_distances``."""
    _exit(run(_together(_verify_local_distances), verify_local_distances_parser(), argv))


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
    from .paths import check_paths, encoder_files

    check_paths([args.input, args.ids, args.labels, args.pca_train] + encoder_files(args.encoder), [args.json])
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
    _exit(run(_together(_evaluate_labels), evaluate_labels_parser(), argv))

# --------------------------------------------------------------------------- exploration (issue 5)


def tsne_parser() -> argparse.ArgumentParser:
    from .tsne import TsneOptions

    return add_options(_parser(
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
    ), TsneOptions)


def tsne(argv: Argv = None) -> int:
    """Console entry point of ``tsne``."""
    from . import tsne as ts

    _exit(run(_together(_command(ts.TsneOptions, ts.run)), tsne_parser(), argv))


def cluster_parser() -> argparse.ArgumentParser:
    from .cluster import ClusterOptions

    return add_options(_parser(
        "cluster",
        "Clusters of contigs: Leiden on the k-nearest-neighbour graph of the latent vectors (--method\n"
        "leiden, what binners do now), or HDBSCAN (default) on a t-SNE map or on the latent vectors.\n"
        "-c is what is clustered: an embeddings matrix (N, 1 + latent; the length column is dropped) or\n"
        "a map (N, 2). Writes ID<TAB>cluster (noise = -1; clusters numbered by decreasing size; with\n"
        "several resolutions a header and one column each), a JSON summary, a PNG of the map coloured\n"
        "by cluster (the map itself, or --map), and with --labels the ARI, NMI, purity and completeness\n"
        "of each clustering against each label column (printed and in the summary). With --fasta and\n"
        "--bins-dir: one FASTA per cluster (records copied byte for byte) and DIR/contig_bins.tsv.\n\n"
        "Leiden: exact neighbours below 50,000 points, HNSW above; edges weighted by shared neighbours\n"
        "(snn) or distance; higher --resolution = more, smaller clusters. HDBSCAN defaults scale with N:\n"
        "min_cluster_size = max(15, N/4800), min_samples = max(5, min_cluster_size/10).\n\n"
        "example: cluster --method leiden -c emb.npy -id emb.txt --resolution 0.5 1 2 --map map.npy \\\n"
        "             --labels taxonomy.tsv --fasta contigs.fa.gz --bins-dir bins -o leiden.tsv\n"
        "         cluster -c map.npy -id ids.txt -o clusters.tsv   # HDBSCAN on the map; + .json, .png",
    ), ClusterOptions)


def cluster(argv: Argv = None) -> int:
    """Console entry point of ``cluster``."""
    from . import cluster as cl

    _exit(run(_together(_command(cl.ClusterOptions, cl.run)), cluster_parser(), argv))


def compare_groups_parser() -> argparse.ArgumentParser:
    from .compare import CompareOptions

    return add_options(_parser(
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
    ), CompareOptions)


def compare_groups(argv: Argv = None) -> int:
    """Console entry point of ``compare_groups``."""
    from . import compare

    _exit(run(_together(_command(compare.CompareOptions, compare.run)), compare_groups_parser(), argv))


def query_neighbors_parser() -> argparse.ArgumentParser:
    from .neighbors import QueryOptions

    return add_options(_parser(
        "query_neighbors",
        "The k nearest contigs of given contigs (by ID) or of new sequences (FASTA, embedded with an\n"
        "encoder), from an index built once over an embeddings matrix. Exact NumPy search below 50,000\n"
        "vectors, an HNSW graph (hnswlib) above. The index is a folder (meta.json, ids.txt, vectors or\n"
        "HNSW graph; no pickle). Output: TSV query_id, rank, neighbor_id, distance (nearest first; a\n"
        "contig queried by ID is not its own neighbour).\n\n"
        "example: query_neighbors --build-index emb_index -e emb.npy -id ids.txt\n"
        "         query_neighbors --index emb_index --ids contig_7 contig_42 -k 20 > nn.tsv\n"
        "         query_neighbors --index emb_index --fasta new.fa -m Models/run1/encoder.keras -o nn.tsv",
    ), QueryOptions)


def query_neighbors(argv: Argv = None) -> int:
    """Console entry point of ``query_neighbors``."""
    from . import neighbors

    _exit(run(_command(neighbors.QueryOptions, neighbors.run), query_neighbors_parser(), argv))


def demo_parser() -> argparse.ArgumentParser:
    from .demo import DemoOptions

    return add_options(_parser(
        "demo",
        "The whole pipeline on a small mock metagenome, in a few minutes on a laptop CPU: two samples\n"
        "(water, sediment) of contigs from known genomes (the real ones in ../shared/data when present,\n"
        "simulated ones otherwise) are counted, concatenated and shuffled, a small VAE is trained, the\n"
        "contigs embedded, verified against PCA and CLR baselines, mapped with t-SNE, clustered, and the\n"
        "samples compared. Everything lands in one folder with an index.html report.\n\n"
        "example: demo -o demo_out",
    ), DemoOptions)


def demo(argv: Argv = None) -> int:
    """Console entry point of ``demo``."""
    from . import demo as dm

    _exit(run(_command(dm.DemoOptions, dm.run), demo_parser(), argv))
