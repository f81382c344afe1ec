"""The temporal benchmark: which method tells the two videos of a counterfactual pair apart, and why.

For each seed S: generate the four tasks' pairs (dataloaders/counterfactual.py: train, val and test from their
own random streams), pre-train a tiny CLIP on single frames of such scenes (scripts/demo/tiny_clip_pretrain.py
--stills benchmark: it learns which objects a frame shows, nothing about motion; cached by its settings), run the
shortcut probes (scripts/demo/shortcut_probes.py), then train every method with main.py on the four tasks at once (the
same steps for all; the two videos of a pair in one batch, --train_group_size 2), for each learning rate of
--lrs. Each trained run is scored on val; the learning rate with the best mean val group score is chosen per
method and seed, and only the chosen run is scored on test, once, with its controls (test frames reversed,
shuffled). Pair scores (utils/engine/retrieval/pair_metrics.py): text, video, group with 95% bootstrap intervals
over the pairs, per task; t2v R@1 over the whole test set. STOP's mechanism on test (scripts/demo/prompt_mechanism.py):
how often the released spatial mask and the paper's selected patches fall on the moving object, and how the
paper's inserted prompt counts follow the motion in each frame gap.

    python scripts/demo/temporal_benchmark.py --seeds 0 1 2 --jobs 2 --output outputs/temporal_benchmark

Writes OUTPUT/temporal_benchmark.json (rows: task, method, seed, text/video/group score with intervals, r1_t2v,
steps, the chosen lr and the val scores it was chosen on; the probes; the mechanism), OUTPUT/summary.md (the
tables), OUTPUT/summary.png (group scores with intervals), OUTPUT/mechanism.png and OUTPUT/prompts_{stop,paper}.png
(one test video's frames with STOP's selection and inserted prompt counts drawn on them). Finished runs are read, not
repeated, so an interrupted benchmark resumes. --results_md FILE replaces the part of FILE between the markers
<!-- temporal_benchmark:begin --> and <!-- temporal_benchmark:end --> with the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

import main as train_main
from benchmarks.bench_conv import load_average, machine
from dataloaders.counterfactual import NUM_FRAMES, SPLIT_LISTS, TASKS, write_split
from scripts.demo import prompt_mechanism, shortcut_probes, tiny_clip_pretrain
from scripts.demo.benchmark_report import write_report
from utils.atomic_file import write_atomic
from utils.engine.retrieval.pair_metrics import pair_scores

# name -> (label, main.py flags of the model); "meanp" is not trained
METHODS = {
    "meanp": ("meanP (frozen CLIP)", ["--prompt", "none"]),
    "single_frame": ("single frame (DGL on 1 frame)", ["--temporal_prompt", "none", "--max_frames", "1"]),
    "dgl_shuffled": ("DGL, frames shuffled (order-blind)", ["--temporal_prompt", "none", "--train_frame_order",
                                                            "shuffled", "--eval_frame_order", "shuffled"]),
    "dgl": ("DGL", ["--temporal_prompt", "none"]),
    "stop": ("STOP (released)", ["--temporal_prompt", "stop"]),
    "stop_spatial": ("STOP (released), spatial only", ["--temporal_prompt", "stop", "--stop_prompts", "spatial"]),
    "stop_temporal": ("STOP (released), temporal only", ["--temporal_prompt", "stop", "--stop_prompts",
                                                         "temporal"]),
    "paper": ("STOP (paper)", ["--temporal_prompt", "paper"]),
    "paper_spatial": ("STOP (paper), spatial only", ["--temporal_prompt", "paper", "--stop_prompts", "spatial"]),
    "paper_temporal": ("STOP (paper), temporal only", ["--temporal_prompt", "paper", "--stop_prompts",
                                                       "temporal"]),
}
# control -> (label, the method whose chosen run it evaluates, --eval_frame_order)
CONTROLS = {f"{m}_test_{order}": (f"{METHODS[m][0]}, test frames {order}", m, order)
            for m in ("dgl", "stop", "paper") for order in ("reversed", "shuffled")}
MECHANISM_METHODS = ("stop", "paper")
# a training step's time relative to the single-frame DGL's (the demo's epochs, one thread each, 2 cores): the
# longest runs start first, so that with --jobs 2 the short ones fill the other core
STEP_COST = {"single_frame": 1.0, "dgl": 1.6, "dgl_shuffled": 1.6, "paper": 2.2, "paper_spatial": 2.2,
             "paper_temporal": 2.2, "stop": 3.7, "stop_spatial": 3.7, "stop_temporal": 3.7}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the data, the runs and the tables")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--controls", nargs="*", choices=list(CONTROLS), default=list(CONTROLS),
                        help="evaluations of a chosen run with other test frame orders (its method must be run)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--train_pairs", type=int, default=150, help="training pairs per task")
    parser.add_argument("--val_pairs", type=int, default=50, help="validation pairs per task")
    parser.add_argument("--test_pairs", type=int, default=200, help="test pairs per task")
    parser.add_argument("--epochs", type=int, default=6, help="the same for every trained method")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3],
                        help="learning rates tried per method; the best mean val group score is chosen")
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--clip_steps", type=int, default=2000, help="tiny-CLIP pre-training steps")
    parser.add_argument("--clip_images", type=int, default=10000, help="stills of the tiny-CLIP pre-training")
    parser.add_argument("--clip_cache", default="outputs/tiny_clip_cache",
                        help="folder of pre-trained tiny CLIPs, one per settings and seed (reused by later runs)")
    parser.add_argument("--probe_pairs", type=int, nargs=3, default=[1000, 300, 8000], metavar=("TRAIN", "VAL",
                                                                                                  "TEST"),
                        help="pairs per task of the shortcut probes' train, val and test streams (8,000 test pairs: "
                             "of 144 single-frame probes at chance (4 tasks x 6 frames x 2 probes x 3 seeds) the "
                             "highest upper interval end is expected near 53; at 2,000 pairs, near 55, the limit)")
    parser.add_argument("--no_probes", action="store_true", help="skip the shortcut probes")
    parser.add_argument("--update_probes", action="store_true",
                        help="run only the shortcut probes (at --probe_pairs) of the seeds in an existing "
                             "OUTPUT/temporal_benchmark.json, replace its probes and rewrite the tables; the "
                             "trained runs are neither needed nor touched")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each in its own process with (logical CPUs / jobs) torch threads and "
                             "its console output in seedS/RUN.console.txt")
    parser.add_argument("--results_md", default=None, help="a markdown file whose benchmark section to replace")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further main.py flags for every trained run (last on the command line)")
    args = parser.parse_args(argv)
    for flag in ("train_pairs", "val_pairs", "test_pairs", "epochs", "batch_size", "clip_steps", "jobs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if args.batch_size % 2:
        parser.error("--batch_size must be even (the two videos of a pair share a batch)")
    missing = sorted({CONTROLS[c][1] for c in args.controls} - set(args.methods))
    if missing:
        parser.error(f"the controls evaluate trained runs: add {' '.join(missing)} to --methods")
    return args


def seed_data(args: argparse.Namespace, seed: int) -> Path:
    """The benchmark's folder for `seed` (train / val / test written on first use; resumable)."""
    data = Path(args.output) / f"seed{seed}" / "data"
    for split, count in (("train", args.train_pairs), ("val", args.val_pairs), ("test", args.test_pairs)):
        write_split(str(data), split, args.tasks, count, seed, progress=False)
    return data


def seed_clip(args: argparse.Namespace, seed: int) -> tuple[Path, dict]:
    """The tiny CLIP of `seed` (from --clip_cache, pre-trained into it on first use) and its report."""
    settings = ["--stills", "benchmark", "--steps", str(args.clip_steps), "--num_images", str(args.clip_images),
                "--min_logit_scale", "30", "--seed", str(seed)]
    key = hashlib.sha256(" ".join(settings).encode()).hexdigest()[:12]
    clip = Path(args.clip_cache) / f"tiny_clip_{key}.pt"
    if not clip.with_suffix(".json").is_file():
        tiny_clip_pretrain.main(["--output", str(clip), *settings])
    return clip, json.loads(clip.with_suffix(".json").read_text())


def seed_probes(args: argparse.Namespace, seed: int) -> list[dict]:
    """The shortcut probes' rows of `seed` for --tasks at --probe_pairs
    (OUTPUT/seedS/probes_<train>_<val>_<test>.json, computed on first use)."""
    train, val, test = args.probe_pairs
    probe_file = Path(args.output) / f"seed{seed}" / f"probes_{train}_{val}_{test}.json"
    if not probe_file.is_file():
        shortcut_probes.main(["--seed", str(seed), "--tasks", *args.tasks, "--train_pairs", str(train),
                              "--val_pairs", str(val), "--test_pairs", str(test), "--output", str(probe_file)])
    return json.loads(probe_file.read_text())


PREPARATIONS = {"seed_clip": "tiny CLIP", "seed_data": "videos", "seed_probes": "shortcut probes"}


def prepare(args: argparse.Namespace) -> tuple[dict, dict, list[dict]]:
    """({seed: (data folder, tiny CLIP path)}, {seed: the tiny CLIP's report}, the probe rows of every seed).
    With --jobs > 1 the preparations run side by side in worker processes, the CLIP pre-trainings (the longest)
    first."""
    calls = [(seed_clip, seed) for seed in args.seeds] + [(seed_data, seed) for seed in args.seeds]
    calls += [] if args.no_probes else [(seed_probes, seed) for seed in args.seeds]
    started, results = time.time(), {}

    def finished(call: tuple, value) -> None:
        results[call] = value
        _progress(len(results), len(calls), started, f"{PREPARATIONS[call[0].__name__]} of seed {call[1]}")
    if args.jobs == 1:
        for call in calls:
            finished(call, call[0](args, call[1]))
    else:
        with _worker_pool(args.jobs) as pool:
            futures = {pool.submit(call[0], args, call[1]): call for call in calls}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    prepared = {seed: (results[seed_data, seed], results[seed_clip, seed][0]) for seed in args.seeds}
    clips = {seed: results[seed_clip, seed][1] for seed in args.seeds}
    probes = [] if args.no_probes else [row for seed in args.seeds for row in results[seed_probes, seed]]
    return prepared, clips, probes


def update_probes(args: argparse.Namespace) -> dict:
    """--update_probes: the probes of OUTPUT/temporal_benchmark.json's seeds and tasks re-run at --probe_pairs and
    put in its place (protocol["probes"] records when, at what size, on what machine); tables rewritten."""
    results = Path(args.output) / "temporal_benchmark.json"
    if not results.is_file():
        raise SystemExit(f"error: --update_probes needs a finished benchmark: {results} does not exist")
    result = json.loads(results.read_text())
    started, load_at_start = time.time(), load_average()
    run_args = result["protocol"]["args"]
    args.tasks = run_args["tasks"]
    result["probes"] = [row for seed in run_args["seeds"] for row in seed_probes(args, seed)]
    run_args["probe_pairs"] = args.probe_pairs
    result["protocol"]["probes"] = {"pairs": args.probe_pairs, "updated": time.strftime("%Y-%m-%d"),
                                    "machine": {**machine(), "load_at_start": load_at_start},
                                    "seconds": time.time() - started}
    _write_json(results, result)
    print(write_report(result, Path(args.output), args.results_md))
    return result


def _write_json(path: Path, value) -> None:
    text = json.dumps(value, indent=1) + "\n"
    write_atomic(path, lambda file: file.write(text.encode()))


def run_name(method: str, lr: float | None) -> str:
    return method if lr is None else f"{method}_lr{lr:g}"


def _data_flags(data: Path, clip: Path, seed: int) -> list[str]:
    return ["--datatype", "msrvtt", "--train_csv", str(data / SPLIT_LISTS["train"]),
            "--data_path", str(data / "MSRVTT_data.json"), "--val_csv", str(data / SPLIT_LISTS["val"]),
            "--features_path", str(data / "videos"), "--pretrained_clip_name", str(clip),
            "--max_frames", str(NUM_FRAMES), "--max_words", "16", "--precision", "fp32", "--device", "cpu",
            "--num_thread_reader", "0", "--batch_size_val", "64", "--seed", str(seed), "--save_similarity",
            "--visual_output_type", "average_frame_cls_token", "--no-plot_curves"]


def seed_of(data: Path) -> int:
    """The seed S of a data folder OUTPUT/seedS/data (seed_data's)."""
    return int(data.parent.name[len("seed"):])


def run_job(args: argparse.Namespace, job: tuple, data: Path, clip: Path) -> Path:
    """Run one job of `jobs_of` with main.main unless its eval_results.json exists; returns its folder.
    ("train", method, lr): train, then score val (the run's test split is val). ("test", method, lr, order):
    score the test split with the trained run of (method, lr) and --eval_frame_order `order` (meanP: no run)."""
    seed_dir = data.parent
    kind, method, lr = job[:3]
    common = _data_flags(data, clip, seed_of(data))
    if kind == "train":
        folder = seed_dir / run_name(method, lr)
        argv = ["--do_train", "--do_eval", "--train_group_size", "2", "--no-eval_every_epoch",
                "--test_csv", str(data / SPLIT_LISTS["val"]), "--epochs", str(args.epochs),
                "--batch_size", str(args.batch_size), "--lr", str(lr), "--warmup_proportion",
                str(args.warmup_proportion), "--n_display", "100", "--output_dir", str(folder), *common,
                *METHODS[method][1], *args.extra]
    else:
        order = job[3]
        folder = seed_dir / "test" / (method if order == "natural" else f"{method}_test_{order}")
        trained = [] if method == "meanp" else ["--init_model", str(seed_dir / run_name(method, lr))]
        argv = ["--do_eval", *trained, "--test_csv", str(data / SPLIT_LISTS["test"]), "--output_dir", str(folder),
                *common, *METHODS[method][1], *(["--eval_frame_order", order] if order != "natural" else [])]
    if (folder / "eval_results.json").is_file():
        return folder
    if folder.exists():  # an interrupted run: start it again
        shutil.rmtree(folder)
    train_main.main(argv)
    return folder


def run_in_worker(run: Callable, args: argparse.Namespace, job: tuple, data: Path, clip: Path) -> Path:
    """run(args, job, data, clip) in a --jobs worker: its console output goes to seedS/<job>.console.txt."""
    console = data.parent / f"{'_'.join(map(str, job))}.console.txt"
    with open(console, "w") as file, contextlib.redirect_stdout(file), contextlib.redirect_stderr(file):
        return run(args, job, data, clip)


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` worker processes, fresh interpreters (spawn: no forked torch thread pools), each with (logical CPUs
    / jobs) torch threads."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_threads,
                               initargs=(max(1, (os.cpu_count() or 1) // jobs),))


def _progress(done: int, total: int, started: float, what: str) -> None:
    elapsed = time.time() - started
    left = elapsed / done * (total - done) if done else float("nan")
    print(f"   {done}/{total} done ({what}); {elapsed:.0f} s elapsed, about {left:.0f} s left", flush=True)


def run_jobs(args: argparse.Namespace, jobs: list[tuple[int, tuple]], prepared: dict,
             run: Callable[[argparse.Namespace, tuple, Path, Path], Path] = run_job) -> dict:
    """{(seed, job): folder} of `jobs`, each run(args, job, *prepared[seed]) (prepared: seed -> (data folder
    OUTPUT/seedS/data, tiny CLIP)): here (--jobs 1) or in --jobs worker processes of one thread group each (`run`
    a module-level function); a progress line after each job."""
    started, folders = time.time(), {}
    if args.jobs == 1:
        for seed, job in jobs:
            folders[seed, job] = run(args, job, *prepared[seed])
            _progress(len(folders), len(jobs), started, f"seed {seed} {' '.join(map(str, job))}")
        return folders
    with _worker_pool(args.jobs) as pool:
        futures = {pool.submit(run_in_worker, run, args, job, *prepared[seed]): (seed, job) for seed, job in jobs}
        for future in as_completed(futures):
            seed, job = futures[future]
            folders[seed, job] = future.result()
            _progress(len(folders), len(jobs), started, f"seed {seed} {' '.join(map(str, job))}")
    return folders


def scores_of(folder: Path, pairs: list[dict]) -> dict:
    """Pair scores per task and t2v R@1 of one evaluation folder (its similarity matrix)."""
    saved = torch.load(folder / "similarity_test.pt", weights_only=True)
    evaluated = set(saved["video_ids"])
    scores = pair_scores(saved["similarity"], saved["caption_to_video"], saved["video_ids"],
                         [p for p in pairs if set(p["videos"]) <= evaluated])
    results = json.loads((folder / "eval_results.json").read_text())
    return {"tasks": scores, "r1_t2v": results["test"]["t2v"]["R1"]}


def mean_group(scores: dict) -> float:
    return statistics.fmean(entry["group_score"] for entry in scores["tasks"].values())


def _steps(folder: Path | None) -> int:
    """The optimizer steps a trained run took (its metrics.jsonl); 0 for no run (meanP)."""
    if folder is None:
        return 0
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    return max((r.get("step", 0) for r in records), default=0)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.update_probes:
        return update_probes(args)
    started, load_at_start = time.time(), load_average()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    trained = [m for m in args.methods if m != "meanp"]
    print(f"== data, tiny CLIPs{'' if args.no_probes else ', shortcut probes'} of seed(s) "
          f"{' '.join(map(str, args.seeds))} ({args.jobs} at once)", flush=True)
    prepared, clips, probes = prepare(args)
    print(f"== training {len(trained)} methods x {len(args.lrs)} learning rates x {len(args.seeds)} seeds, "
          f"{args.jobs} at once", flush=True)
    train_jobs = [(seed, ("train", m, lr)) for seed in args.seeds for m in trained for lr in args.lrs]
    train_jobs.sort(key=lambda job: -STEP_COST[job[1][1]])
    folders = run_jobs(args, train_jobs, prepared)
    pairs = {seed: json.loads((prepared[seed][0] / "pairs.json").read_text()) for seed in args.seeds}
    val_pairs = {seed: [p for p in pairs[seed] if p["split"] == "val"] for seed in args.seeds}
    chosen, val_scores = {}, {}
    for seed in args.seeds:
        for method in trained:
            val_scores[seed, method] = {lr: mean_group(scores_of(folders[seed, ("train", method, lr)],
                                                                 val_pairs[seed])) for lr in args.lrs}
            chosen[seed, method] = max(args.lrs, key=lambda lr: val_scores[seed, method][lr])
    test_jobs = []
    for seed in args.seeds:
        test_jobs += [(seed, ("test", m, chosen.get((seed, m)), "natural")) for m in args.methods]
        test_jobs += [(seed, ("test", CONTROLS[c][1], chosen[seed, CONTROLS[c][1]], CONTROLS[c][2]))
                      for c in args.controls]
    print(f"== scoring the test split once per chosen run: {len(test_jobs)} evaluations", flush=True)
    tested = run_jobs(args, test_jobs, prepared)
    rows = []
    for seed, job in test_jobs:  # in the order of --methods and --controls, however the jobs finished
        folder = tested[seed, job]
        _, method, lr, order = job
        name = method if order == "natural" else f"{method}_test_{order}"
        label = METHODS[method][0] if order == "natural" else CONTROLS[name][0]
        test_pairs = [p for p in pairs[seed] if p["split"] == "test"]
        scores = scores_of(folder, test_pairs)
        steps = _steps(prepared[seed][0].parent / run_name(method, lr) if lr is not None else None)
        for task, entry in scores["tasks"].items():
            rows.append({"task": task, "method": name, "label": label, "seed": seed, **entry,
                         "r1_t2v": scores["r1_t2v"], "steps": steps,
                         "lr": lr, "val_mean_group_score_by_lr": {f"{k:g}": v for k, v in
                                                                  val_scores.get((seed, method), {}).items()}})
    mechanism = []
    print(f"== STOP's mechanism on test ({time.time() - started:.0f} s elapsed)", flush=True)
    for seed in args.seeds:
        for method in (m for m in MECHANISM_METHODS if m in args.methods):
            run = prepared[seed][0].parent / run_name(method, chosen[seed, method])
            figure = out / f"prompts_{method}.png" if seed == args.seeds[0] else None
            mechanism += prompt_mechanism.measure(run, prepared[seed][0], "test", seed=seed, method=method,
                                                  figure=figure)
    result = {"rows": rows, "probes": probes, "mechanism": mechanism, "tiny_clips": {str(k): v for k, v in
                                                                                      clips.items()},
              "chosen_lr": [{"seed": s, "method": m, "lr": lr, "val_mean_group_score_by_lr":
                             {f"{k:g}": v for k, v in val_scores[s, m].items()}} for (s, m), lr in chosen.items()],
              "protocol": {"selection": "per method and seed, the lr of --lrs with the best mean val group score "
                                        "(val: its own random stream); the test split scored once per chosen run",
                           "args": {k: v for k, v in vars(args).items() if k != "results_md"},
                           "machine": {**machine(), "jobs": args.jobs, "load_at_start": load_at_start},
                           "seconds": time.time() - started}}
    _write_json(out / "temporal_benchmark.json", result)
    text = write_report(result, out, args.results_md)
    print(f"\n{text}\nwritten to {out / 'temporal_benchmark.json'}, {out / 'summary.md'}, {out / 'summary.png'}")
    return result


if __name__ == "__main__":
    main()
