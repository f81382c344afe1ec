set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
require_dataset VATEX "the VATEX folder (train_list.txt, test_list.txt, ref_captions.json)"
train_recipe vatex 512 64 --data_path "$ROOT" --features_path "$VIDEOS" \
    --max_frames 12 --max_words 32 --epochs 10 --lr 5e-3 --coef_lr 1e-3 --shared_latent_space linear "$@"
