set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dataset LSMDC "the LSMDC folder (the LSMDC16 annotation files)"
train_recipe lsmdc 128 32 --data_path "$ROOT" --features_path "$VIDEOS" \
    --max_frames 12 --max_words 32 --epochs 5 --lr 1e-3 --coef_lr 5e-4 --shared_latent_space transformer "$@"
