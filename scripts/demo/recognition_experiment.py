"""The recognition demo: zero-shot, fine-tuned and few-shot action recognition on the generated videos, several
seeds, one table with the mean and the spread.

For each seed: generate the synthetic dataset and pre-train its tiny CLIP on single stills exactly as the
direction experiment does (direction_experiment.seed_data: the same folders, so either script reuses the
other's data and CLIPs), then run main.py --task recognition on the recognition layout (dataloaders/synthetic.py:
`--classes direction`, 4 classes "a shape moves from left to right" ..., or `direction_shape`, 12): the
frozen CLIP zero-shot (meanP), and DGL, STOP as released and STOP as the paper describes it trained with
cross-entropy over the class logits on all training videos, and the paper's STOP on --shots K videos per class.
The test set is the opposite-direction pairs: a clip and the same clip played backwards, so appearance alone
cannot tell their classes apart (meanP, blind to frame order, gets at most one of each pair right: <= 50%).

    python scripts/demo/recognition_experiment.py --seeds 0 1 2 --output outputs/recognition

Writes OUTPUT/recognition_results.json (every run), OUTPUT/recognition_summary.md (mean +- standard deviation
over the seeds, and the runs). Runs already finished (their eval_results.json exists) are read, not repeated.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import main as train_main
from benchmarks.bench_conv import load_average, machine
from dataloaders.synthetic import RECOGNITION_CLASSES
from scripts.demo.direction_experiment import METHODS as DIRECTION_METHODS
from scripts.demo.direction_experiment import seed_data

# name -> (label, main.py flags): each method's flags are the direction experiment's
METHODS = {
    "zero_shot": ("zero-shot meanP (frozen CLIP)", DIRECTION_METHODS["meanp"][1]),
    "dgl": ("DGL, fine-tuned", DIRECTION_METHODS["dgl"][1]),
    "stop": ("STOP (released), fine-tuned", DIRECTION_METHODS["stop"][1]),
    "paper": ("STOP (paper), fine-tuned", DIRECTION_METHODS["paper"][1]),
    "paper_few_shot": ("STOP (paper), K-shot", DIRECTION_METHODS["paper"][1]),
}
METRICS = ("top1", "top5", "mean_class_accuracy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the data, the tiny CLIPs, the runs, the table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--classes", choices=RECOGNITION_CLASSES, default="direction")
    parser.add_argument("--shots", type=int, default=8, help="training videos per class of the K-shot runs")
    parser.add_argument("--num_train", type=int, default=240, help="training videos")
    parser.add_argument("--num_test", type=int, default=48, help="test videos (opposite-direction pairs)")
    parser.add_argument("--video_frames", type=int, default=12, help="frames per generated video")
    parser.add_argument("--clip_steps", type=int, default=3000, help="tiny-CLIP pre-training steps")
    parser.add_argument("--frames", type=int, default=4, help="--max_frames of the runs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--few_shot_epochs", type=int, default=40,
                        help="epochs of the K-shot runs (their epochs have K x classes / batch steps)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--readout", default="average_frame_cls_token", help="--visual_output_type of the runs")
    args = parser.parse_args(argv)
    # seed_data writes a missing data folder with independently drawn training videos (no --train_pairs); a folder
    # the direction experiment wrote first is used as it is (its default --train_pairs: training twins)
    args.train_pairs = False
    for flag in ("num_train", "num_test", "video_frames", "clip_steps", "frames", "epochs", "few_shot_epochs",
                 "batch_size", "shots"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    return args


def run_method(args: argparse.Namespace, method: str, seed: int, data: Path, clip: Path) -> dict:
    """The test results of `method` on `seed` (trained / evaluated by main.main unless already finished)."""
    run = Path(args.output) / f"seed{seed}" / f"recognition_{args.classes}" / method
    if not (run / "eval_results.json").is_file():
        argv = ["--task", "recognition", "--datatype", "csv", "--features_path", str(data / "videos"),
                "--train_csv", str(data / f"recognition_{args.classes}_train.csv"),
                "--val_csv", str(data / f"recognition_{args.classes}_test.csv"),
                "--class_list", str(data / f"recognition_{args.classes}_classes.txt"), "--class_template", "a {name}",
                "--pretrained_clip_name", str(clip), "--max_frames", str(args.frames), "--max_words", "16",
                "--precision", "fp32", "--device", "cpu", "--num_thread_reader", "0", "--batch_size_val", "24",
                "--seed", str(seed), "--output_dir", str(run), "--overwrite", *METHODS[method][1]]
        if method == "zero_shot":
            argv = ["--do_eval", *argv]
        else:  # the last epoch is evaluated: no model selection on the test set
            few_shot = method.endswith("few_shot")
            argv = ["--do_train", "--do_eval", "--no-eval_every_epoch",
                    "--epochs", str(args.few_shot_epochs if few_shot else args.epochs),
                    "--batch_size", str(args.batch_size), "--lr", str(args.lr), "--n_display", "50",
                    "--visual_output_type", args.readout, *argv, *(["--shots", str(args.shots)] if few_shot else [])]
        train_main.main(argv)
    results = json.loads((run / "eval_results.json").read_text())
    return {"seed": seed, "key": method, "method": METHODS[method][0],
            "train_seconds": results.get("train_seconds", 0.0), **{k: results["test"][k] for k in METRICS},
            "count": results["test"]["count"]}


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Mean, population standard deviation, min and max over the seeds per method, and the gain in top-1 over
    the zero-shot run of the same seed where there is one."""
    zero_shot = {r["seed"]: r["top1"] for r in rows if r["key"] == "zero_shot"}
    out = []
    for method in methods:
        runs = [r for r in rows if r["key"] == method]
        if not runs:
            continue
        entry = {"key": method, "method": METHODS[method][0], "seeds": [r["seed"] for r in runs]}
        values = {k: [r[k] for r in runs] for k in (*METRICS, "train_seconds")}
        if all(r["seed"] in zero_shot for r in runs):
            values["top1_gain"] = [r["top1"] - zero_shot[r["seed"]] for r in runs]
        for key, series in values.items():
            entry[key] = {"mean": statistics.fmean(series), "std": statistics.pstdev(series), "min": min(series),
                          "max": max(series)}
        out.append(entry)
    return out


def markdown(summary: list[dict], rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    def cell(stats):
        return f"{stats['mean']:.1f} ± {stats['std']:.1f} ({stats['min']:.1f} to {stats['max']:.1f})"

    lines = [f"## Recognition demo ({args.classes} classes): seeds {' '.join(map(str, args.seeds))}", "",
             "mean ± standard deviation over the seeds (min to max); top-1 gain = top-1 minus the zero-shot top-1 of "
             "the same seed.", "",
             "| method | top-1 | top-5 | mean class accuracy | top-1 gain over zero-shot | train s |",
             "|---|---|---|---|---|---:|"]
    for s in summary:
        gain = cell(s["top1_gain"]) if "top1_gain" in s else "n/a"
        lines.append(f"| {s['method']} | {cell(s['top1'])} | {cell(s['top5'])} | {cell(s['mean_class_accuracy'])} | "
                     f"{gain} | {s['train_seconds']['mean']:.0f} |")
    lines += ["", "Per run:", "", "| seed | method | top-1 | top-5 | mean class accuracy | test videos |",
              "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['method']} | {r['top1']:.1f} | {r['top5']:.1f} | "
                     f"{r['mean_class_accuracy']:.1f} | {r['count']} |")
    lines += ["", f"Settings: {args.num_train} training / {args.num_test} test videos, {args.frames} frames, "
              f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, readout {args.readout}, K-shot "
              f"K = {args.shots} videos per class for {args.few_shot_epochs} epochs.",
              f"Machine: {args.machine['cpu']} ({args.machine['logical_cpus']} logical CPUs, torch "
              f"{args.machine['torch']}, {args.machine['threads']} threads), load average at the start "
              f"{args.load_at_start}; {seconds:.0f} s in all for this invocation."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    args.machine, args.load_at_start = machine(), load_average()
    start = time.time()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    prepared = {seed: seed_data(args, seed)[:2] for seed in args.seeds}
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            print(f"== seed {seed}: {METHODS[method][0]}", flush=True)
            rows.append(run_method(args, method, seed, *prepared[seed]))
    rows.sort(key=lambda r: (r["seed"], args.methods.index(r["key"])))
    summary = summarise(rows, args.methods)
    (out / "recognition_results.json").write_text(json.dumps({"runs": rows, "summary": summary, "args": vars(args)},
                                                             indent=1) + "\n")
    text = markdown(summary, rows, args, time.time() - start)
    (out / "recognition_summary.md").write_text(text)
    print(f"\n{text}\nwritten to {out / 'recognition_summary.md'} and {out / 'recognition_results.json'}")
    return rows


if __name__ == "__main__":
    main()
