"""Re-normalise a saved similarity matrix (main.py --save_similarity) offline: dual softmax and / or QB-Norm.

    python scripts/renormalise.py runs/x_eval/similarity_test.pt --dual_softmax
    python scripts/renormalise.py runs/x_eval/similarity_test.pt --qb_norm --qb_norm_beta 20

Prints the raw and the post-processed metrics and writes them to <matrix>_post_processed.json beside the
matrix (or --output; an existing file only with --overwrite, the matrix itself never). QB-Norm needs the query
bank's similarities, which main.py saves in the same file (query_bank_similarity) when it evaluates with --qb_norm
--save_similarity. See utils/engine/retrieval/renormalisation.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from utils.engine.retrieval.metrics import format_metrics, metrics_from_similarity
from utils.engine.retrieval.renormalisation import (
    add_renormalisation_args,
    describe,
    methods_from_args,
    post_processed_metrics,
)
from utils.engine.run.cli import OneLineArgumentParser, errors_as_one_line, one_line
from utils.engine.runtime.log import write_json
from utils.output_file import check_output_file


def _shape(value: Any) -> str:
    """`value`'s shape as `tensor [2, 3]`, or its type when it is no tensor."""
    if isinstance(value, torch.Tensor):
        return f"a tensor {list(value.shape)}"
    return f"a {type(value).__name__}"


def renormalise_file(path: Path, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"similarity_file", "raw", "post_processed"} of the matrix file ``path``; ValueError for a file that is
    not one main.py wrote, or QB-Norm on a file without the query bank."""
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a similarity file of main.py --save_similarity ({one_line(error)})") from None
    if not isinstance(saved, dict) or not {"similarity", "caption_to_video"} <= set(saved):
        raise ValueError(f"{path}: not a similarity file of main.py --save_similarity (no similarity / "
                         "caption_to_video)")
    if "qb_norm" in methods and "query_bank_similarity" not in saved:
        raise ValueError(f"{path} holds no query_bank_similarity: evaluate with --qb_norm --save_similarity to "
                         "save the training captions' scores with it")
    sim, caption_to_video = saved["similarity"], saved["caption_to_video"]
    if not isinstance(sim, torch.Tensor) or sim.ndim != 2:
        raise ValueError(f"{path}: similarity must be a 2-D tensor [captions, videos], got {_shape(sim)}")
    if not isinstance(caption_to_video, torch.Tensor) or caption_to_video.shape != (len(sim),):
        raise ValueError(f"{path}: caption_to_video must be a 1-D tensor [{len(sim)}] (a video per caption), got "
                         f"{_shape(caption_to_video)}")
    return {"similarity_file": str(path), "raw": metrics_from_similarity(sim, caption_to_video),
            "post_processed": post_processed_metrics(sim, caption_to_video, methods,
                                                     saved.get("query_bank_similarity"))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("similarity", type=Path, help="a similarity_<split>.pt written by main.py --save_similarity")
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON to write (default: <similarity>_post_processed.json beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    add_renormalisation_args(parser)
    with errors_as_one_line():
        args = parser.parse_args(argv)
        methods = methods_from_args(args)
        if not methods:
            parser.error("nothing to do: pass --dual_softmax and/or --qb_norm")
        if not args.similarity.is_file():
            raise FileNotFoundError(f"similarity file not found: {args.similarity}")
        output = check_output_file(args.output or args.similarity.with_name(
            f"{args.similarity.stem}_post_processed.json"), "--output",
            [(args.similarity, "the similarity file read")], args.overwrite)
        result = renormalise_file(args.similarity, methods)
        write_json(output, result)
    print(f"raw:\n{format_metrics(result['raw'])}\n{describe(result['post_processed'])}\nwritten to {output}")
    return result


if __name__ == "__main__":
    main()
