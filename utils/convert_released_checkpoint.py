"""Convert a checkpoint saved by the released STOP implementation into this project's state dict.

The conversion itself is models.checkpoints (which main.py --init_model and infer.py --checkpoint also apply
to released checkpoints directly); this command writes the converted tensors once. Checkpoints trained by the
released code expect `--spatial_mask_grid lattice`.

    python utils/convert_released_checkpoint.py released.pth.tar converted.pt [--without_clip]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from models.checkpoints import convert_released_state_dict, read_released_checkpoint

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="checkpoint saved by the released STOP implementation")
    parser.add_argument("output", type=Path, help="where to write this project's state dict (torch.save)")
    parser.add_argument("--without_clip", action="store_true",
                        help="keep only the trained prompt modules, not the frozen CLIP weights")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="unpickle the input fully (only for files you trust)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        converted = convert_released_state_dict(read_released_checkpoint(args.input, args.trust_pickle))
    except (FileNotFoundError, KeyError, ValueError) as error:
        parser.exit(1, f"error: {error.args[0] if isinstance(error, KeyError) else error}\n")
    if args.without_clip:
        converted = {k: v for k, v in converted.items() if not k.startswith("clip.")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, args.output)
    trained = sum(v.numel() for k, v in converted.items() if not k.startswith("clip."))
    logger.info(f"wrote {len(converted)} tensors ({trained:,} prompt-module parameters) to {args.output}")


if __name__ == "__main__":
    main()
