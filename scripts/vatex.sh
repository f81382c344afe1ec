#!/usr/bin/env bash
# VATEX with the released recipe: 12 frames, 32 words, lr 5e-3, coef_lr 1e-3, 10 epochs, global batch 512
# (8 GPUs x 64; one pair per caption), linear shared latent space, mixed precision; multi-caption evaluation.
#
#   VATEX_ROOT=/data/vatex PRETRAINED_DIR=/models bash scripts/vatex.sh [extra main.py flags]
#
# VATEX_ROOT holds {train,test}_list.txt (and optionally val_list.txt) and ref_captions.json; the compressed
# videos are in VATEX_ROOT/videos (or VATEX_VIDEOS). See scripts/launch.sh for the launch variables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dir VATEX_ROOT "the VATEX folder (train_list.txt, test_list.txt, ref_captions.json)"
VIDEOS=${VATEX_VIDEOS:-$VATEX_ROOT/videos}
require_dir VIDEOS "the compressed VATEX videos (set VATEX_VIDEOS)"
split_global_batch 512 "${PER_GPU_BATCH:-64}"

run_main --do_train --do_eval --datatype vatex \
    --data_path "$VATEX_ROOT" --features_path "$VIDEOS" \
    --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
    --output_dir "${OUTPUT_DIR:-outputs/vatex_$(date +%Y%m%d-%H%M%S)}" \
    --max_frames 12 --max_words 32 --epochs 10 --lr 5e-3 --coef_lr 1e-3 --wd 0.2 --warmup_proportion 0.1 \
    --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --batch_size_val 16 --clip_grad_norm 1.0 \
    --precision "${PRECISION:-amp}" --seed 42 --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
    --shared_latent_space linear --temporal_prompt stop \
    "$@"
