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
        if action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=_Formatter)


# --------------------------------------------------------------------------- counting (issue 2)


def calculate_kmer_frequencies_parser() -> argparse.ArgumentParser:
    from .count import CountOptions

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
    return add_options(p, CountOptions)


def calculate_kmer_frequencies(argv: Argv = None) -> int:
    """Console entry point of ``calculate_kmer_frequencies``."""
    from . import count

    _exit(run(_together(_command(count.CountOptions, count.run)), calculate_kmer_frequencies_parser(), argv))


def concatenate_matrices_parser() -> argparse.ArgumentParser:
    from .matrix import ConcatOptions

    p = _parser(
        "concatenate_matrices",
        "Concatenate k-mer matrices and their ID files into NAME.npy and NAME.txt, keeping every\n"
        "(ID, row) pair together; --shuffle permutes rows out of core (two sequential passes, ~256 MB of rows in RAM).\n\n"
        "example: concatenate_matrices -i a.npy b.npy -id a.txt b.txt -o train --shuffle",
    )
    return add_options(p, ConcatOptions)


def concatenate_matrices(argv: Argv = None) -> int:
    """Console entry point of ``concatenate_matrices``."""
    from . import matrix

    _exit(run(_together(_command(matrix.ConcatOptions, matrix.run)), concatenate_matrices_parser(), argv))


# --------------------------------------------------------------------------- training (issue 3)


def train_vae_parser() -> argparse.ArgumentParser:
    from .train import TrainOptions  # light: Keras is imported only when training starts

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
    return add_options(p, TrainOptions)


def train_vae(argv: Argv = None) -> int:
    """Console entry point of ``train_vae``."""
    from . import train

    # TrainingInterrupted (Ctrl-C) says where the last completed epoch is: run() reports it (status 130).
    _exit(run(_command(train.TrainOptions, train.run), train_vae_parser(), argv))


# --------------------------------------------------------------------------- inference and evaluation (issue 4)


def embedding_parser() -> argparse.ArgumentParser:
    from .embed import EmbedOptions

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
    return add_options(p, EmbedOptions)


def embedding(argv: Argv = None) -> int:
    """Console entry point of ``embedding``."""
    from . import embed

    _exit(run(_together(_command(embed.EmbedOptions, embed.run)), embedding_parser(), argv))


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


def _emit_json(path: str, result: dict) -> None:
    """The result as JSON to a file (atomically) or to stdout ('-') (tsne's; the evaluation commands own theirs)."""
    from .evaluate import emit_json

    emit_json(path, result)


def verify_local_distances_parser() -> argparse.ArgumentParser:
    from . import evaluate

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
    return add_options(p, evaluate.VerifyCommand)


def verify_local_distances(argv: Argv = None) -> int:
    """Console entry point of ``verify_local_distances``."""
    from . import evaluate

    _exit(run(_together(_command(evaluate.VerifyCommand, evaluate.run_verify)), verify_local_distances_parser(), argv))


def evaluate_labels_parser() -> argparse.ArgumentParser:
    from . import evaluate

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
    return add_options(p, evaluate.LabelsCommand)


def evaluate_labels(argv: Argv = None) -> int:
    """Console entry point of ``evaluate_labels``."""
    from . import evaluate

    _exit(run(_together(_command(evaluate.LabelsCommand, evaluate.run_labels)), evaluate_labels_parser(), argv))


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
    from .paths import check_paths

    check_paths([args.embeddings, args.ids], [args.output, png, png and args.pdf and os.path.splitext(png)[0] + ".pdf",
                                              ids_out, stem + ".json"])
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
    if args.affinity == "perplexity" and resolved["perplexity"] < args.perplexity:
        print(f"tsne: warning: perplexity {args.perplexity:g} needs more than {z.shape[0]:,} points; "
              f"using {resolved['perplexity']:.3g} (the most {z.shape[0]:,} points allow)", file=sys.stderr)
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
    _exit(run(_together(_tsne), tsne_parser(), argv))


def cluster_parser() -> argparse.ArgumentParser:
    p = _parser(
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
    )
    p.add_argument("-c", "--coords", dest="input", metavar="EMB.npy|MAP.npy",
                   help="what to cluster: embeddings (N, 1 + latent) or a t-SNE map (N, 2); with -e: the map")
    p.add_argument("-e", "--embeddings", metavar="EMB.npy", help="(older form) embeddings, clustered with --space latent; -c is then the map")
    p.add_argument("-id", "--ids", required=True, metavar="IDS.txt", help="IDs of the rows")
    p.add_argument("-o", "--output", required=True, metavar="CLUSTERS.tsv", help="output ID<TAB>cluster")
    p.add_argument("--map", metavar="MAP.npy", help="t-SNE map (N, 2) to draw the clusters on")
    p.add_argument("--method", choices=["hdbscan", "leiden"], default="hdbscan", help="clustering method")
    p.add_argument("--space", choices=["tsne", "latent"], default=None, help="force what is clustered (default: by the shape of -c)")
    p.add_argument("--no-length-column", action="store_true", help="the embeddings are a plain (N, latent) matrix")
    g = p.add_argument_group("Leiden")
    g.add_argument("-k", type=int, default=15, help="neighbours per point in the graph")
    g.add_argument("--weight", choices=["snn", "distance"], default="snn", help="edge weight: shared neighbours, or a Gaussian of the distance")
    g.add_argument("--mutual", action="store_true", help="keep only mutual kNN edges (default: union)")
    g.add_argument("--resolution", nargs="+", type=_floats, default=None, metavar="R",
                   help="one or several resolutions (> 0; higher = more clusters); one output column each (default: 1)")
    g.add_argument("--neighbors", choices=["auto", "exact", "hnsw"], default="auto", help="neighbour search (auto: exact below 50,000 points)")
    g.add_argument("--ef-construction", type=_positive_int, default=100, help="HNSW build-time search breadth (more = better recall, slower)")
    g.add_argument("--ef", type=_positive_int, default=50, help="HNSW query-time search breadth")
    h = p.add_argument_group("HDBSCAN")
    h.add_argument("--min-cluster-size", type=_positive_int, default=None, help="smallest cluster (default: scaled with N, see above)")
    h.add_argument("--min-samples", type=_positive_int, default=None, help="HDBSCAN min_samples: larger = more conservative, more noise (default: max(5, min_cluster_size/10))")
    s = p.add_argument_group("scores and bins")
    s.add_argument("--labels", metavar="TSV", help="ID<TAB>label... with a header (e.g. id, genome, genus): score each clustering")
    s.add_argument("--fasta", nargs="+", default=[], metavar="FASTA", help="the contigs (plain or gzip) for --bins-dir")
    s.add_argument("--bins-dir", metavar="DIR", help="write one FASTA per cluster (bin_C.fna) and DIR/contig_bins.tsv")
    s.add_argument("--min-bin-size", type=_positive_int, default=200_000, metavar="BP", help="smallest bin written, in bp")
    s.add_argument("--bins-gzip", action="store_true", help="gzip the bins (.fna.gz)")
    s.add_argument("--bins-resolution", type=float, default=None, metavar="R", help="resolution whose clusters become bins (default: the first)")
    p.add_argument("--summary", metavar="JSON", help="summary file (default: beside the output, .json)")
    _add_plot_args(p, "the map coloured by cluster (needs a map: -c MAP.npy or --map)")
    p.add_argument("--threads", type=_positive_int, default=0, help="threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=42, help="seed of the neighbour graph and of Leiden")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return p


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, e.g. 0.5 1 2 or 0.5,1,2; got {text!r}") from None


def _cluster(args: argparse.Namespace) -> int:
    from .cluster import ClusterOptions, run as run_cluster

    run_cluster(ClusterOptions(
        ids=args.ids, output=args.output, input=args.input, embeddings=args.embeddings, map=args.map, space=args.space,
        length_column=not args.no_length_column, method=args.method, k=args.k, weight=args.weight, mutual=args.mutual,
        resolutions=[r for group in args.resolution for r in group] if args.resolution else [1.0], neighbors=args.neighbors,
        ef_construction=args.ef_construction, ef=args.ef,
        min_cluster_size=args.min_cluster_size, min_samples=args.min_samples, labels=args.labels, fasta=args.fasta,
        bins_dir=args.bins_dir, min_bin_size=args.min_bin_size, bins_gzip=args.bins_gzip, bins_resolution=args.bins_resolution,
        summary=args.summary, png=args.png, no_plot=args.no_plot, pdf=args.pdf, threads=args.threads, seed=args.seed,
        quiet=args.quiet))
    return 0


def cluster(argv: Argv = None) -> int:
    """Console entry point of ``cluster``."""
    _exit(run(_together(_cluster), cluster_parser(), argv))


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
    p.add_argument("--quiet", action="store_true", help="nothing but errors on stderr")
    return p


def _compare_groups(args: argparse.Namespace) -> int:
    from .explore import (assign_groups, composition_table, density_differences, group_counts, group_densities,
                          load_coords, parse_named, read_cluster_tsv, read_group_table)
    from .matrix import check_output_dir
    from .plots import plot_composition, plot_density_difference, plot_overlay

    prefix = os.path.join(args.output, "compare") if os.path.isdir(args.output) else args.output
    from .paths import check_paths

    check_paths([args.coords, args.ids, args.groups_tsv, args.clusters],
                [prefix + e for e in (".density.png", ".overlay.png") + ((".density.pdf", ".overlay.pdf") if args.pdf else ())
                 + (((".composition.png", ".composition.csv") + ((".composition.pdf",) if args.pdf else ())) if args.clusters else ())])
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
    _exit(run(_together(_compare_groups), compare_groups_parser(), argv))


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
                   help="the encoder for --fasta, .keras or portable .json (the shipped model if not given); use the one that made the indexed embeddings")
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
    from .paths import check_paths, encoder_files

    index_files = [os.path.join(args.index, n) for n in ("meta.json", "ids.txt", "vectors.npy", "hnsw.bin")] if args.index else []
    check_paths([args.embeddings, args.row_ids, args.ids_file, args.vectors, args.vectors_ids, args.fasta]
                + index_files + encoder_files(args.model), [args.output], folders=[args.build_index])
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
            raise InputError(f"the encoder {args.model or '(the default model)'} makes {z.shape[1]}-D vectors but the index has {index.dim}: "
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
    p.add_argument("--quiet", action="store_true", help="nothing but errors on stderr (the report's path still goes to stdout)")
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
