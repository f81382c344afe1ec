"""Shortcut probes of the temporal benchmark: can one frame, or the mean of the frames, tell the two videos of a
counterfactual pair apart without any model of time?

For each task and view (frame t of the clip, for every t, or the mean of its frames; and, as the positive control
that the tasks can be learnt from these pixels at all, all frames in order) two probes are trained on
the pixels (16 x 16 x 3, area-averaged from the 32 px frames the tiny CLIP sees) to predict which of the two
claims of its pair a video shows (`label`): a linear one (logistic regression) and a small MLP (one hidden layer
of 128), each with the weight decay of WEIGHT_DECAYS that scores best on the validation stream. A pair counts as
told apart when the probe scores its claim-1 video above its claim-0 video (a tie counts half; chance 50%); the
95% interval is a bootstrap over the test pairs.

The probes read the same random streams as the benchmark's splits (dataloaders/counterfactual.make_split), longer:
`--train_pairs` from the train stream (its first pairs are the models' training split), `--test_pairs` from the
test stream (its first pairs are the models' test split), so the intervals are tight enough to tell chance
(50%) from chance + 5. They draw the frames in memory: the benchmark's videos are coded losslessly, so a decoded
frame is a function of its own picture alone and a probe of the pictures sees what a probe of the decoded frames
would.

    python scripts/demo/shortcut_probes.py --seed 0 --output OUT/probes_seed0.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataloaders.counterfactual import NUM_FRAMES, TASKS, PairVideo, make_split
from utils.atomic_file import write_atomic
from utils.engine.retrieval.pair_metrics import bootstrap_interval

WEIGHT_DECAYS = (1e-4, 1e-2, 1.0)
PROBES = ("linear", "mlp")
# task -> the claim value labelled 1 (the other value of a pair is 0); which_moves: see `label`
LABEL_ONE = {"direction": ("left", "up"), "event_order": ("stays still, then moves",), "speed": ("slowly",)}


def label(video: PairVideo) -> int:
    """Which claim of its pair `video` shows, 0 or 1: for which_moves whether the second-drawn of the two named
    objects is the one that moves (both videos of a pair draw them in the same order), else whether the claim's
    value is in LABEL_ONE."""
    task, _, value = video.claim
    if task == "which_moves":
        return int(video.objects[-1].moves)
    return int(value in LABEL_ONE[task])


def pixels(video: PairVideo, resolution: int = 32, side: int = 16) -> torch.Tensor:
    """float32 [T, side * side * 3] in [0, 1]: each frame drawn at `resolution` px, area-averaged to `side`."""
    frames = torch.from_numpy(video.frames(resolution)).permute(0, 3, 1, 2).float() / 255
    return F.adaptive_avg_pool2d(frames, side).flatten(1)


def view_name(view: int) -> str:
    """The views of `pair_views`: frame t, the mean of the frames, and all frames in order (the positive control:
    a probe that sees time)."""
    return f"frame {view}" if view < NUM_FRAMES else ("mean of frames", "all frames in order")[view - NUM_FRAMES]


def pair_views(pairs: list[tuple[PairVideo, PairVideo]], progress: bool = True) -> tuple[list, torch.Tensor]:
    """Per view of `view_name`, x float32 [P, 2, D_view], and labels int64 [P, 2]."""
    frames, labels = [], []
    for pair in tqdm(pairs, desc="drawing probe frames", disable=not progress, leave=False):
        frames.append(torch.stack([pixels(video) for video in pair]))  # [2, T, D]
        labels.append([label(video) for video in pair])
    stacked, y = torch.stack(frames), torch.tensor(labels)  # [P, 2, T, D]
    x = [stacked[:, :, t] for t in range(NUM_FRAMES)] + [stacked.mean(2), stacked.flatten(2)]
    if not bool((y.sum(1) == 1).all()):
        raise ValueError("a pair whose two videos have the same label: the probes' labels are broken")
    return x, y


def fit(kind: str, x: torch.Tensor, y: torch.Tensor, weight_decay: float, seed: int,
        steps: int = 200) -> torch.nn.Module:
    """A probe (PROBES) trained full-batch with Adam on standardised features x [N, D] -> logit of y [N]."""
    torch.manual_seed(seed)
    dim = x.shape[1]
    head = torch.nn.Linear(dim, 1) if kind == "linear" else torch.nn.Sequential(
        torch.nn.Linear(dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    probe = torch.nn.Sequential(_Standardise(mean, std), head)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=weight_decay)
    target = y.float()
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(probe(x).squeeze(1), target).backward()
        optimizer.step()
    return probe.eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def pair_wins(probe: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float64 [P]: 1 where the probe scores the label-1 video of the pair above the label-0 one, 0.5 on a tie.
    x [P, 2, D], y [P, 2]."""
    with torch.no_grad():
        scores = probe(x.flatten(0, 1)).view(-1, 2)
    one = scores.gather(1, y.argmax(1, keepdim=True)).squeeze(1)
    zero = scores.gather(1, y.argmin(1, keepdim=True)).squeeze(1)
    return (one > zero).double() + 0.5 * (one == zero).double()


def probe_task(task: str, seed: int, train_pairs: int, val_pairs: int, test_pairs: int,
               progress: bool = True) -> list[dict]:
    """One row per view and probe: {"task", "view" (`view_name`), "probe", "weight_decay"
    (chosen on val), "val_accuracy", "test_accuracy", "test_accuracy_ci95", "test_pairs"}."""
    data = {split: pair_views(make_split(split, (task,), count, seed), progress)
            for split, count in (("train", train_pairs), ("val", val_pairs), ("test", test_pairs))}
    rows = []
    for view in range(NUM_FRAMES + 2):
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = ((data[s][0][view], data[s][1])
                                                                for s in ("train", "val", "test"))
        for kind in PROBES:
            fitted = {wd: fit(kind, x_train.flatten(0, 1), y_train.flatten(), wd, seed) for wd in WEIGHT_DECAYS}
            val = {wd: pair_wins(p, x_val, y_val).mean().item() for wd, p in fitted.items()}
            chosen = max(val, key=val.get)
            wins = pair_wins(fitted[chosen], x_test, y_test)
            rows.append({"task": task, "seed": seed, "view": view_name(view),
                         "probe": kind, "weight_decay": chosen, "val_accuracy": 100 * val[chosen],
                         "test_accuracy": 100 * wins.mean().item(), "test_accuracy_ci95": bootstrap_interval(wins),
                         "test_pairs": len(wins)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="the benchmark seed whose streams are probed")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--train_pairs", type=int, default=1500)
    parser.add_argument("--val_pairs", type=int, default=500)
    parser.add_argument("--test_pairs", type=int, default=3000)
    parser.add_argument("--output", required=True, help="the JSON file of rows to write")
    args = parser.parse_args(argv)
    rows = [row for task in args.tasks
            for row in probe_task(task, args.seed, args.train_pairs, args.val_pairs, args.test_pairs)]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows, indent=1) + "\n"  # atomic: an interrupted run leaves no file that looks finished
    write_atomic(output, lambda file: file.write(text.encode()))
    for row in rows:
        lo, hi = row["test_accuracy_ci95"]
        print(f"{row['task']:12s} {row['view']:15s} {row['probe']:6s} {row['test_accuracy']:5.1f} [{lo:.1f}, {hi:.1f}]")
    return rows


if __name__ == "__main__":
    main()
