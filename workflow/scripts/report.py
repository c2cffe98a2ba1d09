"""The workflow's report rule: a Markdown summary of one run (called by Snakemake's `script:`)."""
import json
import os

import numpy as np

sm = snakemake  # noqa: F821 (injected by Snakemake)
out = sm.params.outdir
lines = ["# kmer-vae workflow report", ""]
lines += ["| sample | FASTA | contigs embedded |", "|---|---|---:|"]
total = 0
for (name, fasta), emb in zip(sm.params.samples.items(), sm.input.embeddings, strict=True):
    n = int(np.load(emb, mmap_mode="r", allow_pickle=False).shape[0])
    total += n
    lines.append(f"| {name} | {fasta} | {n:,} |")
lines += [f"| all | | {total:,} |", ""]
lines.append(f"- Encoder: `{sm.input.encoder}` ({'trained by this workflow' if sm.params.trained else 'given in the config'})")
hist = os.path.join(out, "model", "history.csv")
if sm.params.trained and os.path.exists(hist):
    with open(hist, encoding="utf-8") as fh:
        rows = fh.read().splitlines()
    lines.append(f"- Training: {len(rows) - 1} epochs logged in `{hist}`")
with open(os.path.join(sm.input.index, "meta.json"), encoding="utf-8") as fh:
    meta = json.load(fh)
lines.append(f"- Neighbour index: `{sm.input.index}` "
             f"({meta.get('method', '?')}, {meta.get('metric', '?')}, {meta.get('n', '?'):,} vectors)")
with open(sm.input.clusters, encoding="utf-8") as fh:
    summ = json.load(fh)
lines.append(f"- Clusters ({sm.params.cluster_method}): `{os.path.join(out, 'clusters', 'clusters.tsv')}`; "
             f"{summ.get('n_clusters', '?')} clusters over {summ.get('n_points', '?')} contigs, "
             f"noise {summ.get('noise_fraction', 0):.1%}")
for fig in ("map/map.png", "clusters/clusters.png"):
    if os.path.exists(os.path.join(out, fig)):
        lines.append(f"- Figure: `{os.path.join(out, fig)}`")
tmp = sm.output[0] + ".tmp"
with open(tmp, "w", encoding="utf-8") as fh:
    fh.write("\n".join(lines) + "\n")
os.replace(tmp, sm.output[0])
