#!/usr/bin/env bash
# Train, evaluate and search with the IRRA recipe on CUHK-PEDES.
#
#   DATA=/data OUT=runs/irra-cuhk bash examples/train_cuhk_pedes.sh
#
# DATA must hold CUHK-PEDES/reid_raw.json and CUHK-PEDES/imgs/ (see the datasets page of
# the documentation). The full recipe loads OpenAI CLIP ViT-B/16 weights from the Hugging Face
# Hub and trains 60 epochs at batch 64: one modern GPU, most of a day. GPUS=4 runs it with
# torchrun on 4 GPUs (batch 64 per GPU).
#
# TEXTREID_SMOKE=1 runs the same commands in seconds on a CPU: a tiny SynthPEDES and the
# tiny-irra recipe for one epoch (train prints the val and test metrics), then a search
# with the saved retriever, in a temporary folder (or OUT when given).
set -euo pipefail

if [[ "${TEXTREID_SMOKE:-0}" == "1" ]]; then
    OUT="${OUT:-$(mktemp -d)}"
    DATA="$OUT/synthpedes"
    textreid synth "$DATA" --identities 30 --images-per-identity 2 --overwrite
    textreid train --recipe tiny-irra --data "$DATA" --dataset synthpedes \
        --output "$OUT/run" --epochs 1 --device cpu --no-progress
    textreid search "$OUT/run/retriever" --gallery "$DATA/CUHK-PEDES/imgs" \
        --text "a woman in a pink coat and a grey skirt" --k 5 --out "$OUT/search_grid.png"
    exit 0
fi

DATA="${DATA:?set DATA to the folder that holds CUHK-PEDES/}"
OUT="${OUT:-runs/irra-cuhk}"
GPUS="${GPUS:-1}"

if [[ "$GPUS" -gt 1 ]]; then
    torchrun --nproc_per_node "$GPUS" -m textreid.cli train --recipe irra \
        --data "$DATA" --dataset cuhk-pedes --output "$OUT"
else
    textreid train --recipe irra --data "$DATA" --dataset cuhk-pedes --output "$OUT"
fi
textreid eval "$OUT/retriever" --data "$DATA" --dataset cuhk-pedes --split test
textreid search "$OUT/retriever" --gallery "$DATA/CUHK-PEDES/imgs" \
    --text "a young woman in a red coat, black trousers, carrying a white bag" \
    --k 5 --out "$OUT/search_grid.png"
