#!/usr/bin/env bash
# Reproduce Models/default/: train the shipped encoder on 5-kbp pieces of 26 of the 31 real genomes in
# ../shared/data/genomes, export it, and evaluate it on the 5 held-out genomes against PCA and CLR.
#
#   bash bench/train_default_model.sh                 # all steps (counting, training, export, evaluation)
#   EPOCHS=40 WORK=/tmp/dm bash bench/train_default_model.sh
#   STEPS="eval" bash bench/train_default_model.sh    # only re-run the evaluation of Models/default
#
# Work files (matrices, the run folder, reports) go to $WORK, never into the repository; the genomes
# are read where they are. Everything is seeded (--seed 42).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
GENOMES="${GENOMES:-$REPO/../shared/data/genomes}"
TAXONOMY="${TAXONOMY:-$REPO/../shared/data/genomes.tsv}"
WORK="${WORK:-/tmp/kmer-vae-default-model}"
OUT="${OUT:-$REPO/Models/default}"
EPOCHS="${EPOCHS:-100}"
CHOP="${CHOP:-5000}"
STEPS="${STEPS:-count train export eval}"
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-}"
# Held out from training: 5 genomes, 5 phyla (4 bacterial, 1 archaeal); each has relatives in the
# training set at genus (Salmonella~Escherichia/Shigella family, Corynebacterium, Streptococcus),
# family (Methanobacteriaceae) or only phylum (Porphyromonas vs Sphingobacteriaceae) level.
HELDOUT=(
  Salmonella_enterica_Typhimurium_LT2
  Corynebacterium_pseudotuberculosis_CIP52.97
  Streptococcus_parasanguinis_GCA_002860845
  Methanobacterium_sp_AL-21
  Porphyromonas_gingivalis_W83_15kb_fragments
)
mkdir -p "$WORK/genomes"
is_heldout() { local g; for g in "${HELDOUT[@]}"; do [[ "$g" == "$1" ]] && return 0; done; return 1; }

if [[ " $STEPS " == *" count "* ]]; then
  train_npy=() train_txt=() held_npy=() held_txt=()
  for f in "$GENOMES"/*.fna.gz; do
    g="$(basename "$f" .fna.gz)"
    "$REPO/bin/calculate_kmer_frequencies" -i "$f" -id "$WORK/genomes/$g.txt" -k "$WORK/genomes/$g.npy" --chop "$CHOP" --quiet
    if is_heldout "$g"; then held_npy+=("$WORK/genomes/$g.npy"); held_txt+=("$WORK/genomes/$g.txt")
    else train_npy+=("$WORK/genomes/$g.npy"); train_txt+=("$WORK/genomes/$g.txt"); fi
  done
  "$REPO/bin/concatenate_matrices" -i "${train_npy[@]}" -id "${train_txt[@]}" -o "$WORK/train" --shuffle --seed 42 --quiet
  "$REPO/bin/concatenate_matrices" -i "${held_npy[@]}" -id "${held_txt[@]}" -o "$WORK/heldout" --quiet
  # Evaluation pool: held-out pieces (the queries) + training pieces (PCA is fitted on the latter).
  "$REPO/bin/concatenate_matrices" -i "$WORK/heldout.npy" "$WORK/train.npy" -id "$WORK/heldout.txt" "$WORK/train.txt" -o "$WORK/pool" --quiet
  # Labels of every piece: genome, then the taxonomy of genomes.tsv (NA where unknown).
  python3 - "$TAXONOMY" "$WORK" <<'EOF'
import csv, os, sys
tax, work = sys.argv[1], sys.argv[2]
ranks = ["genus", "family", "order", "class", "phylum"]
with open(tax, newline="") as fh:
    rows = {r["file"][: -len(".fna.gz")]: r for r in csv.DictReader(fh, delimiter="\t")}
with open(os.path.join(work, "labels.tsv"), "w") as out:
    out.write("id\tgenome\t" + "\t".join(ranks) + "\n")
    for g, r in sorted(rows.items()):
        with open(os.path.join(work, "genomes", g + ".txt")) as fh:
            for i in fh.read().split():
                out.write(f"{i}\t{g}\t" + "\t".join(r[k] for k in ranks) + "\n")
EOF
fi

if [[ " $STEPS " == *" train "* ]]; then
  rm -rf "$WORK/run"
  "$REPO/bin/train_vae" -i "$WORK/train.npy" -o "$WORK/run" --latent 384 --hidden 1024 512 --beta 0.05 \
    --epochs "$EPOCHS" --warmup-epochs 5 --batch-size 256 --lr 5e-4 --val-fraction 0.1 --seed 42 --quiet
fi

if [[ " $STEPS " == *" export "* ]]; then
  mkdir -p "$OUT"
  cp "$WORK/run/encoder.keras" "$OUT/encoder.keras"
  cp "$WORK/run/config.json" "$WORK/run/history.csv" "$OUT/"
  "$REPO/bin/export_encoder" -m "$OUT/encoder.keras"
  ls -l "$OUT"
fi

if [[ " $STEPS " == *" eval "* ]]; then
  # Queries: held-out pieces; pool: every piece of the 31 genomes; PCA fitted on the training rows.
  "$REPO/bin/verify_local_distances" -i "$WORK/pool.npy" -id "$WORK/pool.txt" --val-ids "$WORK/heldout.txt" \
    -e "$OUT/encoder.keras" --engine numpy --queries 1000 -k 50 --bootstrap 1000 --seed 42 \
    --json "$WORK/verify.json" | tee "$WORK/verify.txt"
  # Labels of the held-out genomes only (5 genomes = 5 phyla: all ranks agree), then of all 31 (26 seen in training).
  "$REPO/bin/evaluate_labels" -i "$WORK/heldout.npy" -id "$WORK/heldout.txt" -l "$WORK/labels.tsv" \
    -e "$OUT/encoder.keras" --engine numpy --pca-train "$WORK/train.npy" --seed 42 --json "$WORK/labels.json" | tee "$WORK/labels.txt"
  "$REPO/bin/evaluate_labels" -i "$WORK/pool.npy" -id "$WORK/pool.txt" -l "$WORK/labels.tsv" \
    -e "$OUT/encoder.keras" --engine numpy --pca-train "$WORK/train.npy" --seed 42 --json "$WORK/labels_all.json" | tee "$WORK/labels_all.txt"
fi
