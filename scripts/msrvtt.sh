#!/usr/bin/env bash
# MSR-VTT 1k-A with the released STOP recipe: ViT-B/32, 12 frames, 32 words, lr 1e-3 (CLIP frozen), 5 epochs,
# global batch 128 (every training caption is a pair), AdamW wd 0.2, 10% warm-up then cosine, clip 1.0, seed 42,
# mixed precision, transformer shared latent space. Best epoch chosen on the test split as released (set
# --holdout_val_videos N to choose on held-out training videos instead).
#
#   MSRVTT_ROOT=/data/msrvtt PRETRAINED_DIR=/models bash scripts/msrvtt.sh [extra main.py flags]
#
# MSRVTT_ROOT holds MSRVTT_train.9k.csv, MSRVTT_data.json, MSRVTT_JSFUSION_test.csv and the videos compressed
# by preprocess/compress_video.py in MSRVTT_ROOT/videos (or MSRVTT_VIDEOS). See scripts/launch.sh for the
# launch variables. Extra flags go last and win, e.g. `--do_eval --init_model outputs/x/ckpt_best.pt`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dir MSRVTT_ROOT "the MSR-VTT folder (MSRVTT_train.9k.csv, MSRVTT_data.json, MSRVTT_JSFUSION_test.csv)"
VIDEOS=${MSRVTT_VIDEOS:-$MSRVTT_ROOT/videos}
require_dir VIDEOS "the compressed MSR-VTT videos (set MSRVTT_VIDEOS)"
for f in MSRVTT_train.9k.csv MSRVTT_data.json MSRVTT_JSFUSION_test.csv; do
    require_file "$MSRVTT_ROOT/$f" "CLIP4Clip's MSR-VTT annotation files belong in MSRVTT_ROOT"
done
split_global_batch 128 "${PER_GPU_BATCH:-32}"

run_main --do_train --do_eval --datatype msrvtt \
    --train_csv "$MSRVTT_ROOT/MSRVTT_train.9k.csv" --data_path "$MSRVTT_ROOT/MSRVTT_data.json" \
    --val_csv "$MSRVTT_ROOT/MSRVTT_JSFUSION_test.csv" --features_path "$VIDEOS" --expand_msrvtt_sentences \
    --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
    --output_dir "${OUTPUT_DIR:-outputs/msrvtt_$(date +%Y%m%d-%H%M%S)}" \
    --max_frames 12 --max_words 32 --epochs 5 --lr 1e-3 --coef_lr 5e-4 --wd 0.2 --warmup_proportion 0.1 \
    --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --batch_size_val 16 --clip_grad_norm 1.0 \
    --precision "${PRECISION:-amp}" --seed 42 --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
    --shared_latent_space transformer --temporal_prompt stop \
    "$@"
