"""The one-command demo: a mock metagenome through the whole pipeline, with an HTML report.

The ``demo`` command is :class:`DemoOptions` + :func:`run`. Each step is the
real command's ``run(opts)`` called in-process; the report shows the command
line equivalent to its options (:func:`vae.options.to_argv`), so it can be
re-run by hand.
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import mock
from .errors import InputError
from .options import option, to_argv


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


@dataclass
class Step:
    name: str
    argv: list[str]
    seconds: float = 0.0


@dataclass
class DemoSettings:
    """Sizes of the demo; ``quick`` is the reduced version CI runs end to end."""

    contigs_per_sample: int = 600
    n_genomes: int = 8
    epochs: int = 12
    warmup_epochs: int = 3
    latent: int = 32
    hidden: tuple[int, int] = (256, 128)
    batch_size: int = 64
    seed: int = 42
    use_real: bool | None = None

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(contigs_per_sample=150, n_genomes=4, epochs=4, warmup_epochs=1, latent=8, hidden=(64, 32), batch_size=32)


@dataclass
class DemoOptions:
    """Everything ``demo`` takes."""

    output: str = option("demo_out", flags=("-o", "--output"), metavar="DIR", help="output folder (created)")
    quick: bool = option(False, help="a reduced version (what CI runs end to end)")
    simulated: bool = option(False, help="use simulated genomes even when the real ones are present")
    seed: int = option(42, help="seed of every step")
    quiet: bool = option(False, help="nothing but errors on stderr (the report's path still goes to stdout)")

    def settings(self) -> DemoSettings:
        s = DemoSettings.quick() if self.quick else DemoSettings()
        s.seed = self.seed
        if self.simulated:
            s.use_real = False
        return s


@dataclass
class Demo:
    out: str
    settings: DemoSettings
    steps: list[Step] = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def _timed(self, name: str, argv: list[str], call: Callable[[], Any]) -> None:
        print(f"\n== {name}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        # What the command prints on stdout (its report) is kept for the HTML page.
        with open(self.path(f"{slug(name)}.out.txt"), "w") as fh, contextlib.redirect_stdout(fh):
            call()
        self.steps.append(Step(name, argv, time.perf_counter() - t0))

    def run(self, name: str, command: str, run_fn: Callable[[Any], Any], opts: Any) -> None:
        """Run one command's ``run(opts)``; stop the demo with its message if it fails."""
        try:
            self._timed(name, [command, *to_argv(opts)], lambda: run_fn(opts))
        except InputError as e:
            raise InputError(f"demo step '{name}' failed: {e}") from None


def run(opts: DemoOptions) -> str:
    """The ``demo`` command: the whole pipeline into ``opts.output``; prints and returns the report's path."""
    from .runtime import quiet_stderr

    out_parent = os.path.dirname(os.path.abspath(opts.output))
    if not os.path.isdir(out_parent):
        raise InputError(f"output folder {out_parent} does not exist")
    with quiet_stderr(opts.quiet):
        report = run_demo(opts.output, opts.settings())
    print(report)
    return report


def run_demo(out: str, settings: DemoSettings) -> str:
    """Build the mock metagenome, run every step, write ``out/index.html``; returns its path."""
    from . import cluster, compare, count, embed, evaluate, matrix, train, tsne
    from .artifacts import RunFolder

    os.makedirs(out, exist_ok=True)
    d = Demo(out, settings)
    s = settings
    t0 = time.perf_counter()
    print(f"demo: building a mock metagenome in {d.path('data')}", file=sys.stderr)
    mg = mock.build(d.path("data"), n_genomes=s.n_genomes, contigs_per_sample=s.contigs_per_sample, seed=s.seed,
                    use_real=s.use_real)
    d.steps.append(Step("mock metagenome", ["(vae.mock.build)", mg.source], time.perf_counter() - t0))
    for sample, fasta in mg.fastas.items():
        d.run(f"count {sample}", "calculate_kmer_frequencies", count.run, count.CountOptions(
            inputs=[fasta], ids=d.path(f"{sample}.txt"), kmers=d.path(f"{sample}.npy"), quiet=True))
    samples = list(mg.fastas)
    d.run("concatenate + shuffle", "concatenate_matrices", matrix.run, matrix.ConcatOptions(
        inputs=[d.path(f"{x}.npy") for x in samples], ids=[d.path(f"{x}.txt") for x in samples], output=d.path("all"),
        shuffle=True, seed=s.seed, quiet=True))
    d.run("train", "train_vae", train.run, train.TrainOptions(
        input=d.path("all.npy"), run_dir=d.path("model"), latent=s.latent, hidden=tuple(s.hidden), epochs=s.epochs,
        warmup_epochs=s.warmup_epochs, batch_size=s.batch_size, lr=1e-3, seed=s.seed, quiet=True))
    encoder = RunFolder(d.path("model")).encoder
    d.run("embed", "embedding", embed.run, embed.EmbedOptions(
        model=encoder, inputs=[d.path("all.npy")], output=d.path("emb.npy"), quiet=True))
    d.run("verify vs PCA and CLR", "verify_local_distances", evaluate.run_verify, evaluate.VerifyCommand(
        input=d.path("all.npy"), run_dir=d.path("model"), encoder=encoder, json=d.path("verify.json"), seed=s.seed,
        quiet=True))
    d.run("label agreement", "evaluate_labels", evaluate.run_labels, evaluate.LabelsCommand(
        input=d.path("all.npy"), ids=d.path("all.txt"), labels=mg.labels, ranks="genome,genus,phylum", encoder=encoder,
        json=d.path("labels.json"), seed=s.seed, quiet=True))
    d.run("t-SNE", "tsne", tsne.run, tsne.TsneOptions(embeddings=d.path("emb.npy"), ids=d.path("all.txt"),
                                                    output=d.path("map.npy"), seed=s.seed, quiet=True))
    d.run("cluster", "cluster", cluster.run, cluster.ClusterOptions(
        input=d.path("map.npy"), ids=d.path("all.txt"), output=d.path("clusters.tsv"), summary=d.path("clusters.json"),
        labels=mg.labels))
    # Leiden on the latent vectors themselves (what binners do), drawn on the same map, with bins of the contigs.
    d.run("cluster (Leiden)", "cluster", cluster.run, cluster.ClusterOptions(
        method="leiden", input=d.path("emb.npy"), ids=d.path("all.txt"), map=d.path("map.npy"),
        resolutions=list(LEIDEN_RESOLUTIONS), labels=mg.labels, fasta=list(mg.fastas.values()), bins_dir=d.path("bins"),
        output=d.path("leiden.tsv"), seed=s.seed))
    d.run("compare samples", "compare_groups", compare.run, compare.CompareOptions(
        coords=d.path("map.npy"), ids=d.path("all.txt"), prefix=[f"{x}={x}_" for x in samples],
        clusters=d.path("clusters.tsv"), output=d.path("compare")))
    report = write_report(d, mg, time.perf_counter() - t0)
    print(f"\ndemo: done in {time.perf_counter() - t0:.0f} s; open {report}", file=sys.stderr)
    return report


#: Resolutions of the demo's Leiden step; the first is drawn and binned.
LEIDEN_RESOLUTIONS = (1.0, 0.5, 2.0)


def _json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _figure(d: Demo, name: str, caption: str) -> str:
    if not os.path.exists(d.path(name)):
        return f"<p><em>{html.escape(name)} was not written.</em></p>"
    return (f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _genome_aris(summary: dict) -> list[float]:
    """ARI against the genome labels of each clustering in a ``cluster`` summary."""
    return [s["ari"] for s in summary["scores"]["genome"]["by_resolution"]]


def write_report(d: Demo, mg: mock.MockMetagenome, seconds: float) -> str:
    """``index.html``: what was run, the numbers against baselines, and the figures."""
    def printed(step: str) -> str:
        with open(d.path(f"{slug(step)}.out.txt")) as fh:
            return fh.read()

    verify_text = printed("verify vs PCA and CLR")
    labels_text = printed("label agreement")
    clusters = _json(d.path("clusters.json"))
    leiden = _json(d.path("leiden.json"))
    with open(d.path("compare.composition.csv")) as fh:
        composition = fh.read()
    rows = "".join(f"<tr><td>{html.escape(st.name)}</td><td><code>{html.escape(shlex.join(st.argv))}</code></td>"
                   f"<td>{st.seconds:.1f}</td></tr>" for st in d.steps)
    summary = ", ".join(f"{k}: {v}" for k, v in clusters.items() if not isinstance(v, (list, dict)))
    hdb_ari = _genome_aris(clusters)
    leiden_aris = _genome_aris(leiden)
    leiden_scores = ", ".join(f"resolution {r:g}: {a:.2f}" for r, a in zip(LEIDEN_RESOLUTIONS, leiden_aris))
    bins = leiden.get("bins", {})
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kmer-vae demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
img{{max-width:100%;border:1px solid #ddd}}figure{{margin:1.5em 0}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}
.pair{{display:flex;gap:1em}}.pair figure{{flex:1;min-width:0}}
td,th{{padding:.2em .6em;text-align:left;vertical-align:top}}code{{font-size:90%}}</style></head><body>
<h1>kmer-vae demo</h1>
<p>A mock metagenome of two samples ({', '.join(mg.fastas)}), {mg.n_contigs:,} contigs from {mg.n_genomes}
{html.escape(mg.source)}, went through the whole pipeline in {seconds:.0f} s. The VAE here is deliberately
small and briefly trained (latent {d.settings.latent}, {d.settings.epochs} epochs); read its numbers against the
PCA and raw-CLR baselines computed in the same run and pool.</p>
<h2>Steps</h2><table><tr><th>step</th><th>command</th><th>seconds</th></tr>{rows}</table>
<h2>Do neighbours in the latent space agree with k-mer composition?</h2><pre>{html.escape(verify_text)}</pre>
<h2>Are neighbours biologically related?</h2><pre>{html.escape(labels_text)}</pre>
<h2>Maps</h2>
{_figure(d, "map.png", "t-SNE map of the latent space")}
<div class="pair">
{_figure(d, "clusters.png", f"HDBSCAN on the map: {clusters['n_clusters']} clusters, ARI {hdb_ari[0]:.2f} against the genomes")}
{_figure(d, "leiden.png", f"Leiden on the latent vectors (resolution {LEIDEN_RESOLUTIONS[0]:g}): "
                          f"{leiden['n_clusters']} clusters, ARI {leiden_aris[0]:.2f} against the genomes")}
</div>
<p>HDBSCAN clusters: {html.escape(summary)}</p>
<p>Leiden (kNN graph of the {leiden['n_dimensions']}-D latent vectors, k = {leiden['k']}, {leiden['weight']} weights),
adjusted Rand index against the {mg.n_genomes} genomes per resolution: {html.escape(leiden_scores)}.
Bins of at least {bins.get('min_bin_size', 0):,} bp: {bins.get('n_bins', 0)} FASTA files holding
{bins.get('n_contigs', 0):,} contigs in <code>bins/</code> (contig &rarr; bin in <code>bins/contig_bins.tsv</code>).</p>
<h2>Water vs sediment</h2>
{_figure(d, "compare.density.png", "density difference between the samples")}
{_figure(d, "compare.overlay.png", "both samples over one map")}
{_figure(d, "compare.composition.png", "share of each sample per cluster")}
<pre>{html.escape(composition)}</pre>
<h2>Training</h2>
{_figure(d, "model/training_curves.png", "training curves")}
</body></html>
"""
    path = d.path("index.html")
    from .matrix import atomic_text

    with atomic_text(path) as fh:
        fh.write(page)
    return path
