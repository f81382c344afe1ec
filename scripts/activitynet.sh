set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dataset ACTIVITYNET "the ActivityNet Captions folder (train.json, val_1.json)"
train_recipe activitynet 128 16 --data_path "$ROOT" --features_path "$VIDEOS" \
    --max_frames 64 --max_words 64 --epochs 10 --lr 1e-3 --coef_lr 1e-3 --shared_latent_space linear "$@"
