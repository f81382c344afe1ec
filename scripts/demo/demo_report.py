"""The demo's runs against the full temporal benchmark: per seed, each method's group score on the demo's tasks
with its 95% interval, whether it separates the pairs (the interval's lower end above the 16.7 of random scores),
and whether the full benchmark's run of the same method and seed says the same.

    python scripts/demo/demo_report.py docs/results/demo_seed0 docs/results/demo_seed1 docs/results/demo_seed2 \\
        --benchmark docs/results/temporal_benchmark/temporal_benchmark.json --results_md docs/RESULTS.md

Each demo folder is an OUT of scripts/demo.sh (its temporal_benchmark.json; seconds: the harness's own, from
its start to the results file). With --results_md the text
goes between the markers below in that file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.demo.markdown_section import replace_section
from utils.engine.retrieval.pair_metrics import GROUP_CHANCE

BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"


def separates(row: dict) -> bool:
    """The pair's two videos are told apart beyond chance: the lower end of the group score's 95% interval."""
    return row["group_score_ci95"][0] > GROUP_CHANCE


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    lo, hi = row["group_score_ci95"]
    return f"{row['group_score']:.1f} [{lo:.0f}, {hi:.0f}]{' **yes**' if separates(row) else ''}"


def demo_text(demos: list[Path], benchmark: dict) -> tuple[str, list[str]]:
    """(the markdown, the disagreements: "task / method / seed" where the demo and the full benchmark differ on
    whether the method separates the pairs)."""
    runs = {}
    for demo in demos:
        result = json.loads((demo / "temporal_benchmark.json").read_text())
        (seed,) = result["protocol"]["args"]["seeds"]
        runs[seed] = demo, result
    full = {(r["task"], r["method"], r["seed"]): r for r in benchmark["rows"]}
    lines = ["| seed | files | seconds | CPU, logical CPUs | load average at the start | highest upper "
             "end of a one-frame probe (limit 55) |", "|---:|---|---:|---|---|---:|"]
    for seed, (demo, result) in sorted(runs.items()):
        machine = result["protocol"]["machine"]
        uppers = [p["test_accuracy_ci95"][1] for p in result["probes"] if p["view"].startswith("frame ")]
        lines.append(f"| {seed} | {demo.as_posix()} | {result['protocol']['seconds']:.0f} | {machine['cpu']}, "
                     f"{machine['logical_cpus']} | "
                     f"{', '.join(f'{x:.1f}' for x in machine['load_at_start'])} | "
                     f"{f'{max(uppers):.1f}' if uppers else 'not run (PROBES=0)'} |")
    seeds = sorted(runs)
    disagreements = []
    order = {m: i for _, result in runs.values()
             for i, m in enumerate(result["protocol"]["args"]["methods"] + result["protocol"]["args"]["controls"])}
    labels = dict.fromkeys((r["method"], r["label"]) for _, result in runs.values() for r in result["rows"])
    methods = sorted(labels, key=lambda method: order.get(method[0], len(order)))
    for task in dict.fromkeys(r["task"] for _, result in runs.values() for r in result["rows"]):
        lines += ["", f"{task}: group score [95% interval]; **yes**: separates the pairs (lower end above "
                  f"{GROUP_CHANCE:.1f})", "",
                  "| method | " + " | ".join(f"seed {s}: demo | seed {s}: full benchmark" for s in seeds) + " |",
                  "|---|" + "---|---|" * len(seeds)]
        for method, label in methods:
            cells = []
            for seed in seeds:
                mine = next((r for r in runs[seed][1]["rows"] if r["task"] == task and r["method"] == method), None)
                theirs = full.get((task, method, seed))
                cells += [_cell(mine), _cell(theirs)]
                if mine is not None and theirs is not None and separates(mine) != separates(theirs):
                    disagreements.append(f"{task} / {label} / seed {seed}")
            lines.append(f"| {label} | {' | '.join(cells)} |")
    compared = sum(1 for seed in seeds for r in runs[seed][1]["rows"] if (r["task"], r["method"], seed) in full)
    lines += ["", f"The demo and the full benchmark agree on whether a method separates the pairs in "
              f"{compared - len(disagreements)} of {compared} (task, method, seed) cells"
              + (f"; they differ on: {'; '.join(disagreements)}." if disagreements else ".")]
    return "\n".join(lines) + "\n", disagreements


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", type=Path, nargs="+", help="demo output folders, one seed each")
    parser.add_argument("--benchmark", type=Path, required=True, help="the full benchmark's temporal_benchmark.json")
    parser.add_argument("--results_md", default=None, help="a markdown file whose demo section to replace")
    args = parser.parse_args(argv)
    text, _ = demo_text(args.demos, json.loads(args.benchmark.read_text()))
    if args.results_md:
        replace_section(args.results_md, BEGIN, END, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
