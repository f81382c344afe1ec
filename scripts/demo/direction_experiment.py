"""The direction experiment: does a method tell a video from the same video played backwards? Several seeds,
several methods, one table with the mean and the spread.

For each seed: generate the synthetic dataset (dataloaders/synthetic.py: a shape crossing the frame; the test set
is opposite-direction pairs), pre-train a tiny CLIP on single stills (tiny_clip_pretrain.py: it knows colours,
shapes and where an object is in ONE frame, nothing about motion), then train / evaluate every method with
main.py on that data and score the direction metrics of report.py. Methods (METHODS): meanP on the frozen CLIP,
DGL, STOP as released, STOP as the paper describes it, their spatial-only and temporal-only ablations, and
"frames shuffled": the trained STOP models evaluated with each test clip's frames in a fixed random order.

    python scripts/demo/direction_experiment.py --seeds 0 1 2 --output outputs/direction
    python scripts/demo/direction_experiment.py --seeds 0 --methods meanp dgl stop paper --output outputs/demo

Writes OUTPUT/results.json (every run), OUTPUT/summary.md (mean +- standard deviation over the seeds, and the
runs) and OUTPUT/summary.png (direction accuracy per method, one dot per seed). Runs already finished (their
eval_results.json exists) are read, not repeated, so an interrupted experiment resumes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from matplotlib.figure import Figure

import main as train_main
from benchmarks.bench_conv import load_average, machine
from dataloaders import synthetic
from scripts.demo import report, tiny_clip_pretrain
from utils.engine.run.curves import CURVES_FILE, plot_training_curves
from utils.engine.tasks import task_of_run

# name -> (label, main.py flags); "eval_of" methods evaluate another method's checkpoint instead of training
METHODS = {
    "meanp": ("meanP (frozen CLIP)", ["--prompt", "none"]),
    "dgl": ("DGL", ["--temporal_prompt", "none"]),
    "stop": ("STOP (released)", ["--temporal_prompt", "stop"]),
    "paper": ("STOP (paper)", ["--temporal_prompt", "paper"]),
    "stop_spatial": ("STOP (released), spatial prompt only", ["--temporal_prompt", "stop", "--stop_prompts",
                                                              "spatial"]),
    "stop_temporal": ("STOP (released), temporal prompt only", ["--temporal_prompt", "stop", "--stop_prompts",
                                                                "temporal"]),
    "paper_spatial": ("STOP (paper), spatial prompt only", ["--temporal_prompt", "paper", "--stop_prompts",
                                                            "spatial"]),
    "paper_temporal": ("STOP (paper), temporal prompt only", ["--temporal_prompt", "paper", "--stop_prompts",
                                                              "temporal"]),
    "stop_shuffled": ("STOP (released), test frames shuffled", ["--temporal_prompt", "stop"]),
    "paper_shuffled": ("STOP (paper), test frames shuffled", ["--temporal_prompt", "paper"]),
}
EVAL_OF = {"stop_shuffled": "stop", "paper_shuffled": "paper"}
DEFAULT_METHODS = list(METHODS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the data, the tiny CLIPs, the runs, the tables")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--num_train", type=int, default=240, help="training videos (3 captions each)")
    parser.add_argument("--num_test", type=int, default=48, help="test videos (opposite-direction pairs)")
    parser.add_argument("--video_frames", type=int, default=12, help="frames per generated video")
    parser.add_argument("--clip_steps", type=int, default=3000,
                        help="tiny-CLIP pre-training steps (1500 left seed 0's at 31%% held-out accuracy, see "
                             "docs/RESULTS.md)")
    parser.add_argument("--frames", type=int, default=4, help="--max_frames of the runs")
    parser.add_argument("--epochs", type=int, default=72,
                        help="with --train_pairs an epoch is num_train / batch_size steps (15 by default); 36 left "
                             "the released STOP at chance on one seed (docs/RESULTS.md)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup_proportion", type=float, default=0.3,
                        help="main.py's linear warm-up share of the steps (its default 0.1 let the released STOP "
                             "collapse to one embedding on seed 1 with --train_pairs, docs/RESULTS.md)")
    parser.add_argument("--train_pairs", action=argparse.BooleanOptionalAction, default=True,
                        help="training videos in opposite-direction pairs, each pair in one batch "
                             "(main.py --train_group_size 2), one random caption per video and epoch: the twin is "
                             "a hard negative that differs only in direction. --no-train_pairs: independent "
                             "videos, one item per caption (--expand_msrvtt_sentences), as before (docs/RESULTS.md)")
    parser.add_argument("--readout", default="average_frame_cls_token", help="--visual_output_type of the runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained / evaluated at once, each in its own process with (logical CPUs / "
                             "jobs) torch threads and its console output in seedS/METHOD.console.txt; 1: one after "
                             "the other in this process with torch's default threads")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: table the runs that have finished (e.g. while others still run)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further main.py flags for every trained run (last on the command line)")
    args = parser.parse_args(argv)
    for flag in ("num_train", "num_test", "video_frames", "clip_steps", "frames", "epochs", "batch_size", "jobs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if not 0 <= args.warmup_proportion <= 1:
        parser.error(f"--warmup_proportion must lie in [0, 1], got {args.warmup_proportion}")
    if args.num_test % 2:
        parser.error("--num_test must be even (the test videos come in opposite-direction pairs)")
    missing = sorted({EVAL_OF[m] for m in args.methods if m in EVAL_OF} - set(args.methods))
    if missing:
        parser.error(f"the shuffled-frames rows evaluate trained runs: add {' '.join(missing)} to --methods")
    return args


def seed_data(args: argparse.Namespace, seed: int) -> tuple[Path, Path, dict]:
    """(data folder, tiny CLIP file, its pre-training report) of `seed`, made on first use."""
    root = Path(args.output) / f"seed{seed}"
    data, clip = root / "data", root / "tiny_clip.pt"
    if not (data / "synthetic_metadata.json").is_file():
        synthetic.main(["--output_root", str(data), "--num_train", str(args.num_train), "--num_test",
                        str(args.num_test), "--seed", str(seed), "--image_size", "64", "--num_frames",
                        str(args.video_frames), *(["--train_pairs"] if args.train_pairs else [])])
    if not clip.with_suffix(".json").is_file():
        tiny_clip_pretrain.main(["--output", str(clip), "--seed", str(seed), "--steps", str(args.clip_steps)])
    return data, clip, json.loads(clip.with_suffix(".json").read_text())


def run_method(args: argparse.Namespace, method: str, seed: int, data: Path, clip: Path) -> Path:
    """The run folder of `method` on `seed` (trained / evaluated by main.main unless already finished)."""
    run = Path(args.output) / f"seed{seed}" / method
    if (run / "eval_results.json").is_file():
        return run
    common = ["--datatype", "msrvtt", "--train_csv", str(data / "MSRVTT_train.9k.csv"),
              "--data_path", str(data / "MSRVTT_data.json"), "--val_csv", str(data / "MSRVTT_JSFUSION_test.csv"),
              "--features_path", str(data / "videos"), "--pretrained_clip_name", str(clip),
              "--max_frames", str(args.frames), "--max_words", "16", "--precision", "fp32", "--device", "cpu",
              "--num_thread_reader", "0", "--batch_size_val", "24", "--seed", str(seed), "--save_similarity",
              "--output_dir", str(run), *METHODS[method][1]]
    if method == "meanp":
        argv = ["--do_eval", *common]
    elif method in EVAL_OF:
        trained = Path(args.output) / f"seed{seed}" / EVAL_OF[method]
        argv = ["--do_eval", "--init_model", str(trained), "--eval_frame_order", "shuffled",
                "--visual_output_type", args.readout, *common]
    else:
        pairing = ["--train_group_size", "2"] if args.train_pairs else ["--expand_msrvtt_sentences"]
        argv = ["--do_train", "--do_eval", *pairing, "--no-eval_every_epoch",
                "--epochs", str(args.epochs), "--batch_size", str(args.batch_size), "--lr", str(args.lr),
                "--warmup_proportion", str(args.warmup_proportion),
                "--n_display", "100", "--visual_output_type", args.readout, *common, *args.extra]
    if run.exists():  # an interrupted run: start it again
        for stale in run.iterdir():
            stale.unlink()
    train_main.main(argv)
    return run


def run_in_worker(args: argparse.Namespace, method: str, seed: int, data: Path, clip: Path) -> Path:
    """run_method in a --jobs worker process: its console output goes to seedS/METHOD.console.txt."""
    console = Path(args.output) / f"seed{seed}" / f"{method}.console.txt"
    with open(console, "w") as file, contextlib.redirect_stdout(file), contextlib.redirect_stderr(file):
        return run_method(args, method, seed, data, clip)


def worker_threads(jobs: int) -> int:
    """Torch threads of each of `jobs` worker processes: the logical CPUs shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_all(args: argparse.Namespace, runs: list[tuple[str, int]], prepared: dict) -> dict:
    """{(method, seed): run folder} of `runs`, in this process (--jobs 1) or --jobs worker processes; the
    frames-shuffled evaluations start once the run they evaluate has finished."""
    def arguments(method, seed):
        return args, method, seed, *prepared[seed][:2]

    if args.jobs == 1:
        folders = {}
        for method, seed in runs:
            print(f"== seed {seed}: {METHODS[method][0]}", flush=True)
            folders[method, seed] = run_method(*arguments(method, seed))
        return folders
    threads = worker_threads(args.jobs)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    waves = [[r for r in runs if r[0] not in EVAL_OF], [r for r in runs if r[0] in EVAL_OF]]
    folders = {}
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_worker_threads,
                             initargs=(threads,)) as pool:
        for wave in waves:
            futures = {run: pool.submit(run_in_worker, *arguments(*run)) for run in wave}
            print(f"== {len(wave)} runs, {args.jobs} at once, {threads} torch threads each: "
                  f"{', '.join(f'seed {s} {m}' for m, s in wave)} (console output: seedS/METHOD.console.txt)",
                  flush=True)
            for (method, seed), future in futures.items():
                folders[method, seed] = future.result()
                print(f"   done: seed {seed} {METHODS[method][0]}", flush=True)
    return folders


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Mean and standard deviation over the seeds per method (population std over the seeds run)."""
    out = []
    keys = ("direction_t2v", "direction_v2t", "t2v_R1", "v2t_R1", "object_R1", "train_seconds")
    for method in methods:
        runs = [r for r in rows if r["key"] == method]
        if not runs:
            continue
        entry = {"key": method, "method": METHODS[method][0], "seeds": [r["seed"] for r in runs]}
        for key in keys:
            values = [r[key] for r in runs]
            entry[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
                          "min": min(values), "max": max(values)}
        out.append(entry)
    return out


def training_curves(out: Path, rows: list[dict]) -> list[str]:
    """The training-curve figures of the trained runs among `rows`, relative to `out` (drawn from a run's
    metrics.jsonl where main.py has not, e.g. runs older than the figure)."""
    figures = []
    for r in rows:
        run = out / f"seed{r['seed']}" / r["key"]
        if r["key"] == "meanp" or r["key"] in EVAL_OF:
            continue
        if not (run / CURVES_FILE).is_file():
            task = task_of_run(run)
            plot_training_curves(run, task.scalars, task.curves)
        figures.append(f"seed{r['seed']}/{r['key']}/{CURVES_FILE}")
    return figures


def markdown(summary: list[dict], rows: list[dict], args: argparse.Namespace, clips: dict, seconds: float,
             curves: list[str]) -> str:
    def cell(stats):
        return f"{stats['mean']:.1f} ± {stats['std']:.1f} ({stats['min']:.0f}-{stats['max']:.0f})"

    lines = [f"## Direction experiment: seeds {' '.join(map(str, args.seeds))}", "",
             "mean ± standard deviation over the seeds (min-max); direction = own video (caption) scored above its "
             "reversed twin's, chance 50%.", "",
             "| method | direction t2v | direction v2t | t2v R@1 | v2t R@1 | object R@1 | train s |",
             "|---|---|---|---|---|---|---:|"]
    for s in summary:
        lines.append(f"| {s['method']} | {cell(s['direction_t2v'])} | {cell(s['direction_v2t'])} | "
                     f"{cell(s['t2v_R1'])} | {cell(s['v2t_R1'])} | {cell(s['object_R1'])} | "
                     f"{s['train_seconds']['mean']:.0f} |")
    lines += ["", "Per run:", "", "| seed | method | direction t2v | direction v2t | t2v R@1 | v2t R@1 | object R@1 | "
              "trained params |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['method']} | {r['direction_t2v']:.1f} | {r['direction_v2t']:.1f} | "
                     f"{r['t2v_R1']:.1f} | {r['v2t_R1']:.1f} | {r['object_R1']:.1f} | {r['trainable_parameters']:,} |")
    accuracy = ", ".join(f"seed {seed} {100 * c['heldout_accuracy']:.1f}%" for seed, c in clips.items())
    lines += ["", f"Tiny CLIPs' held-out still accuracy (48 captions): {accuracy}.",
              f"Settings: {args.num_train} training / {args.num_test} test videos, {args.frames} frames, "
              f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr} (warm-up {args.warmup_proportion}), "
              f"readout {args.readout}"
              + (", training pairs in one batch (--train_pairs)" if args.train_pairs else "")
              + (f", extra {' '.join(args.extra)}" if args.extra else "") + ".",
              f"Machine: {args.machine['cpu']} ({args.machine['logical_cpus']} logical CPUs, torch "
              f"{args.machine['torch']}, "
              + (f"{args.machine['threads']} threads" if args.jobs == 1 else
                 f"{args.jobs} runs at once, {worker_threads(args.jobs)} threads each")
              + "), load average at the start "
              f"{args.load_at_start}; {seconds:.0f} s in all for this invocation."]
    if curves:
        lines += ["", "Training curves: " + ", ".join(f"[{c.split('/')[0]} {c.split('/')[1]}]({c})" for c in curves)
                  + "."]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], rows: list[dict], path: Path) -> None:
    """Direction accuracy t2v / v2t per method: bars at the mean, one dot per seed, chance at 50%."""
    width = 1.2 + 0.9 * len(summary)
    figure = Figure(figsize=(width, 4.2), dpi=100)
    left = 0.7 / width  # room for the y label at any width
    axes = figure.add_axes((left, 0.38, 0.98 - left, 0.55))
    for offset, key, colour in ((-0.2, "direction_t2v", "tab:blue"), (0.2, "direction_v2t", "tab:orange")):
        axes.bar([i + offset for i in range(len(summary))], [s[key]["mean"] for s in summary], width=0.38,
                 color=colour, alpha=0.6, label=key.replace("_", " "))
        for i, s in enumerate(summary):
            values = [r[key] for r in rows if r["key"] == s["key"]]
            axes.scatter([i + offset] * len(values), values, color=colour, s=12, zorder=3)
    axes.axhline(50, color="grey", linestyle="--", linewidth=1)
    axes.set_ylim(0, 105)
    axes.set_ylabel("direction accuracy (%)")
    axes.set_xticks(range(len(summary)), [s["method"] for s in summary], rotation=35, ha="right", fontsize=8)
    axes.legend(fontsize=8, loc="upper left")
    figure.savefig(path, format="png")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    args.machine, args.load_at_start = machine(), load_average()
    start = time.time()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows, clips, prepared = [], {}, {}
    for seed in args.seeds:
        if args.report_only and not (out / f"seed{seed}" / "tiny_clip.json").is_file():
            raise SystemExit(f"error: --report_only: seed {seed} has no tiny CLIP in {out} yet")
        data, clip, clips[seed] = seed_data(args, seed)
        prepared[seed] = data, clip, report.twins(json.loads((data / "synthetic_metadata.json").read_text()))
    runs = [(method, seed) for method in args.methods for seed in args.seeds  # the first rows complete first
            if not args.report_only or (out / f"seed{seed}" / method / "eval_results.json").is_file()]
    for (method, seed), folder in run_all(args, runs, prepared).items():
        summary = report.run_summary(METHODS[method][0], folder, prepared[seed][2])
        rows.append({"seed": seed, "key": method, "method": summary["method"],
                     "trainable_parameters": summary["trainable_parameters"],
                     "train_seconds": summary["train_seconds"], "t2v_R1": summary["t2v"]["R1"],
                     "v2t_R1": summary["v2t"]["R1"], "direction_t2v": summary["direction_t2v"],
                     "direction_v2t": summary["direction_v2t"], "object_R1": summary["object_R1"]})
    rows.sort(key=lambda r: (r["seed"], args.methods.index(r["key"])))
    summary = summarise(rows, args.methods)
    (out / "results.json").write_text(json.dumps({"runs": rows, "summary": summary, "tiny_clips": clips,
                                                  "args": vars(args)}, indent=1) + "\n")
    text = markdown(summary, rows, args, clips, time.time() - start, training_curves(out, rows))
    (out / "summary.md").write_text(text)
    plot(summary, rows, out / "summary.png")
    print(f"\n{text}\nwritten to {out / 'summary.md'}, {out / 'summary.png'} and {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    main()
