#!/usr/bin/env bash
# ActivityNet Captions, paragraph retrieval on val_1, with the released recipe: 64 frames, 64 words, lr 1e-3,
# coef_lr 1e-3, 10 epochs, global batch 128 (8 GPUs x 16), linear shared latent space, mixed precision.
#
#   ACTIVITYNET_ROOT=/data/activitynet PRETRAINED_DIR=/models bash scripts/activitynet.sh [extra main.py flags]
#
# ACTIVITYNET_ROOT holds train.json and val_1.json; the compressed videos are in ACTIVITYNET_ROOT/videos (or
# ACTIVITYNET_VIDEOS). See scripts/launch.sh for the launch variables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dir ACTIVITYNET_ROOT "the ActivityNet Captions folder (train.json, val_1.json)"
VIDEOS=${ACTIVITYNET_VIDEOS:-$ACTIVITYNET_ROOT/videos}
require_dir VIDEOS "the compressed ActivityNet videos (set ACTIVITYNET_VIDEOS)"
split_global_batch 128 "${PER_GPU_BATCH:-16}"

run_main --do_train --do_eval --datatype activitynet \
    --data_path "$ACTIVITYNET_ROOT" --features_path "$VIDEOS" \
    --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
    --output_dir "${OUTPUT_DIR:-outputs/activitynet_$(date +%Y%m%d-%H%M%S)}" \
    --max_frames 64 --max_words 64 --epochs 10 --lr 1e-3 --coef_lr 1e-3 --wd 0.2 --warmup_proportion 0.1 \
    --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --batch_size_val 16 --clip_grad_norm 1.0 \
    --precision "${PRECISION:-amp}" --seed 42 --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
    --shared_latent_space linear --temporal_prompt stop \
    "$@"
