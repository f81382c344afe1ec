set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dataset DIDEMO "the DiDeMo folder (train_data.json, val_data.json, test_data.json)"
train_recipe didemo 128 16 --data_path "$ROOT" --features_path "$VIDEOS" \
    --max_frames 64 --max_words 64 --epochs 10 --lr 1e-3 --coef_lr 1e-3 --shared_latent_space linear "$@"
