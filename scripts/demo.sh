#!/usr/bin/env bash
# The demo, end to end on a CPU in minutes, no download: generate videos of coloured shapes moving in one of
# four directions, give a tiny CLIP a short image-text pre-training on single frames (it learns colours and
# shapes, not motion), save it in OpenAI's format, then on the same test set of opposite-direction pairs:
#   1. meanP on the frozen CLIP (CLIP4Clip's mean pooling, no training: blind to the order of frames),
#   2. DGL (--temporal_prompt none), prompts trained, CLIP frozen,
#   3. STOP, prompts trained, CLIP frozen,
# and print/write a comparison table (OUT/results.md, OUT/results.json). DGL and STOP read the video feature from
# the mean of the frame CLS tokens (--visual_output_type average_frame_cls_token) instead of the released
# recipe's global prompt 0: with 720 training pairs and minutes of CPU, the global-prompt readout does not
# recover the frozen CLIP's colour/shape recognition (measured in docs/RESULTS.md).
#
#   bash scripts/demo.sh                 # OUT=outputs/demo, SEED=0
#   SEED=1 OUT=outputs/demo_seed1 bash scripts/demo.sh
#
# Knobs (environment): OUT, SEED, EPOCHS (24), BATCH (16), LR (1e-3), FRAMES (4), NUM_TRAIN (240 videos),
# NUM_TEST (48 videos = 24 pairs, every colour x shape x axis once), CLIP_STEPS (1500).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
OUT=${OUT:-outputs/demo}
SEED=${SEED:-0}
DATA=$OUT/data_seed$SEED
start=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "n/a")
mkdir -p "$OUT"
rm -rf "$OUT/meanp" "$OUT/dgl" "$OUT/stop"  # the runs start afresh; data and tiny CLIP are reused if there

python -m dataloaders.synthetic --output_root "$DATA" --num_train "${NUM_TRAIN:-240}" --num_test "${NUM_TEST:-48}" \
    --seed "$SEED" --image_size 64 --num_frames 12
if [ ! -f "$OUT/tiny_clip_seed$SEED.pt" ]; then
    python scripts/demo/tiny_clip_pretrain.py --output "$OUT/tiny_clip_seed$SEED.pt" --seed "$SEED" --steps "${CLIP_STEPS:-1500}"
fi

common=(--datatype msrvtt --train_csv "$DATA/MSRVTT_train.9k.csv" --data_path "$DATA/MSRVTT_data.json"
        --val_csv "$DATA/MSRVTT_JSFUSION_test.csv" --features_path "$DATA/videos"
        --pretrained_clip_name "$OUT/tiny_clip_seed$SEED.pt" --max_frames "${FRAMES:-4}" --max_words 16
        --precision fp32 --device cpu --num_thread_reader 0 --batch_size_val 20 --seed "$SEED" --save_similarity)
training=(--do_train --do_eval --expand_msrvtt_sentences --no-eval_every_epoch --epochs "${EPOCHS:-24}"
          --batch_size "${BATCH:-16}" --lr "${LR:-1e-3}" --n_display 50
          --visual_output_type "${VISUAL_OUTPUT:-average_frame_cls_token}")

echo "== 1/3 meanP on the frozen CLIP (no training)"
python main.py --do_eval --prompt none "${common[@]}" --output_dir "$OUT/meanp"
echo "== 2/3 DGL: prompts trained, CLIP frozen"
python main.py "${training[@]}" --temporal_prompt none "${common[@]}" --output_dir "$OUT/dgl"
echo "== 3/3 STOP: prompts trained, CLIP frozen"
python main.py "${training[@]}" --temporal_prompt stop "${common[@]}" --output_dir "$OUT/stop"

python scripts/demo/report.py --metadata "$DATA/synthetic_metadata.json" --output_dir "$OUT" \
    --title "Demo on generated videos (seed $SEED)" \
    --runs "meanP (frozen CLIP)=$OUT/meanp" "DGL=$OUT/dgl" "STOP=$OUT/stop"
summary="demo finished in $(( $(date +%s) - start )) s (load average at start $load_at_start, at end $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a))"
echo "$summary" | tee "$OUT/runtime.txt"
echo "results in $OUT/results.md"
