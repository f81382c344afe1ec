"""Train and evaluate STOP (or DGL, or a frozen-CLIP meanP baseline) for text-video retrieval.

    python main.py --do_train --do_eval --datatype msrvtt ... --output_dir outputs/x        # one process
    torchrun --nproc_per_node 4 main.py --do_train ...                                    # DDP, any node count
    python main.py --do_eval --init_model outputs/x/ckpt_best.pt ... --output_dir outputs/x_eval

Model flags come from models.add_model_args, data flags from dataloaders.add_data_args. See docs/TRAINING.md.
The output folder receives hparams.json, log.txt, metrics.jsonl, ckpt_last.pt, ckpt_best.pt and
eval_results.json.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataloaders import BadVideoError, add_data_args, build_dataset
from models import ModelConfig, VideoTextModel, add_model_args, create_model, load_trained
from models.clip import load_clip
from utils.engine.checkpoint import read_checkpoint_file, read_resumable_checkpoint
from utils.engine.distributed import DEVICE_HELP, DistContext, barrier, cleanup_distributed, init_distributed
from utils.engine.evaluation import evaluate
from utils.engine.precision import PRECISIONS, resolve_precision
from utils.engine.run_log import JsonLines, setup_logging, write_json
from utils.engine.training import TrainConfig, Trainer, TrainingError

# What the library raises for bad input (messages written for the user); main turns them into one line.
USER_ERRORS = (FileNotFoundError, ValueError, TrainingError, BadVideoError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--do_train", action="store_true", help="train (and evaluate on the val split each epoch)")
    run.add_argument("--do_eval", action="store_true",
                     help="evaluate on the test split: after training with the best checkpoint, else --init_model")
    run.add_argument("--output_dir", required=True, help="folder for logs, metrics, checkpoints and results")
    run.add_argument("--pretrained_dir", default=None,
                     help="folder of OpenAI's CLIP weights (ViT-B-32.pt ...); default $STOP_PRETRAINED_DIR or "
                          "~/models/pretrained")
    run.add_argument("--pretrained_clip_name", default="ViT-B/32",
                     help="ViT-B/32, ViT-B/16 (looked up in --pretrained_dir) or a path to CLIP weights")
    run.add_argument("--init_model", default=None,
                     help="start from these trained weights: a run folder, a checkpoint of ours (ckpt_best.pt / "
                          "ckpt_last.pt), a state dict, or a checkpoint of the released implementation")
    run.add_argument("--resume", default=None,
                     help="continue an interrupted run from this ckpt_last.pt (or its folder), at the exact step")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--device", default="auto", help=DEVICE_HELP + " (under torchrun: each process's own GPU)")
    run.add_argument("--num_thread_reader", type=int, default=4, help="DataLoader worker processes per process")
    run.add_argument("--n_display", type=int, default=50, help="log the training state every this many steps")
    run.add_argument("--save_steps", type=int, default=0,
                     help="also write ckpt_last.pt every this many steps inside an epoch (0: at epoch ends only)")
    run.add_argument("--stop_after_steps", type=int, default=0,
                     help="save ckpt_last.pt and exit after this many optimizer steps (0: run all epochs); the "
                          "schedule still spans --epochs, so --resume continues the same run")
    run.add_argument("--eval_every_epoch", action=argparse.BooleanOptionalAction, default=True,
                     help="evaluate on the val split after every epoch and keep the best in ckpt_best.pt")
    run.add_argument("--save_similarity", action="store_true",
                     help="also write the test text x video similarity matrix (similarity_test.pt)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=5)
    optim.add_argument("--batch_size", type=int, default=32, help="training pairs per process and micro-step")
    optim.add_argument("--batch_size_val", type=int, default=16, help="evaluation batch per process")
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate of the new (prompt) parameters")
    optim.add_argument("--coef_lr", type=float, default=5e-4,
                       help="CLIP's parameters, when not frozen, train at lr * coef_lr")
    optim.add_argument("--wd", type=float, default=0.2, help="AdamW weight decay")
    optim.add_argument("--wd_exclude", choices=("bias", "bias_and_1d"), default="bias",
                       help="tensors without weight decay: biases (as released) or also every 1-D tensor")
    optim.add_argument("--warmup_proportion", type=float, default=0.1,
                       help="linear warm-up over this fraction of the steps, then cosine to 0")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="micro-steps per optimizer step (each micro-step's contrastive loss uses only its own "
                            "batch_size x processes pairs as negatives)")
    optim.add_argument("--clip_grad_norm", type=float, default=1.0, help="gradient norm clipping (0: off)")
    optim.add_argument("--precision", choices=PRECISIONS, default="amp",
                       help="amp: float16 autocast + loss scaling on CUDA (bfloat16 on the CPU); fp16; bf16; fp32 "
                            "(utils/engine/precision.py)")
    optim.add_argument("--freeze_clip", action=argparse.BooleanOptionalAction, default=True,
                       help="keep the CLIP backbone frozen (--no-freeze_clip trains it at lr * coef_lr)")
    optim.add_argument("--ddp_find_unused_parameters", action=argparse.BooleanOptionalAction, default=True,
                       help="let DDP handle trainable tensors without gradient (STOP's region-score conv has none)")
    add_model_args(parser)
    add_data_args(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.do_train or args.do_eval):
        parser.error("nothing to do: pass --do_train and/or --do_eval")
    for flag in ("epochs", "batch_size", "batch_size_val", "gradient_accumulation_steps", "n_display"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if not 0 <= args.warmup_proportion <= 1:
        parser.error("--warmup_proportion must lie in [0, 1]")
    if args.resume and not args.do_train:
        parser.error("--resume continues training: add --do_train")
    return args


def _check_paths(args: argparse.Namespace) -> None:
    """Fail before any slow work when a named input does not exist."""
    if args.init_model and not Path(args.init_model).exists():
        raise FileNotFoundError(f"--init_model: checkpoint not found: {args.init_model}")
    if args.resume and not (Path(args.resume).is_file() or (Path(args.resume) / "ckpt_last.pt").is_file()):
        raise FileNotFoundError(f"--resume: checkpoint not found: {args.resume}")
    if args.features_path and not args.lmdb_dataset and not Path(args.features_path).is_dir():
        raise FileNotFoundError(f"--features_path: video folder not found: {args.features_path}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _same_data(a, b) -> bool:
    return list(a.video_ids) == list(b.video_ids) and list(a.captions) == list(b.captions)


def _build_model(args: argparse.Namespace, ctx: DistContext, log) -> VideoTextModel:
    """The model of the flags on its device, with --init_model loaded and CLIP unlocked with --no-freeze_clip."""
    _seed_everything(args.seed)  # identical model initialisation on every rank
    config = ModelConfig.from_args(args)
    clip = load_clip(args.pretrained_clip_name, args.pretrained_dir)
    if args.init_model:
        trained = load_trained(args.init_model, config=config, clip=clip)
        model = trained.model
        log.info(f"loaded {trained.kind} {trained.checkpoint}")
    else:
        model = create_model(config, clip)
        if not args.do_train and config.uses_prompts:
            log.warning("evaluating without --init_model: the prompt modules are at their random initialisation")
    if not args.freeze_clip:
        model.unlock_clip()
    return model.to(ctx.device)


def _train(args: argparse.Namespace, ctx: DistContext, model, precision, metrics_log, eval_on,
           results: dict[str, Any], log):
    """--do_train (and --resume). Returns the val split (None without per-epoch evaluation) and whether the run
    was stopped early; on completion the model holds the best epoch's weights if there was a selection."""
    resolution = model.clip.visual.input_resolution
    train_set = build_dataset(args, "train", resolution)
    val_set = build_dataset(args, "val", resolution) if args.eval_every_epoch else None
    config = TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, coef_lr=args.coef_lr, wd=args.wd,
        wd_exclude=args.wd_exclude, warmup_proportion=args.warmup_proportion,
        gradient_accumulation_steps=args.gradient_accumulation_steps, clip_grad_norm=args.clip_grad_norm,
        seed=args.seed, num_workers=args.num_thread_reader, n_display=args.n_display,
        save_steps=args.save_steps, stop_after_steps=args.stop_after_steps,
        find_unused_parameters=args.ddp_find_unused_parameters)
    trainer = Trainer(model, train_set, ctx, config, precision, str(args.output_dir), metrics_log,
                      args=dict(vars(args)))
    log.info(f"training: {len(train_set)} pairs, global batch {args.batch_size} x {ctx.world_size} processes x "
             f"{args.gradient_accumulation_steps} accumulation, {trainer.steps_per_epoch} steps per epoch, "
             f"{trainer.total_steps} steps")
    if args.resume:
        payload = read_resumable_checkpoint(args.resume)
        model.load_learned_state_dict(payload["model"], f"--resume {args.resume}")
        trainer.load_training_state(payload, args.resume)
        log.info(f"resumed at step {trainer.progress.global_step} (epoch {trainer.progress.epoch + 1}, "
                 f"step {trainer.progress.step_in_epoch} of it)")
    start = time.time()
    status = trainer.train(evaluate=(lambda: eval_on(val_set, "val")) if val_set is not None else None)
    results["train_seconds"] = time.time() - start
    if status == "finished" and trainer.progress.best_epoch is not None:
        best = read_checkpoint_file(Path(args.output_dir) / "ckpt_best.pt")
        model.load_learned_state_dict(best["model"], "ckpt_best.pt")
        log.info(f"best val t2v R@1 {trainer.progress.best_value:.2f} at epoch {trainer.progress.best_epoch}")
        results.update(best_epoch=trainer.progress.best_epoch, best_val_t2v_R1=trainer.progress.best_value)
    elif status == "finished":
        log.info("no per-epoch evaluation (--no-eval_every_epoch): the last epoch's weights are evaluated")
    return val_set, status == "stopped"


def run(args: argparse.Namespace, ctx: DistContext, argv: list[str]) -> dict[str, Any]:
    output_dir = Path(args.output_dir)
    if ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    log = setup_logging(output_dir, ctx.is_main)
    log.info("arguments: " + " ".join(argv))
    log.info(f"{ctx.world_size} process(es), device {ctx.device}")
    model = _build_model(args, ctx, log)
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "total": sum(p.numel() for p in model.parameters()), "trainable_by_module": model.trainable_parameter_counts()}
    log.info(f"parameters: {counts['trainable']:,} trainable of {counts['total']:,} "
             f"({', '.join(f'{k} {v:,}' for k, v in counts['trainable_by_module'].items())})")
    precision = resolve_precision(args.precision, ctx.device)
    _seed_everything(args.seed + ctx.rank)  # per-rank random streams (dropout) from here on
    if ctx.is_main:
        write_json(output_dir / "hparams.json",
                   {**vars(args), "model_config": model.config.to_dict(),
                    "image_resolution": model.clip.visual.input_resolution, "world_size": ctx.world_size,
                    "device": str(ctx.device), "parameters": counts, "torch": torch.__version__})
    metrics_log = JsonLines(output_dir / "metrics.jsonl", enabled=ctx.is_main)

    def eval_on(dataset, split, save_similarity=False):
        return evaluate(model, dataset, ctx, args.batch_size_val, args.num_thread_reader, precision, split,
                        save_similarity=str(output_dir / f"similarity_{split}.pt") if save_similarity else None)

    results: dict[str, Any] = {}
    val_set = None
    if args.do_train:
        val_set, stopped = _train(args, ctx, model, precision, metrics_log, eval_on, results, log)
        if stopped:
            return results
    if args.do_eval:
        test_set = build_dataset(args, "test", model.clip.visual.input_resolution)
        test = eval_on(test_set, "test", args.save_similarity)
        results["test"] = test
        if val_set is not None:
            results["best_epoch_selected_on_test_split"] = _same_data(val_set, test_set)
            if results["best_epoch_selected_on_test_split"]:
                log.info("note: the val split is the test split, so the best epoch was chosen on the test set "
                         "(the released protocol); use --holdout_val_videos or --test_csv for a clean selection")
        metrics_log.write({"kind": "test", **test})
        if ctx.is_main:
            write_json(output_dir / "eval_results.json", results)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (sys.argv when None), run, and return the results dict (also in eval_results.json)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        _check_paths(args)
        ctx = init_distributed(args.device)
        try:
            return run(args, ctx, argv)
        finally:
            cleanup_distributed()
    except USER_ERRORS as error:
        raise SystemExit(f"error: {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    """The message of a library error on one line; an error re-raised by a DataLoader worker keeps only the
    original message (its last line), not the worker's traceback."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


if __name__ == "__main__":
    main()
