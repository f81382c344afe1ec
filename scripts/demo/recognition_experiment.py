"""The recognition experiment: `main.py --task recognition` on the temporal benchmark's counterfactual pairs,
every method trained with the same recipe for the same steps, against trained order-blind baselines.

For each seed S: write train and test pairs of which_moves and direction (dataloaders/counterfactual.py, the
benchmark's generator and random streams) and their recognition layout (dataloaders/counterfactual_recognition.py:
which_moves, 12 classes, the moving object, "the red circle moves"; direction, 4 classes, the heading, "the object
moves right"); take the benchmark's tiny CLIP of S (temporal_benchmark.seed_clip: pre-trained on single frames of
such scenes, cached by its settings). Then per class set train each method with cross-entropy over the class
logits for --epochs (the same steps for all: the same training videos, batch and epochs; the two videos of a pair
in one batch, --train_group_size 2) and score the test videos once with the last epoch's weights (no selection
on test):

    single_frame   DGL on one frame (--max_frames 1): what one frame tells           } the order-blind
    dgl_shuffled   DGL, frames shuffled in training and evaluation: what the set of  } trained baselines
                   frames tells without their order                                  }
    dgl, stop, paper   DGL, STOP as released, STOP as the paper describes it (temporal_benchmark.METHODS' flags)
    meanp          the frozen CLIP zero-shot (meanP), an extra line, not the reference

Scores on test: top-1 over the test videos and the pair score (both videos of a pair classified right), each with a
95% bootstrap interval over the pairs; the gain of a method is its score minus the best order-blind trained
baseline's (single_frame, dgl_shuffled) of the same seed and class set, per score. The two videos of a test pair
have different classes and a single frame of either is drawn from the same distribution (frame 0 of a which_moves
pair is the same picture; a direction pair holds the same frames in opposite orders), so a pair score above 0 needs
more than one frame; for direction, more than the set of frames.

    python scripts/demo/recognition_experiment.py --seeds 0 1 2 --output outputs/recognition \\
        --results_md docs/RESULTS.md

Writes OUTPUT/recognition_benchmark.json (rows: class_set, method, seed, top1, pair_score with intervals, steps,
the gains and their reference; the mean and spread over the seeds; settings, machine) and OUTPUT/summary.md (the
tables); --results_md FILE replaces the part of FILE between the markers <!-- recognition_benchmark:begin --> and
<!-- recognition_benchmark:end --> with them. Finished runs (their eval_results.json) are read, not repeated, so
an interrupted experiment resumes and invocations on different seeds can run at once; --jobs N runs N of them at
once in worker processes (the temporal benchmark's pool); --report FILE prints the tables of a results file alone
(and puts them into --results_md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

import main as train_main
from benchmarks.bench_conv import load_average, machine
from dataloaders.counterfactual import NUM_FRAMES, write_split
from dataloaders.counterfactual_recognition import CLASS_SETS, CLASS_TEMPLATE, layout_paths, write_recognition_layout
from scripts.demo import temporal_benchmark
from scripts.demo.markdown_section import replace_section
from utils.engine.retrieval.pair_metrics import bootstrap_interval

ORDER_BLIND = ("single_frame", "dgl_shuffled")
TRAINED = (*ORDER_BLIND, "dgl", "stop", "paper")
# name -> (label, main.py flags of the model): the temporal benchmark's
METHODS = {"meanp": ("zero-shot meanP (frozen CLIP)", temporal_benchmark.METHODS["meanp"][1]),
           **{m: temporal_benchmark.METHODS[m] for m in TRAINED}}
SCORES = ("top1", "pair_score")
BEGIN, END = "<!-- recognition_benchmark:begin -->", "<!-- recognition_benchmark:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="folder for the data, the runs and the tables")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--class_sets", nargs="+", choices=CLASS_SETS, default=list(CLASS_SETS))
    parser.add_argument("--train_pairs", type=int, default=150, help="training pairs per class set")
    parser.add_argument("--test_pairs", type=int, default=100, help="test pairs per class set")
    parser.add_argument("--epochs", type=int, default=10, help="the same for every trained method")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--clip_steps", type=int, default=1000, help="tiny-CLIP pre-training steps")
    parser.add_argument("--clip_images", type=int, default=5000, help="stills of the tiny-CLIP pre-training")
    parser.add_argument("--clip_cache", default="outputs/tiny_clip_cache",
                        help="folder of pre-trained tiny CLIPs, one per settings and seed (the benchmark's)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each in its own process with (logical CPUs / jobs) torch threads and its "
                             "console output in OUTPUT/seedS/<class set>_<method>.console.txt")
    parser.add_argument("--results_md", default=None, help="a markdown file whose recognition section to replace")
    parser.add_argument("--report", type=Path, default=None,
                        help="a recognition_benchmark.json: print its tables (and put them into --results_md); "
                             "run nothing")
    args = parser.parse_args(argv)
    if args.report is None and args.output is None:
        parser.error("--output is required (or --report FILE)")
    for flag in ("train_pairs", "test_pairs", "epochs", "batch_size", "clip_steps", "clip_images", "jobs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if args.batch_size % 2:
        parser.error("--batch_size must be even (the two videos of a pair share a batch)")
    return args


def seed_data(args: argparse.Namespace, seed: int) -> Path:
    """The folder of `seed`: train and test pairs of every class set's task (whatever --class_sets, so invocations
    on other class sets share it) and their recognition layouts."""
    data = Path(args.output) / f"seed{seed}" / "data"
    for split, count in (("train", args.train_pairs), ("test", args.test_pairs)):
        write_split(str(data), split, CLASS_SETS, count, seed, progress=False)
    for class_set in CLASS_SETS:
        write_recognition_layout(data, class_set)
    return data


def run_method(args: argparse.Namespace, job: tuple[str, str], data: Path, clip: Path) -> Path:
    """The run folder of job (class set, method) on the seed of `data` (OUTPUT/seedS/data), trained and tested by
    main.main unless its eval_results.json exists (an interrupted run starts again)."""
    class_set, method = job
    seed = temporal_benchmark.seed_of(data)
    folder = data.parent / class_set / method
    if (folder / "eval_results.json").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    paths = layout_paths(data, class_set)
    argv = ["--task", "recognition", "--datatype", "csv", "--features_path", str(data / "videos"),
            "--train_csv", str(paths["train"]), "--test_csv", str(paths["test"]), "--class_list", str(paths["classes"]),
            "--class_template", CLASS_TEMPLATE, "--pretrained_clip_name", str(clip), "--max_frames", str(NUM_FRAMES),
            "--max_words", "16", "--precision", "fp32", "--device", "cpu", "--num_thread_reader", "0",
            "--batch_size_val", "64", "--seed", str(seed), "--visual_output_type", "average_frame_cls_token",
            "--no-plot_curves", "--output_dir", str(folder)]
    if method == "meanp":
        argv = ["--do_eval", *argv]
    else:  # the last epoch is tested: no selection on test
        argv = ["--do_train", "--do_eval", "--no-eval_every_epoch", "--train_group_size", "2", "--epochs",
                str(args.epochs), "--batch_size", str(args.batch_size), "--lr", str(args.lr), "--warmup_proportion",
                str(args.warmup_proportion), "--n_display", "100", *argv]
    train_main.main([*argv, *METHODS[method][1]])
    return folder


def pair_predictions(folder: Path, test_csv: Path) -> list[tuple[dict, dict]]:
    """The run's predictions_test.json entries ({"video", "label", "predicted"}) of the two videos of each test pair
    (consecutive lines of `test_csv`). ValueError naming the run when a test video was not scored."""
    predicted = {p["video"]: p for p in json.loads((folder / "predictions_test.json").read_text())}
    paths = [line.split(",")[0] for line in test_csv.read_text().splitlines()[1:]]
    missing = [p for p in paths if p not in predicted]
    if missing:
        raise ValueError(f"{folder}: test video {missing[0]} was not scored ({len(missing)} missing): every video of "
                         f"a pair must be decodable")
    return [(predicted[a], predicted[b]) for a, b in zip(paths[::2], paths[1::2])]


def score_row(folder: Path, test_csv: Path, trained: bool) -> dict:
    """top1 and pair_score (%) with their 95% bootstrap intervals over the pairs; same_answer, the % of pairs whose
    two videos got the same class (an order-blind model's answer to a clip and its reversal); the pair count, the
    optimizer steps of a trained run (0 for meanP) and its training seconds."""
    pairs = pair_predictions(folder, test_csv)
    correct = torch.tensor([[v["predicted"] == v["label"] for v in pair] for pair in pairs], dtype=torch.float64)
    per_pair = {"top1": correct.mean(1), "pair_score": correct.prod(1)}
    row = {"pairs": len(pairs)}
    for name, values in per_pair.items():
        row[name] = 100 * values.mean().item()
        row[f"{name}_ci95"] = bootstrap_interval(values)
    row["same_answer"] = 100 * sum(a["predicted"] == b["predicted"] for a, b in pairs) / len(pairs)
    results = json.loads((folder / "eval_results.json").read_text())
    return {**row, "steps": temporal_benchmark._steps(folder if trained else None),
            "train_seconds": results.get("train_seconds", 0.0)}


def add_gains(rows: list[dict]) -> None:
    """Per row, for each score: the gain over the best order-blind trained baseline of the same class set and seed
    (`<score>_gain`, None without one) and which baseline that was (`<score>_reference`)."""
    for row in rows:
        baselines = [r for r in rows if r["method"] in ORDER_BLIND and (r["class_set"], r["seed"]) ==
                     (row["class_set"], row["seed"])]
        for score in SCORES:
            best = max(baselines, key=lambda r: r[score], default=None)
            row[f"{score}_reference"] = best["method"] if best else None
            row[f"{score}_gain"] = row[score] - best[score] if best else None


def summarise(rows: list[dict]) -> list[dict]:
    """Per class set and method: seeds, and mean, population std, min, max over them of the scores and gains."""
    out = []
    for class_set in dict.fromkeys(r["class_set"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["class_set"] == class_set):
            runs = [r for r in rows if (r["class_set"], r["method"]) == (class_set, method)]
            entry = {"class_set": class_set, "method": method, "label": METHODS[method][0],
                     "seeds": [r["seed"] for r in runs], "steps": sorted({r["steps"] for r in runs})}
            for key in (*SCORES, *(f"{s}_gain" for s in SCORES), "same_answer", "train_seconds"):
                series = [r[key] for r in runs if r[key] is not None]
                entry[key] = {"mean": statistics.fmean(series), "std": statistics.pstdev(series),
                              "min": min(series), "max": max(series)} if series else None
            out.append(entry)
    return out


def _stats(stats: dict | None, sign: bool = False) -> str:
    if stats is None:
        return "-"
    number = "{:+.1f}" if sign else "{:.1f}"
    return (f"{number.format(stats['mean'])} ± {stats['std']:.1f} "
            f"({number.format(stats['min'])} to {number.format(stats['max'])})")


def report_text(result: dict) -> str:
    """The markdown tables of a results file: per class set, the mean over the seeds and the runs per seed."""
    settings, rows = result["settings"], result["rows"]
    classes = {"which_moves": "which_moves (12 classes: the moving object)",
               "direction": "direction (4 classes: the heading)"}
    lines = [f"Seeds {', '.join(map(str, sorted({r['seed'] for r in rows})))}; per class set "
             f"{settings['train_pairs']} training pairs, {settings['test_pairs']} test pairs; every trained method "
             f"{settings['epochs']} epochs (batch {settings['batch_size']}, lr {settings['lr']}), the last epoch "
             f"tested. Mean ± std over the seeds (min to max); gain = the score minus the best order-blind trained "
             f"baseline's (single frame, frames shuffled) of the same seed. Pair score: both videos of a test pair "
             f"classified right; same answer: the % of test pairs whose two videos got the same class.", ""]
    for class_set in dict.fromkeys(r["class_set"] for r in rows):
        lines += [f"### {classes[class_set]}", "",
                  "| method | top-1 | pair score | top-1 gain | pair-score gain | same answer for both | steps | "
                  "train s |", "|---|---|---|---|---|---|---|---:|"]
        for s in (s for s in result["summary"] if s["class_set"] == class_set):
            lines.append(f"| {s['label']} | {_stats(s['top1'])} | {_stats(s['pair_score'])} | "
                         f"{_stats(s['top1_gain'], True)} | {_stats(s['pair_score_gain'], True)} | "
                         f"{_stats(s['same_answer'])} | {', '.join(map(str, s['steps']))} | "
                         f"{s['train_seconds']['mean']:.0f} |")
        lines += ["", "| seed | method | top-1 [95% interval] | pair score [95% interval] | pair-score gain (over) |",
                  "|---:|---|---|---|---|"]
        for r in (r for r in rows if r["class_set"] == class_set):
            gain = "-" if r["pair_score_gain"] is None else f"{r['pair_score_gain']:+.1f} ({r['pair_score_reference']})"
            lines.append(f"| {r['seed']} | {r['label']} | {r['top1']:.1f} [{r['top1_ci95'][0]:.1f}, "
                         f"{r['top1_ci95'][1]:.1f}] | {r['pair_score']:.1f} [{r['pair_score_ci95'][0]:.1f}, "
                         f"{r['pair_score_ci95'][1]:.1f}] | {gain} |")
        lines.append("")
    host = result["machine"]
    lines.append(f"Machine: {host['cpu']} ({host['logical_cpus']} logical CPUs), torch {host['torch']}, "
                 f"{host['threads']} torch threads, load average at the start {host['load_at_start']}; "
                 f"{result['seconds']:.0f} s for the invocation that wrote the file.")
    return "\n".join(lines) + "\n"


def write_report(result: dict, out: Path | None, results_md: str | None) -> str:
    """summary.md in `out` (None: none), and the tables between BEGIN and END of `results_md`; returns them."""
    text = report_text(result)
    if out is not None:
        (out / "summary.md").write_text(text)
    if results_md:
        replace_section(results_md, BEGIN, END, text)
    return text


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.report is not None:
        result = json.loads(args.report.read_text())
        print(write_report(result, None, args.results_md))
        return result
    started, load_at_start = time.time(), load_average()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    prepared, clips = {}, {}
    for seed in args.seeds:
        print(f"== seed {seed}: data, tiny CLIP", flush=True)
        data = seed_data(args, seed)
        clip, clips[str(seed)] = temporal_benchmark.seed_clip(args, seed)
        prepared[seed] = data, clip
    jobs = [(seed, (class_set, method)) for seed in args.seeds for class_set in args.class_sets
            for method in args.methods]
    print(f"== {len(jobs)} runs, {args.jobs} at once ({time.time() - started:.0f} s)", flush=True)
    folders = temporal_benchmark.run_jobs(args, jobs, prepared, run_method)
    rows = [{"class_set": class_set, "method": method, "label": METHODS[method][0], "seed": seed,
             **score_row(folders[seed, (class_set, method)], layout_paths(prepared[seed][0], class_set)["test"],
                         method != "meanp")}
            for seed, (class_set, method) in jobs]
    add_gains(rows)
    result = {"rows": rows, "summary": summarise(rows), "tiny_clips": clips,
              "settings": {k: v for k, v in vars(args).items() if k not in ("results_md", "report", "output", "jobs")},
              "machine": {**machine(), "load_at_start": load_at_start}, "seconds": time.time() - started}
    (out / "recognition_benchmark.json").write_text(json.dumps(result, indent=1) + "\n")
    text = write_report(result, out, args.results_md)
    print(f"\n{text}\nwritten to {out / 'recognition_benchmark.json'} and {out / 'summary.md'}")
    return result


if __name__ == "__main__":
    main()
