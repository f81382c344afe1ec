"""The training curves of a run folder, drawn from its metrics.jsonl into training_curves.png.

main.py writes the figure at the end of every training run (--plot_curves, on by default; also after
--stop_after_steps); ``python scripts/plot_curves.py RUN_DIR`` draws it for any run folder, a running or a crashed
one included. Panels (x axis: the optimizer step): the training loss (logged steps and each epoch's mean), the
validation scalars per epoch the task names (retrieval: t2v/R1, v2t/R1; recognition: top1, top5; its
``curves`` among its ``scalars``), the learning rate of every parameter group, the
gradient norm (before clipping), the throughput (samples/s) and the data-loading time per step.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from matplotlib.figure import Figure

from utils.atomic_file import write_atomic
from utils.engine.run.tensorboard_log import EvaluationScalars

CURVES_FILE = "training_curves.png"


def read_records(path: str | Path) -> List[Dict[str, Any]]:
    """The JSON records of a metrics.jsonl (a line cut by a kill is skipped); FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is it a run folder of main.py?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict)]


def _series(records: List[Dict[str, Any]], kind: str, key) -> tuple[list, list]:
    """(steps, values) of the records of ``kind`` for which ``key(record)`` is not None."""
    points = [(r["step"], key(r)) for r in records if r.get("kind") == kind and "step" in r]
    points = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in points], [v for _, v in points]


def plot_training_curves(run_dir: str | Path, evaluation: EvaluationScalars, validation: Sequence[str],
                         output: str | Path | None = None) -> Path:
    """Draw the curves of ``run_dir``'s metrics.jsonl into ``output`` (default <run_dir>/training_curves.png),
    atomically; returns the path. The validation panel draws the ``validation`` names among ``evaluation``'s
    scalars of each epoch's results (the task's ``curves`` and ``scalars``). ValueError when the run logged no
    training step."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} holds no training step to draw")
    output = Path(output) if output is not None else run_dir / CURVES_FILE
    groups = sorted({g for r in train for g in (r.get("lr_groups") or {"lr": None})})
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    ax = axes[0, 0]
    ax.plot(*_series(records, "train", lambda r: r.get("loss")), ".-", lw=1, ms=3, label="logged steps")
    ax.plot(*_series(records, "epoch", lambda r: r.get("train_loss")), "o-", label="epoch mean")
    ax.set(title="training loss", yscale="log")
    ax.legend()
    ax = axes[0, 1]
    epochs = [r for r in records if r.get("kind") == "epoch" and "eval" in r]
    epoch_scalars = [(r["step"], dict(evaluation(r["eval"]))) for r in epochs]
    for label in validation:
        steps = [step for step, values in epoch_scalars if label in values]
        values = [values[label] for _, values in epoch_scalars if label in values]
        if values:
            ax.plot(steps, values, "o-", label=label)
    ax.set(title="validation (%)")
    if ax.lines:
        ax.legend()
    ax = axes[0, 2]
    for group in groups:
        ax.plot(*_series(records, "train", lambda r, g=group: (r.get("lr_groups") or {}).get(g, r.get(g))),
                ".-", lw=1, ms=3, label=group)
    ax.set(title="learning rate")
    ax.legend()
    for ax, key, title in ((axes[1, 0], "grad_norm", "gradient norm (before clipping)"),
                           (axes[1, 1], "samples_per_s", "samples / s"), (axes[1, 2], "data_time", "data time (s)")):
        ax.plot(*_series(records, "train", lambda r, k=key: r.get(k)), ".-", lw=1, ms=3)
        ax.set(title=title)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(str(run_dir))
    write_atomic(output, lambda f: fig.savefig(f, format="png", dpi=90))
    return output
