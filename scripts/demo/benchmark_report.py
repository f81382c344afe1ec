"""The temporal benchmark's tables and figures, from its results file alone (temporal_benchmark.json).

    python scripts/demo/benchmark_report.py OUTPUT/temporal_benchmark.json [--results_md docs/RESULTS.md]

writes summary.md, summary.png and mechanism.png beside the results file; with --results_md, the part of that
file between the markers below is replaced by summary.md's tables, so docs/RESULTS.md holds what the file says.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import matplotlib.image
from matplotlib.figure import Figure

from scripts.demo.markdown_section import replace_section
from utils.engine.retrieval.pair_metrics import GROUP_CHANCE

BEGIN, END = "<!-- temporal_benchmark:begin -->", "<!-- temporal_benchmark:end -->"
SCORES = ("text_score", "video_score", "group_score")
PROBE_LIMIT = 55.0  # chance (50) + 5: the highest upper interval end a single-frame probe may reach


def _spread(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.1f} ± {statistics.pstdev(values):.1f}"


def _ordered(rows: list[dict], key: str) -> list[str]:
    return list(dict.fromkeys(r[key] for r in rows))


def probe_table(probes: list[dict]) -> list[str]:
    lines = ["| task | single-frame probes: best test accuracy (its 95% interval) | highest upper end | "
             "within chance + 5 | mean of frames, linear | mean of frames, MLP | all frames in order, linear | "
             "all frames in order, MLP |", "|---|---|---:|---|---|---|---|---|"]
    for task in _ordered(probes, "task"):
        single = [p for p in probes if p["task"] == task and p["view"].startswith("frame ")]
        best = max(single, key=lambda p: p["test_accuracy"])
        upper = max(p["test_accuracy_ci95"][1] for p in single)
        cells = [_spread([p["test_accuracy"] for p in probes if p["task"] == task and p["view"] == view
                          and p["probe"] == kind])
                 for view in ("mean of frames", "all frames in order") for kind in ("linear", "mlp")]
        lines.append(f"| {task} | {best['test_accuracy']:.1f} [{best['test_accuracy_ci95'][0]:.1f}, "
                     f"{best['test_accuracy_ci95'][1]:.1f}] ({best['view']}, {best['probe']}, seed {best['seed']}) | "
                     f"{upper:.1f} | {'yes' if upper <= PROBE_LIMIT else '**no**'} | {' | '.join(cells)} |")
    return lines


def score_table(rows: list[dict], score: str, methods: list[str]) -> list[str]:
    tasks = _ordered(rows, "task")
    lines = [f"| method | {' | '.join(tasks)} | mean |", "|---|" + "---|" * (len(tasks) + 1)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        seeds = sorted({r["seed"] for r in mine})
        per_seed_mean = [statistics.fmean(r[score] for r in mine if r["seed"] == s) for s in seeds]
        cells = [_spread([r[score] for r in mine if r["task"] == t]) for t in tasks]
        lines.append(f"| {mine[0]['label']} | {' | '.join(cells)} | {_spread(per_seed_mean)} |")
    return lines


def interval_table(rows: list[dict], methods: list[str]) -> list[str]:
    tasks = _ordered(rows, "task")
    lines = ["| method | seed | " + " | ".join(tasks) + " | t2v R@1 | steps | lr |",
             "|---|---:|" + "---|" * len(tasks) + "---:|---:|---:|"]
    for method in methods:
        for seed in sorted({r["seed"] for r in rows if r["method"] == method}):
            mine = {r["task"]: r for r in rows if r["method"] == method and r["seed"] == seed}
            cells = [f"{mine[t]['group_score']:.1f} [{mine[t]['group_score_ci95'][0]:.0f}, "
                     f"{mine[t]['group_score_ci95'][1]:.0f}]" for t in tasks]
            first = mine[tasks[0]]
            lines.append(f"| {first['label']} | {seed} | {' | '.join(cells)} | {first['r1_t2v']:.1f} | "
                         f"{first['steps']} | {first['lr'] if first['lr'] is not None else '-'} |")
    return lines


def mechanism_table(mechanism: list[dict]) -> list[str]:
    lines = ["| method | task | moving object's pixels selected | static objects' pixels selected | "
             "frame share selected | inserted vs motion (Spearman) | inserted per moving / still gap | at the cap |",
             "|---|---|---|---|---|---|---|---|"]
    for method in _ordered(mechanism, "method"):
        for task in _ordered(mechanism, "task"):
            mine = [m for m in mechanism if m["method"] == method and m["task"] == task]
            if not mine:
                continue
            spatial = [m["spatial"] for m in mine if "spatial" in m]
            inserted = [m["inserted"] for m in mine if "inserted" in m]

            def cell(entries, key, scale=1.0):
                return _spread([scale * e[key] if e[key] is not None else None for e in entries]) if entries else "-"
            gaps = f"{cell(inserted, 'mean_in_moving_gaps')} / {cell(inserted, 'mean_in_still_gaps')}" \
                if inserted else "-"
            lines.append(f"| {method} | {task} | {cell(spatial, 'moving_coverage', 100)}% | "
                         f"{cell(spatial, 'static_coverage', 100)}% | {cell(spatial, 'selected_share', 100)}% | "
                         f"{cell(inserted, 'spearman_vs_motion')} | {gaps} | {cell(inserted, 'share_at_cap', 100)}% |")
    return lines


def plot_summary(result: dict, out: Path) -> None:
    """OUT/summary.png: per task, the group score of every method (a dot per seed with its 95% interval, the
    mean as a bar) under the best single-frame pixel probe's accuracy; below, if OUT/prompts_paper.png exists
    (prompt_mechanism's picture of one test video), that picture."""
    rows, probes = result["rows"], result["probes"]
    tasks, methods = _ordered(rows, "task"), _ordered(rows, "method")
    picture = out / "prompts_paper.png"
    figure = Figure(figsize=(3.6 * len(tasks) + 1.2, 4.6 + (3.2 if picture.is_file() else 0)), dpi=100)
    grid = figure.add_gridspec(2 if picture.is_file() else 1, len(tasks),
                               height_ratios=[4.6, 3.2] if picture.is_file() else None)
    for k, task in enumerate(tasks):
        axes = figure.add_subplot(grid[0, k])
        for i, method in enumerate(methods):
            mine = [r for r in rows if r["method"] == method and r["task"] == task]
            axes.bar(i, statistics.fmean(r["group_score"] for r in mine), color="tab:blue", alpha=0.35)
            for j, r in enumerate(mine):
                x = i + 0.12 * (j - (len(mine) - 1) / 2)
                lo, hi = r["group_score_ci95"]
                axes.plot([x, x], [lo, hi], color="tab:blue", linewidth=1)
                axes.scatter([x], [r["group_score"]], color="tab:blue", s=8, zorder=3)
        axes.axhline(GROUP_CHANCE, color="grey", linestyle="--", linewidth=1)
        axes.set_ylim(0, 100)
        single = [p for p in probes if p["task"] == task and p["view"].startswith("frame ")]
        probe = max(single, key=lambda p: p["test_accuracy"]) if single else None
        axes.set_title(task + ("" if probe is None else
                               f"\nbest one-frame pixel probe {probe['test_accuracy']:.1f}% "
                               f"[{probe['test_accuracy_ci95'][0]:.1f}, {probe['test_accuracy_ci95'][1]:.1f}] "
                               "(chance 50)"), fontsize=8)
        axes.set_xticks(range(len(methods)), [next(r["label"] for r in rows if r["method"] == m) for m in methods],
                        rotation=70, ha="right", fontsize=6)
        if k == 0:
            axes.set_ylabel("group score (%)\ndots: seeds, 95% CI; dashes: chance", fontsize=7)
    if picture.is_file():
        axes = figure.add_subplot(grid[1, :])
        axes.imshow(matplotlib.image.imread(picture))
        axes.set_axis_off()
    figure.subplots_adjust(bottom=0.02 if picture.is_file() else 0.42, left=0.1, right=0.98, top=0.93,
                           wspace=0.25, hspace=0.75)
    figure.savefig(out / "summary.png", format="png")


def plot_mechanism(mechanism: list[dict], path: Path) -> None:
    """Per method and task: the moving and the static objects' pixel share inside STOP's selection."""
    methods, tasks = _ordered(mechanism, "method"), _ordered(mechanism, "task")
    figure = Figure(figsize=(2.6 * len(methods) + 1, 3.6), dpi=100)
    for k, method in enumerate(methods):
        axes = figure.add_subplot(1, len(methods), k + 1)
        for i, task in enumerate(tasks):
            mine = [m["spatial"] for m in mechanism if m["method"] == method and m["task"] == task and "spatial" in m]
            for offset, key, colour in ((-0.2, "moving_coverage", "tab:red"), (0.2, "static_coverage", "tab:grey")):
                values = [100 * m[key] for m in mine]
                if values:
                    axes.bar(i + offset, statistics.fmean(values), width=0.38, color=colour, alpha=0.5,
                             label=key.replace("_", " ") if i == 0 else None)
                    axes.scatter([i + offset] * len(values), values, color=colour, s=8, zorder=3)
            if mine:
                axes.plot([i - 0.4, i + 0.4], [100 * mine[0]["selected_share"]] * 2, color="black", linewidth=1)
        axes.set_ylim(0, 100)
        axes.set_title(method, fontsize=9)
        axes.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=7)
        if k == 0:
            axes.set_ylabel("pixels inside the selection (%)")
            axes.legend(fontsize=6, loc="upper left")
    figure.subplots_adjust(bottom=0.3, left=0.12, right=0.99, wspace=0.3)
    figure.savefig(path, format="png")


def write_report(result: dict, out: Path, results_md: str | None = None) -> str:
    """summary.md, summary.png, mechanism.png in `out`; the markdown text (also put into `results_md`, its
    figure links relative to that file)."""
    text = report_text(result, out)
    (out / "summary.md").write_text(text)
    plot_summary(result, out)
    if result["mechanism"]:
        plot_mechanism(result["mechanism"], out / "mechanism.png")
    if results_md:
        links = Path(os.path.relpath(out, Path(results_md).parent))
        replace_section(results_md, BEGIN, END, report_text(result, out, links))
    return text


def report_text(result: dict, out: Path, links: Path = Path(".")) -> str:
    """The markdown of the tables; figure links are `links`/name (the figures are in `out`)."""
    rows = result["rows"]
    methods = _ordered(rows, "method")
    trained = [m for m in methods if "_test_" not in m]
    protocol = result["protocol"]
    args, machine = protocol["args"], protocol["machine"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Seeds {', '.join(map(str, seeds))}; {args['test_pairs']} test pairs per task; every trained method "
             f"{args['epochs']} epochs of {args['train_pairs'] * len(args['tasks'])} training pairs (batch "
             f"{args['batch_size']}), lr from {args['lrs']} chosen on val per method and seed; "
             f"{protocol['selection']}. Mean ± std over the seeds; chance (random scores): text 25, video 25, "
             "group 16.7; a model that embeds the two videos of a pair alike gets text 0, video 25, group 0.", ""]
    if result["probes"]:
        train, val, test = args["probe_pairs"]
        lines += ["### Shortcut probes (pixels of one frame, or the mean of the frames; chance 50%)", "",
                  f"Linear and MLP probes per view, trained on {train:,} pairs per task, weight decay chosen on "
                  f"{val:,}, scored on {test:,} test pairs per task and seed (intervals over those pairs).", "",
                  *probe_table(result["probes"]), ""]
    lines += ["### Group score (text and video score both)", "", *score_table(rows, "group_score", methods), "",
              "### Text score (each video picks its own caption)", "", *score_table(rows, "text_score", methods), "",
              "### Video score (each caption picks its own video)", "", *score_table(rows, "video_score", methods),
              "", "### Per seed: group score [95% bootstrap interval over the pairs]", "",
              *interval_table(rows, trained), ""]
    if result["mechanism"]:
        figures = sorted(p.name for p in out.glob("prompts_*.png"))
        lines += ["### What STOP's prompts select (test split, the chosen runs)", "",
                  *mechanism_table(result["mechanism"]), "",
                  f"![spatial selection per task]({(links / 'mechanism.png').as_posix()}) "
                  + " ".join(f"![{name}]({(links / name).as_posix()})" for name in figures), ""]
    lines += [f"![group scores]({(links / 'summary.png').as_posix()})", "",
              f"Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), torch {machine['torch']}, "
              f"{machine['jobs']} runs at once, load average at the start {machine['load_at_start']}; "
              f"{protocol['seconds']:.0f} s for the invocation that wrote the file."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a temporal_benchmark.json")
    parser.add_argument("--results_md", default=None, help="a markdown file whose benchmark section to replace")
    args = parser.parse_args(argv)
    text = write_report(json.loads(args.results.read_text()), args.results.parent, args.results_md)
    print(text)
    return text


if __name__ == "__main__":
    main()
