#!/usr/bin/env bash
# Reproduce the shipped default model: the recipe the quality benchmark chose (VAE.md, "Quality benchmark and
# the default model (issue 8)"), trained on random pieces of ALL the genomes in ../shared/data, exported, then
# scored by the benchmark as a sanity check (it has seen the benchmark's held-out genomes: not a quality claim).
#
#   bash bench/train_default_model.sh                         # all steps: count, train, export, eval
#   OUT=/tmp/dm EPOCHS=10 bash bench/train_default_model.sh     # a quick try elsewhere
#   STEPS="eval" bash bench/train_default_model.sh            # only re-score $OUT with the benchmark
#
# Work files (matrices, the run folder, reports) go to $WORK, never into the repository; the genomes are read
# where they are. Everything is seeded (--seed 42). The benchmark's own fragments must exist for the eval step
# (python3 bench/bench_quality.py prepare; its work folder is $BENCH_WORK).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/work/scratch/quality-bench/default_model_work}"
BENCH_WORK="${BENCH_WORK:-/work/scratch/quality-bench/work}"
OUT="${OUT:-$REPO/Models/default}"
EPOCHS="${EPOCHS:-12}"
ROWS="${ROWS:-96000}"
STEPS="${STEPS:-count train export eval}"
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-}"
# The recipe (bench/bench_quality.py, recipe k15-l128-b01-dn1-4-ctn-t1-x8): 1-5-mers (692 inputs),
# 692-512-256-128, beta 0.01, 80 % of each batch resampled as if 1-4 kb long (denoising; the target stays the
# clean profile), plus the contrastive term (each denoised row pulled towards its clean profile in the latent and
# away from the other rows' clean and denoised profiles, except its 8 nearest rows, likely the same genome;
# weight 1, temperature 1), 12 epochs of 96,000 rows (more epochs made short fragments worse: VAE.md).
RECIPE=(--kmers 1-5 --latent 128 --hidden 512 256 --beta 0.01 --warmup-epochs 2 --batch-size 256 --lr 5e-4
        --val-fraction 0.1 --denoise 1000:4000 --denoise-fraction 0.8 --contrast 1 --contrast-temperature 1
        --contrast-noisy-negatives --contrast-exclude 8)
mkdir -p "$WORK"

if [[ " $STEPS " == *" count "* ]]; then
  # $ROWS random pieces of log-uniform length in 1-50 kb, from every genome in proportion to its size, both
  # strands, shuffled (WORK/train_all_1-50k.npy; the benchmark's train_1-50k.npy is the same draw without the
  # held-out genomes).
  python3 "$REPO/bench/bench_quality.py" --work "$WORK" prepare --all-genomes --schemes 1-50k --n-train "$ROWS"
fi

if [[ " $STEPS " == *" train "* ]]; then
  rm -rf "$WORK/run"
  "$REPO/bin/train_vae" -i "$WORK/train_all_1-50k.npy" -o "$WORK/run" "${RECIPE[@]}" --epochs "$EPOCHS" --seed 42 --quiet
fi

if [[ " $STEPS " == *" export "* ]]; then
  mkdir -p "$OUT"
  cp "$WORK/run/encoder.keras" "$OUT/encoder.keras"
  cp "$WORK/run/config.json" "$WORK/run/history.csv" "$OUT/"
  "$REPO/bin/export_encoder" -m "$OUT/encoder.keras"
  ls -l "$OUT"
fi

if [[ " $STEPS " == *" eval "* ]]; then
  # Sanity check only: this model was trained on the held-out genomes too.
  python3 "$REPO/bench/bench_quality.py" --work "$BENCH_WORK" eval "$OUT/encoder.keras" --name shipped_model
fi
