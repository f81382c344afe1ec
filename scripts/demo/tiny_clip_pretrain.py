"""Give a tiny CLIP a short image-text pre-training on single still frames, for the demo.

Each still shows one shape of a random colour and size near one side of the frame, on a random dark
background, captioned "a red circle on the left" (4 colours x 3 shapes x 4 sides). The CLIP learns colours,
shapes and where in ONE frame an object is, nothing about motion: its image tower sees one frame at a time, so
"moves from left to right" and "moves from right to left" show it the same set of frames. Loss: CLIP's
image-to-text cross-entropy against every distinct caption, on random batches of stills; the text tower and
``logit_scale`` train too. The result is saved as OpenAI ships CLIP (TorchScript, fp16 tensors;
``models.clip.save_clip_torchscript``), so ``main.py --pretrained_clip_name PATH`` loads it like ``ViT-B-32.pt``.

    python scripts/demo/tiny_clip_pretrain.py --output outputs/demo/tiny_clip.pt
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataloaders.counterfactual import OBJECT_KINDS, TASKS, make_pair
from dataloaders.scenes import COLOURS, SHAPES, render_frame
from dataloaders.transforms import frames_to_tensor
from models.clip import CLIP, CLIPConfig, save_clip_torchscript
from models.tokenizer import tokenize

# side -> (axis of the position that decides it: 0 = x, 1 = y; which end: 0 = low, 1 = high)
SIDES = {"left": (0, 0), "right": (0, 1), "top": (1, 0), "bottom": (1, 1)}
CLASS_CAPTIONS = [f"a {colour} {shape} on the {side}" for colour in COLOURS for shape in SHAPES for side in SIDES]
OBJECT_CAPTIONS = [f"the {colour} {shape}" for colour, shape in OBJECT_KINDS]
STILLS = ("positioned", "benchmark")


def positioned_stills(num_images: int, seed: int, frame_size: int) -> tuple[np.ndarray, list[str]]:
    """(uint8 images [N, S, S, 3], captions): one shape (half-extent 10-18% of the side, as in the synthetic
    videos) in the outer third of the frame on the captioned side, anywhere across, on a dark background."""
    rng = random.Random(seed)
    images, captions = [], []
    for _ in range(num_images):
        colour, shape, side = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(SIDES))
        half = rng.uniform(0.1, 0.18) * frame_size
        span = frame_size - 1 - 2 * half
        axis, end = SIDES[side]
        along = half + (rng.uniform(2 / 3, 1) if end else rng.uniform(0, 1 / 3)) * span
        across = half + rng.random() * span
        position = (along, across) if axis == 0 else (across, along)
        background = tuple(rng.randint(0, 70) for _ in range(3))
        images.append(render_frame(colour, shape, position, half, frame_size, background))
        captions.append(f"a {colour} {shape} on the {side}")
    return np.stack(images), captions


def demo_clip_config(image_resolution: int = 32, patch_size: int = 8, width: int = 64, layers: int = 2,
                     context_length: int = 32) -> CLIPConfig:
    """A CLIP small enough to train on a CPU in a minute (the full BPE vocabulary, so the real tokenizer works)."""
    return CLIPConfig(embed_dim=width, image_resolution=image_resolution, vision_layers=layers, vision_width=width,
                      vision_patch_size=patch_size, context_length=context_length, vocab_size=49408,
                      transformer_width=width, transformer_heads=max(1, width // 64), transformer_layers=layers)


def benchmark_stills(num_images: int, seed: int, frame_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """(uint8 images [N, S, S, 3], targets [N, len(OBJECT_CAPTIONS)]): single frames of the temporal benchmark's
    scenes (dataloaders/counterfactual.py, from a random stream of their own, "clip/<seed>"), each target spread
    evenly over the objects it shows: the CLIP learns which objects a frame holds, among distractors, and nothing
    about where they go."""
    rng = random.Random(f"clip/{seed}")
    images, targets = [], torch.zeros(num_images, len(OBJECT_CAPTIONS))
    for i in range(num_images):
        video = make_pair(rng.choice(TASKS), rng, "clip", i)[rng.randrange(2)]
        images.append(video.frames(frame_size, [rng.randrange(video.num_frames)])[0])
        for obj in video.objects:
            targets[i, OBJECT_KINDS.index((obj.colour, obj.shape))] = 1
    return np.stack(images), targets / targets.sum(1, keepdim=True)


def still_batch(num_images: int, seed: int, frame_size: int, resolution: int,
                stills: str = "positioned") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(normalised images [N, 3, r, r], target distributions over the captions [N, C], the C captions) rendered
    at the video frame size, then resized as the data pipeline resizes video frames. stills (STILLS):
    "positioned", one shape on the captioned side (CLASS_CAPTIONS, one-hot targets); "benchmark",
    `benchmark_stills` (OBJECT_CAPTIONS)."""
    if stills == "benchmark":
        images, targets = benchmark_stills(num_images, seed, frame_size)
        return frames_to_tensor(images, resolution), targets, OBJECT_CAPTIONS
    images, captions = positioned_stills(num_images, seed, frame_size)
    labels = torch.tensor([CLASS_CAPTIONS.index(c) for c in captions])
    return frames_to_tensor(images, resolution), F.one_hot(labels, len(CLASS_CAPTIONS)).float(), CLASS_CAPTIONS


def pretrain(config: CLIPConfig, steps: int, batch_size: int, lr: float, num_images: int, frame_size: int,
             seed: int, stills: str = "positioned", min_logit_scale: float = 1.0) -> tuple[CLIP, dict]:
    """Train a fresh CLIP(config) on stills; returns it and {"train_seconds", "final_loss", "heldout_accuracy"
    (the top caption is one the still shows)}."""
    torch.manual_seed(seed)
    images, targets, captions = still_batch(num_images, seed, frame_size, config.image_resolution, stills)
    heldout_images, heldout_targets, _ = still_batch(500, seed + 1, frame_size, config.image_resolution, stills)
    texts = tokenize(captions, config.context_length)
    model = CLIP(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, t / steps))))
    generator = torch.Generator().manual_seed(seed)
    start, loss = time.time(), torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc="pre-training the tiny CLIP on stills", dynamic_ncols=True):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        image_feats = F.normalize(model.encode_image(images[index]), dim=-1)
        text_feats = F.normalize(model.encode_text(texts), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * image_feats @ text_feats.t(), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(math.log(min_logit_scale), math.log(100))
    model.eval()
    with torch.no_grad():
        scores = model.encode_image(heldout_images) @ F.normalize(model.encode_text(texts), dim=-1).t()
        accuracy = (heldout_targets.gather(1, scores.argmax(1, keepdim=True)) > 0).float().mean().item()
    return model, {"train_seconds": time.time() - start, "final_loss": loss.item(), "heldout_accuracy": accuracy,
                   "logit_scale": model.logit_scale.exp().item()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="where to write the TorchScript CLIP (.pt)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num_images", type=int, default=4000)
    parser.add_argument("--frame_size", type=int, default=64, help="side of the rendered stills (the video size)")
    parser.add_argument("--image_resolution", type=int, default=32)
    parser.add_argument("--patch_size", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context_length", type=int, default=32)
    parser.add_argument("--stills", choices=STILLS, default="positioned",
                        help="positioned: one shape captioned with its colour, shape and side (the direction demo); "
                             "benchmark: frames of the temporal benchmark's scenes captioned with the objects they "
                             "show")
    parser.add_argument("--min_logit_scale", type=float, default=1.0,
                        help="keep exp(logit_scale) at least this (the soft targets of --stills benchmark drive it "
                             "to about 9, which leaves the contrastive loss of the video training too flat)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = demo_clip_config(args.image_resolution, args.patch_size, args.width, args.layers, args.context_length)
    model, report = pretrain(config, args.steps, args.batch_size, args.lr, args.num_images, args.frame_size,
                             args.seed, args.stills, args.min_logit_scale)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_clip_torchscript(model, output)
    report.update(config=config.__dict__, output=str(output), stills=args.stills)
    output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"tiny CLIP: held-out accuracy (the top caption is true of the still) "
          f"{100 * report['heldout_accuracy']:.1f}% "
          f"({report['train_seconds']:.0f}s); saved to {output}")
    return report


if __name__ == "__main__":
    main()
