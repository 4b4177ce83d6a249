#!/usr/bin/env bash
# Prune the pipeline's SST-2 teacher (4 of 6 layers, half of each feed-forward), distil it
# back for 400 steps, and report it next to the teacher. Needs a finished
# `lmforge pipeline benchmarks/pipeline_sst2.yaml` (its teacher stage).
set -euo pipefail
cd "$(dirname "$0")/.."
LMFORGE=${LMFORGE:-.venv/bin/lmforge}
teacher=$(ls -td runs/pipeline_sst2/teacher-*/run | head -1)
mkdir -p runs/pruned_sst2
ln -sfn "$(realpath "$teacher/best")" runs/pruned_sst2/teacher
ln -sfn "$(realpath "$teacher/exports/sst2")" runs/pruned_sst2/teacher-export
rm -rf runs/pruned_sst2/bundle runs/pruned_sst2/run runs/pruned_sst2/export
"$LMFORGE" prune runs/pruned_sst2/teacher --task sst2 --data datasets/sst2/train.tsv \
  --keep-layers 4 --intermediate-size 768 --out runs/pruned_sst2/bundle
"$LMFORGE" train benchmarks/prune_sst2.yaml
"$LMFORGE" train export runs/pruned_sst2/run --task sst2 --out runs/pruned_sst2/export
"$LMFORGE" report benchmarks/report_prune.yaml
