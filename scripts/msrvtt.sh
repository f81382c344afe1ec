set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dataset MSRVTT "the MSR-VTT folder (MSRVTT_train.9k.csv, MSRVTT_data.json, MSRVTT_JSFUSION_test.csv)"
for f in MSRVTT_train.9k.csv MSRVTT_data.json MSRVTT_JSFUSION_test.csv; do
    require_file "$ROOT/$f" "CLIP4Clip's MSR-VTT annotation files belong in MSRVTT_ROOT"
done
train_recipe msrvtt 128 32 --train_csv "$ROOT/MSRVTT_train.9k.csv" --data_path "$ROOT/MSRVTT_data.json" \
    --val_csv "$ROOT/MSRVTT_JSFUSION_test.csv" --features_path "$VIDEOS" --expand_msrvtt_sentences \
    --max_frames 12 --max_words 32 --epochs 5 --lr 1e-3 --coef_lr 5e-4 --shared_latent_space transformer "$@"
