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
