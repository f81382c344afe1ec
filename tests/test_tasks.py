"""Tasks are plug-ins: a toy third task, defined here (its dataset, step and metric), trains and evaluates
through main(argv) with no change to main.py or the engine; its flag belongs to it alone."""
from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from main import main
from models.clip import CLIP, CLIPConfig, save_clip_torchscript
from utils.engine.tasks import TASKS, Selection, Task


class Clips(torch.utils.data.Dataset):
    """``n`` random clips [T, 3, R, R] (a fixed draw per split), every frame real."""

    def __init__(self, n: int, frames: int, resolution: int, seed: int):
        self.videos = torch.randn(n, frames, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "video_mask": torch.ones(len(self.videos[i]), dtype=torch.long)}


class AlignStep(torch.nn.Module):
    """Loss: 1 - the mean cosine of the batch's video features with a fixed direction."""
    INPUTS = ("video", "video_mask")

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, video, video_mask):
        features = self.model.encode_video(video, video_mask)
        return 1 - torch.nn.functional.normalize(features.float(), dim=-1)[:, 0].mean()


class AlignTask(Task):
    name, help = "align", "toy: turn every video feature towards the first axis"
    selection = Selection("alignment", "best_val_alignment", lambda results: results["alignment"])
    curves = ("alignment",)

    def add_args(self, parser):
        parser.add_argument("--align_items", type=int, default=8)

    def build_dataset(self, args, split, resolution):
        return Clips(args.align_items, args.max_frames, resolution, seed=("train", "val", "test").index(split))

    def training_step(self, model, precision, train_set, device):
        return AlignStep(model)

    @torch.no_grad()
    def evaluate(self, run, dataset, split, final):
        run.model.eval()
        video = dataset.videos.to(run.ctx.device)
        features = run.model.encode_video(video, torch.ones(video.shape[:2], dtype=torch.long))
        run.model.train()
        return {"split": split, "alignment": torch.nn.functional.normalize(features, dim=-1)[:, 0].mean().item()}

    def scalars(self, results):
        yield "alignment", results["alignment"]


def test_a_third_task_trains_and_evaluates_through_main(tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), tmp_path / "clip.pt")
    monkeypatch.setitem(TASKS, "align", AlignTask())
    out = tmp_path / "run"
    flags = ["--pretrained_clip_name", str(tmp_path / "clip.pt"), "--max_frames", "2", "--num_thread_reader", "0",
             "--precision", "fp32", "--device", "cpu", "--temporal_prompt", "none"]
    results = main(["--task", "align", "--do_train", "--do_eval", "--epochs", "2", "--batch_size", "4", "--lr", "1e-2",
                    "--n_display", "1", "--tensorboard", "--output_dir", str(out), *flags])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["eval"]["alignment"] for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and results["best_val_alignment"] == max(epochs)
    assert json.loads((out / "eval_results.json").read_text())["test"] == results["test"]
    assert (out / "training_curves.png").stat().st_size > 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("val/alignment")] == pytest.approx(epochs, rel=1e-6)
    # the step trained the prompts: the test alignment of the best checkpoint beats the random initialisation's
    before = main(["--task", "align", "--do_eval", "--output_dir", str(tmp_path / "init"), *flags])["test"]
    assert results["test"]["alignment"] > before["alignment"]
    # the toy's flag is the toy's: another task refuses it
    with pytest.raises(SystemExit, match="--align_items are flags of --task align: leave them out with --task "
                                         "retrieval"):
        main(["--do_eval", "--align_items", "4", "--output_dir", str(tmp_path / "x"), *flags])
