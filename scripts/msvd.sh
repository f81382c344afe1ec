#!/usr/bin/env bash
# MSVD, multi-caption evaluation on the test split. The released code ships no MSVD script; we use the
# MSR-VTT recipe (12 frames, 32 words, lr 1e-3, 5 epochs, global batch 128, transformer shared latent space).
# The best epoch is chosen on the val split.
#
#   MSVD_ROOT=/data/msvd PRETRAINED_DIR=/models bash scripts/msvd.sh [extra main.py flags]
#
# MSVD_ROOT holds {train,val,test}_list.txt and raw-captions.json (or CLIP4Clip's raw-captions.pkl); the
# compressed videos are in MSVD_ROOT/videos (or MSVD_VIDEOS). See scripts/launch.sh for the launch variables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dir MSVD_ROOT "the MSVD folder (train_list.txt, val_list.txt, test_list.txt, raw-captions.json)"
VIDEOS=${MSVD_VIDEOS:-$MSVD_ROOT/videos}
require_dir VIDEOS "the compressed MSVD videos (set MSVD_VIDEOS)"
split_global_batch 128 "${PER_GPU_BATCH:-32}"

run_main --do_train --do_eval --datatype msvd \
    --data_path "$MSVD_ROOT" --features_path "$VIDEOS" \
    --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
    --output_dir "${OUTPUT_DIR:-outputs/msvd_$(date +%Y%m%d-%H%M%S)}" \
    --max_frames 12 --max_words 32 --epochs 5 --lr 1e-3 --coef_lr 5e-4 --wd 0.2 --warmup_proportion 0.1 \
    --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --batch_size_val 16 --clip_grad_norm 1.0 \
    --precision "${PRECISION:-amp}" --seed 42 --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
    --shared_latent_space transformer --temporal_prompt stop \
    "$@"
