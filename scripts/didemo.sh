#!/usr/bin/env bash
# DiDeMo, paragraph retrieval on the test split. The released code ships no DiDeMo script; we use its
# ActivityNet recipe (64 frames, 64 words, lr 1e-3, coef_lr 1e-3, 10 epochs, global batch 128, linear shared
# latent space), the usual choice for paragraph retrieval. The best epoch is chosen on the val split.
#
#   DIDEMO_ROOT=/data/didemo PRETRAINED_DIR=/models bash scripts/didemo.sh [extra main.py flags]
#
# DIDEMO_ROOT holds {train,val,test}_data.json; the compressed videos are in DIDEMO_ROOT/videos (or
# DIDEMO_VIDEOS). See scripts/launch.sh for the launch variables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dir DIDEMO_ROOT "the DiDeMo folder (train_data.json, val_data.json, test_data.json)"
VIDEOS=${DIDEMO_VIDEOS:-$DIDEMO_ROOT/videos}
require_dir VIDEOS "the compressed DiDeMo videos (set DIDEMO_VIDEOS)"
split_global_batch 128 "${PER_GPU_BATCH:-16}"

run_main --do_train --do_eval --datatype didemo \
    --data_path "$DIDEMO_ROOT" --features_path "$VIDEOS" \
    --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
    --output_dir "${OUTPUT_DIR:-outputs/didemo_$(date +%Y%m%d-%H%M%S)}" \
    --max_frames 64 --max_words 64 --epochs 10 --lr 1e-3 --coef_lr 1e-3 --wd 0.2 --warmup_proportion 0.1 \
    --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --batch_size_val 16 --clip_grad_norm 1.0 \
    --precision "${PRECISION:-amp}" --seed 42 --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
    --shared_latent_space linear --temporal_prompt stop \
    "$@"
