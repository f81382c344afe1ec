"""Draw the training curves of a run folder (its metrics.jsonl) into training_curves.png, as main.py does at the
end of every training run; works on a running or a crashed run too.

    python scripts/plot_curves.py runs/x [--output curves.png]

Panels: training loss (logged steps, epoch means), the validation metrics of the run's task (hparams.json),
learning rate per parameter group, gradient
norm, samples/s and data time against the optimizer step (utils/engine/run/curves.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.engine.run.cli import OneLineArgumentParser, errors_as_one_line
from utils.engine.run.curves import plot_training_curves
from utils.engine.tasks import task_of_run


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder of main.py (holding metrics.jsonl)")
    parser.add_argument("--output", type=Path, default=None, help="default: <run_dir>/training_curves.png")
    with errors_as_one_line():
        args = parser.parse_args(argv)
        task = task_of_run(args.run_dir)
        path = plot_training_curves(args.run_dir, task.scalars, task.curves, args.output)
    print(f"written {path}")
    return path


if __name__ == "__main__":
    main()
