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
    pass


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

# --------------------------------------------------------------------------- inference and evaluation (issue 4)

# --------------------------------------------------------------------------- exploration (issue 5)
