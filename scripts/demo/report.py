"""The demo's comparison table: retrieval metrics plus direction metrics on the synthetic test set.

The synthetic test set (``dataloaders.synthetic``) consists of opposite-direction pairs: two videos identical
but for the direction of motion (one is the other played backwards), captioned alike but for the direction.
A model that only sees frames one at a time cannot tell the two apart. Besides R@k we report:
  direction t2v   for each caption, is its own video scored above its twin? (ties count 1/2; chance 50%)
  direction v2t   for each video, is its best own caption scored above the twin's best caption?
  object R@1      t2v top-1 is the caption's video or its twin (colour and shape right, direction ignored)

    python scripts/demo/report.py --metadata DATA/synthetic_metadata.json --output_dir OUT \
        --runs "meanP (frozen CLIP)=OUT/meanp" "DGL=OUT/dgl" "STOP=OUT/stop"

reads each run's eval_results.json, hparams.json and similarity_test.pt (main.py --save_similarity) and writes
OUT/results.md and OUT/results.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python scripts/demo/<script>.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from dataloaders.synthetic import OPPOSITE  # noqa: E402

TWIN_KEYS = ("colour", "shape", "size", "cross", "background")


def twins(metadata: list[dict]) -> dict[str, str]:
    """video_id -> the test video identical but for the opposite direction (unpaired videos are left out)."""
    test = [m for m in metadata if m["split"] == "test"]
    by_look = {(tuple(map(str, (m[k] for k in TWIN_KEYS))), m["direction"]): m["video_id"] for m in test}
    out = {}
    for m in test:
        twin = by_look.get((tuple(map(str, (m[k] for k in TWIN_KEYS))), OPPOSITE[m["direction"]]))
        if twin is not None:
            out[m["video_id"]] = twin
    return out


def _win(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a > b).double() + 0.5 * (a == b).double()


def direction_metrics(similarity: torch.Tensor, caption_to_video: torch.Tensor, video_ids: list[str],
                      twin_of: dict[str, str]) -> dict[str, float]:
    """Pairwise direction accuracies (percent) and object R@1 from a [Nt, Nv] similarity matrix."""
    column = {v: i for i, v in enumerate(video_ids)}
    twin_index = torch.tensor([column.get(twin_of.get(v, ""), -1) for v in video_ids])
    caption_twin = twin_index[caption_to_video]
    paired = caption_twin >= 0
    rows = torch.nonzero(paired).flatten()
    own = similarity[rows, caption_to_video[rows]]
    other = similarity[rows, caption_twin[rows]]
    top = similarity.argmax(1)
    object_hit = (top == caption_to_video) | (top == caption_twin)
    # best caption of each video, and of its twin, scored against the video
    best = torch.full((len(video_ids), len(video_ids)), float("-inf"), dtype=similarity.dtype)
    best = best.scatter_reduce(1, caption_to_video.expand(len(video_ids), -1), similarity.t(), reduce="amax")
    videos = torch.nonzero(twin_index >= 0).flatten()
    v2t = _win(best[videos, videos], best[videos, twin_index[videos]])
    return {"direction_t2v": 100 * _win(own, other).mean().item(), "direction_v2t": 100 * v2t.mean().item(),
            "object_R1": 100 * object_hit.double().mean().item(), "pairs": int(len(videos) // 2)}


def run_summary(name: str, run_dir: Path, twin_of: dict[str, str]) -> dict:
    results = json.loads((run_dir / "eval_results.json").read_text())
    hparams = json.loads((run_dir / "hparams.json").read_text())
    sim = torch.load(run_dir / "similarity_test.pt", weights_only=True)
    test = results["test"]
    return {"method": name, "trainable_parameters": hparams["parameters"]["trainable"],
            "train_seconds": results.get("train_seconds", 0.0),
            "t2v": test["t2v"], "v2t": test["v2t"],
            **direction_metrics(sim["similarity"], sim["caption_to_video"], sim["video_ids"], twin_of)}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| method | trained params | t2v R@1 | t2v R@5 | t2v MnR | v2t R@1 | v2t R@5 | direction t2v | "
             "direction v2t | object R@1 | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['trainable_parameters']:,} | {r['t2v']['R1']:.1f} | {r['t2v']['R5']:.1f} | "
                     f"{r['t2v']['MnR']:.1f} | {r['v2t']['R1']:.1f} | {r['v2t']['R5']:.1f} | "
                     f"{r['direction_t2v']:.1f} | {r['direction_v2t']:.1f} | {r['object_R1']:.1f} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", required=True, help="synthetic_metadata.json of the generated dataset")
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR", help="main.py output folders")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--title", default="Demo on generated videos")
    args = parser.parse_args(argv)
    twin_of = twins(json.loads(Path(args.metadata).read_text()))
    rows = []
    for spec in args.runs:
        name, _, folder = spec.rpartition("=")
        if not name:
            parser.error(f"--runs entries are NAME=DIR, got {spec!r}")
        rows.append(run_summary(name, Path(folder), twin_of))
    table = markdown_table(rows)
    notes = (f"Test set: {rows[0]['t2v']['count']} captions / videos in {rows[0]['pairs']} opposite-direction "
             "pairs. direction = own video (caption) scored above its reversed twin's, chance 50%; object R@1 = "
             "top-1 has the right colour and shape.")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"## {args.title}\n\n{table}\n\n{notes}\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{table}\n\n{notes}\nwritten to {out / 'results.md'} and {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    main()
