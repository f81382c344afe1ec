"""Train and evaluate STOP (or DGL, or a frozen-CLIP meanP baseline) for text-video retrieval, or with
--task recognition for action recognition (docs/RECOGNITION.md).

    python main.py --do_train --do_eval --datatype msrvtt ... --output_dir outputs/x        # one process
    torchrun --nproc_per_node 4 main.py --do_train ...                                    # DDP, any node count
    srun python main.py --do_train ...                                                    # one SLURM task per GPU
    python main.py --do_eval --init_model outputs/x/ckpt_best.pt ... --output_dir outputs/x_eval

Model flags come from models.add_model_args, data flags from dataloaders.add_data_args. See docs/TRAINING.md.
The output folder receives hparams.json, log.txt, metrics.jsonl, ckpt_last.pt, ckpt_best.pt and
eval_results.json. A folder holding another run's files is refused (--resume continues that run, --overwrite
moves its files aside first); one process writes a folder at a time (its .lock). What is checked, and how bad
input and faults end: docs/RELIABILITY.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataloaders import DATASETS, BadVideoError, add_data_args, build_dataset
from dataloaders.recognition import (
    RECOGNITION_DATASETS,
    add_recognition_args,
    build_recognition_dataset,
    check_recognition_args,
)
from models import ModelConfig, VideoTextModel, add_model_args, create_model, load_trained
from models.clip import load_clip
from utils.engine.runtime.allocator import add_retain_freed_memory_flag, retain_freed_memory
from utils.engine.training.checkpoint import read_checkpoint_file, remove_stale_temporaries
from utils.engine.recognition.step import ClassificationStep
from utils.engine.run.cli import FlagError, OneLineArgumentParser, one_line
from utils.engine.run.curves import plot_training_curves
from utils.engine.runtime.determinism import deterministic_mode
from utils.engine.runtime.distributed import DEVICE_HELP, DistContext, barrier, cleanup_distributed, init_distributed
from utils.engine.retrieval.evaluation import EvaluationError, evaluate
from utils.engine.run.folder_lock import FolderBusyError, FolderLock
from utils.engine.runtime.precision import PRECISIONS, resolve_precision
from utils.engine.recognition.evaluation import evaluate_recognition
from utils.engine.retrieval.renormalisation import add_renormalisation_args, methods_from_args
from utils.engine.run.folder import RUN_FILES, claim_output_dir, read_resume, resume_folder
from utils.engine.run.log import JsonLines, setup_logging, write_json
from utils.engine.run.tensorboard_log import TensorBoardLog
from utils.engine.training.trainer import TrainConfig, Trainer, TrainingError, check_micro_batch_size

# What the library raises for bad input (messages written for the user); main turns them into one line.
USER_ERRORS = (FileNotFoundError, ValueError, TrainingError, BadVideoError, EvaluationError, FolderBusyError)
# --task -> (the val metric that selects the best epoch: its name in the log, its key in the results, its value)
SELECTION = {"retrieval": ("t2v R@1", "best_val_t2v_R1", lambda results: results["t2v"]["R1"]),
             "recognition": ("top-1", "best_val_top1", lambda results: results["top1"])}
RECOGNITION_ONLY_FLAGS = ("split", "shots", "shots_seed", "test_views", "class_template", "class_list")

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--task", choices=tuple(SELECTION), default="retrieval",
                     help="retrieval: text-video retrieval; recognition: action recognition, videos scored against "
                          "the texts of every class, trained with cross-entropy over the classes "
                          "(docs/RECOGNITION.md)")
    run.add_argument("--do_train", action="store_true", help="train (and evaluate on the val split each epoch)")
    run.add_argument("--do_eval", action="store_true",
                     help="evaluate on the test split: after training with the best checkpoint, else --init_model")
    run.add_argument("--output_dir", default=None,
                     help="folder for logs, metrics, checkpoints and results; required unless --resume (which "
                          "continues in the checkpoint's folder). A folder holding another run's files ("
                          + ", ".join(RUN_FILES) + ") is refused unless --overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="start this run in an --output_dir that holds another run: its files (the run files and "
                          "log.txt) are first MOVED into <output_dir>/previous_run_<date-time>/ (nothing is "
                          "deleted)")
    run.add_argument("--pretrained_dir", default=None,
                     help="folder of OpenAI's CLIP weights (ViT-B-32.pt ...); default $STOP_PRETRAINED_DIR or "
                          "~/models/pretrained")
    run.add_argument("--pretrained_clip_name", default="ViT-B/32",
                     help="ViT-B/32, ViT-B/16, ViT-L/14 (looked up in --pretrained_dir), a path to CLIP weights "
                          "or a Hugging Face transformers CLIP folder (docs/MODEL.md)")
    run.add_argument("--init_model", default=None,
                     help="start from these trained weights: a run folder, a checkpoint of ours (ckpt_best.pt / "
                          "ckpt_last.pt), a state dict, or a checkpoint of the released implementation")
    run.add_argument("--resume", default=None,
                     help="continue an interrupted run from this ckpt_last.pt (or its folder), at the exact step, "
                          "in that folder. The flags must be the run's (hparams.json) except those that do not "
                          "change it (output, logging, saving, workers: RESUME_FREE_FLAGS in "
                          "utils/engine/run/folder.py); a difference is refused, naming the flags")
    run.add_argument("--resume_extend_epochs", action="store_true",
                     help="with --resume: allow a larger --epochs than the run's. The learning rate then follows "
                          "the schedule of the new total from the checkpoint's step on (warm-up over "
                          "round(warmup_proportion x new total steps), cosine to 0 at the new last step), so it "
                          "jumps at the resume from the old plan's value to the new plan's; the steps already run "
                          "keep theirs. Extends a finished run too")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels only (torch.use_deterministic_algorithms, cuDNN deterministic, "
                          "no autotuning): same seed, machine, thread count and flags give the same numbers on a "
                          "GPU too; the CPU kernels are deterministic without it (docs/TRAINING.md)")
    run.add_argument("--device", default="auto", help=DEVICE_HELP + " (under torchrun: each process's own GPU)")
    run.add_argument("--num_thread_reader", type=int, default=4, help="DataLoader worker processes per process")
    add_retain_freed_memory_flag(run)
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
    run.add_argument("--retrieval_report", action=argparse.BooleanOptionalAction, default=True,
                     help="after the test evaluation also write rank_histogram_test.png and worst_queries_test.json "
                          "(the worst-ranked queries with their top videos' names) beside eval_results.json")
    run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                     help="also log TensorBoard scalars (loss, lr per group, gradient norm, samples/s, data time, "
                          "val and test metrics) to <output_dir>/tensorboard/ (needs the tensorboard package)")
    run.add_argument("--plot_curves", action=argparse.BooleanOptionalAction, default=True,
                     help="draw the training curves of metrics.jsonl into <output_dir>/training_curves.png at the "
                          "end of a training run (scripts/plot_curves.py draws them for any run folder)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=5)
    optim.add_argument("--batch_size", type=int, default=32, help="training pairs per process and micro-step")
    optim.add_argument("--train_group_size", type=int, default=1, metavar="G",
                       help="shuffle the training items in groups of G consecutive rows of the training list, so "
                            "each group shares a global batch (which G must divide): hard negatives, e.g. the "
                            "synthetic dataset's --train_pairs (a clip and its reversed twin); 1: plain shuffle")
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
    optim.add_argument("--micro_batch_size", type=int, default=0,
                       help="gradient caching: encode and back-propagate the --batch_size pairs of a step in "
                            "micro-batches of this many (it must divide --batch_size), for the exact gradient of "
                            "the whole contrastive batch with one micro-batch's activation memory, at one more "
                            "forward per step (docs/TRAINING.md); 0: off")
    optim.add_argument("--clip_grad_norm", type=float, default=1.0, help="gradient norm clipping (0: off)")
    optim.add_argument("--precision", choices=PRECISIONS, default="amp",
                       help="amp: float16 autocast + loss scaling on CUDA (bfloat16 on the CPU); fp16; bf16; fp32 "
                            "(utils/engine/runtime/precision.py)")
    optim.add_argument("--freeze_clip", action=argparse.BooleanOptionalAction, default=True,
                       help="keep the CLIP backbone frozen (--no-freeze_clip trains it at lr * coef_lr)")
    optim.add_argument("--ddp_find_unused_parameters", action=argparse.BooleanOptionalAction, default=True,
                       help="let DDP handle trainable tensors without gradient (STOP's region-score conv has none)")
    add_renormalisation_args(parser)
    add_model_args(parser)
    add_data_args(parser)
    add_recognition_args(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, every range checked here (before any slow work); errors are one `error: ...` line."""
    try:
        return _parse_args(argv)
    except FlagError as error:
        raise SystemExit(f"error: {error}") from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.do_train or args.do_eval):
        parser.error("nothing to do: pass --do_train and/or --do_eval")
    for flag in ("epochs", "batch_size", "batch_size_val", "gradient_accumulation_steps", "n_display",
                 "train_group_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    try:
        check_micro_batch_size(args.micro_batch_size, args.batch_size, args.gradient_accumulation_steps)
    except ValueError as error:
        parser.error(str(error))
    for flag in ("num_thread_reader", "save_steps", "stop_after_steps", "seed", "holdout_val_videos"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    for flag in ("coef_lr", "wd", "clip_grad_norm"):
        if not (math.isfinite(getattr(args, flag)) and getattr(args, flag) >= 0):
            parser.error(f"--{flag} must be a finite number >= 0, got {getattr(args, flag)}")
    for flag in ("warmup_proportion", "max_bad_video_fraction"):
        if not 0 <= getattr(args, flag) <= 1:
            parser.error(f"--{flag} must lie in [0, 1], got {getattr(args, flag)}")
    try:
        ModelConfig.from_args(args)  # --max_frames, --max_words and every other model option
        post_process = methods_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        parser.error("--tensorboard needs the tensorboard package (pip install tensorboard), or leave it out")
    if args.task == "recognition":
        if args.datatype not in RECOGNITION_DATASETS:
            parser.error(f"--task recognition reads {', '.join(RECOGNITION_DATASETS)}; --datatype {args.datatype} "
                         "is a retrieval dataset")
        retrieval_only = ([f"--{name}" for name in post_process] + ["--save_similarity"] * args.save_similarity
                          + ["--micro_batch_size"] * bool(args.micro_batch_size))
        if retrieval_only:
            parser.error(f"{' / '.join(retrieval_only)} belong to retrieval: leave them out with --task recognition")
        try:
            check_recognition_args(args)
        except ValueError as error:
            parser.error(str(error))
    elif args.datatype not in DATASETS:
        parser.error(f"--datatype {args.datatype} is an action-recognition dataset: add --task recognition")
    elif [flag for flag in RECOGNITION_ONLY_FLAGS if getattr(args, flag) != parser.get_default(flag)]:
        parser.error(f"--{' / --'.join(RECOGNITION_ONLY_FLAGS)} are flags of --task recognition")
    if post_process and not args.do_eval:
        parser.error(f"--{' / --'.join(post_process)} post-process the test evaluation: add --do_eval")
    if args.resume and not args.do_train:
        parser.error("--resume continues training: add --do_train")
    if args.resume_extend_epochs and not args.resume:
        parser.error("--resume_extend_epochs extends a run given by --resume")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in its folder, --overwrite would move it aside: pass one")
    if args.resume:
        folder = resume_folder(args.resume)
        if args.output_dir is None:
            args.output_dir = str(folder)
        elif Path(args.output_dir).resolve() != folder.resolve():
            parser.error(f"--resume {args.resume} continues the run in its folder {folder}; --output_dir "
                         f"{args.output_dir} is another folder (leave --output_dir out, or give that folder)")
    elif args.output_dir is None:
        parser.error("--output_dir is required (unless --resume)")
    return args


def _check_paths(args: argparse.Namespace) -> None:
    """Fail before any slow work when a named input does not exist."""
    if args.init_model and not Path(args.init_model).exists():
        raise FileNotFoundError(f"--init_model: checkpoint not found: {args.init_model}")
    if args.resume and not (Path(args.resume).is_file() or (Path(args.resume) / "ckpt_last.pt").is_file()):
        raise FileNotFoundError(f"--resume: checkpoint not found: {args.resume}")
    if args.features_path and not args.lmdb_dataset and not Path(args.features_path).is_dir():
        raise FileNotFoundError(f"--features_path: video folder not found: {args.features_path}")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise ValueError(f"--output_dir {args.output_dir} is a file, not a folder")


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
    clip = load_clip(args.pretrained_clip_name, args.pretrained_dir, config.clip_activation)
    if config.max_words > clip.context_length:
        raise ValueError(f"--max_words {config.max_words} exceeds the text context of the CLIP "
                         f"{args.pretrained_clip_name} ({clip.context_length} tokens, SOT and EOT included)")
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


def _make_trainer(args: argparse.Namespace, ctx: DistContext, model, precision, metrics_log, train_set,
                  resume: dict[str, Any] | None, log) -> Trainer:
    """The Trainer of the flags (--task recognition: the cross-entropy step over the training set's classes);
    with --resume at the checkpoint's step (model tensors, optimizer, RNG)."""
    config = TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, coef_lr=args.coef_lr, wd=args.wd,
        wd_exclude=args.wd_exclude, warmup_proportion=args.warmup_proportion,
        gradient_accumulation_steps=args.gradient_accumulation_steps, clip_grad_norm=args.clip_grad_norm,
        seed=args.seed, num_workers=args.num_thread_reader, n_display=args.n_display,
        save_steps=args.save_steps, stop_after_steps=args.stop_after_steps,
        find_unused_parameters=args.ddp_find_unused_parameters, group_size=args.train_group_size,
        micro_batch_size=args.micro_batch_size)
    step = (ClassificationStep(model, precision, train_set.class_tokens().to(ctx.device))
            if args.task == "recognition" else None)
    trainer = Trainer(model, train_set, ctx, config, precision, str(args.output_dir), metrics_log,
                      args=dict(vars(args)), step_module=step)
    log.info(f"training: {len(train_set)} pairs, global batch {args.batch_size} x {ctx.world_size} processes x "
             f"{args.gradient_accumulation_steps} accumulation, {trainer.steps_per_epoch} steps per epoch, "
             f"{trainer.total_steps} steps")
    if resume is not None:
        model.load_learned_state_dict(resume["model"], f"--resume {args.resume}")
        trainer.load_training_state(resume, args.resume)
        log.info(f"resumed at step {trainer.progress.global_step} (epoch {trainer.progress.epoch + 1}, "
                 f"step {trainer.progress.step_in_epoch} of it)")
        if args.epochs != resume["args"]["epochs"]:
            log.info(f"--resume_extend_epochs: {resume['args']['epochs']} -> {args.epochs} epochs; from step "
                     f"{trainer.progress.global_step} the learning rate follows the schedule of "
                     f"{trainer.total_steps} steps (now {trainer.optimizer.param_groups[0]['lr']:.3e})")
    return trainer


def _train(args: argparse.Namespace, trainer: Trainer, val_set, eval_on, results: dict[str, Any], log) -> bool:
    """--do_train (and --resume). Returns whether the run was stopped early (--stop_after_steps); on completion
    the model holds the best epoch's weights if there was a selection."""
    start = time.time()
    name, key, metric = SELECTION[args.task]
    status = trainer.train(evaluate=(lambda: eval_on(val_set, "val")) if val_set is not None else None,
                           metric=metric)
    results["train_seconds"] = time.time() - start
    if status == "finished" and trainer.progress.best_epoch is not None:
        best = read_checkpoint_file(Path(args.output_dir) / "ckpt_best.pt")
        trainer.model.load_learned_state_dict(best["model"], "ckpt_best.pt")
        log.info(f"best val {name} {trainer.progress.best_value:.2f} at epoch {trainer.progress.best_epoch}")
        results.update({"best_epoch": trainer.progress.best_epoch, key: trainer.progress.best_value})
    elif status == "finished":
        log.info("no per-epoch evaluation (--no-eval_every_epoch): the last epoch's weights are evaluated")
    return status == "stopped"


def run(args: argparse.Namespace, ctx: DistContext, argv: list[str]) -> dict[str, Any]:
    """One run in --output_dir, which the main process locks for its whole duration (FolderLock)."""
    output_dir = Path(args.output_dir)
    resume = read_resume(args, ctx, build_parser()) if args.resume else None
    with FolderLock(output_dir, "--output_dir") if ctx.is_main else contextlib.nullcontext():
        moved = claim_output_dir(output_dir, bool(args.resume), args.overwrite) if ctx.is_main else None
        barrier()
        log = setup_logging(output_dir, ctx.is_main)
        tensorboard = None
        if args.tensorboard and ctx.is_main:  # a resume drops the events of the steps it runs again
            tensorboard = TensorBoardLog(output_dir, purge_step=resume["global_step"] + 1 if resume else None)
        metrics_log = JsonLines(output_dir / "metrics.jsonl", enabled=ctx.is_main,
                                listeners=[tensorboard.write] if tensorboard else [])
        try:
            results = _run_locked(args, ctx, argv, output_dir, resume, moved, log, metrics_log)
        finally:
            if tensorboard is not None:
                tensorboard.close()
        if args.plot_curves and args.do_train and ctx.is_main:
            log.info(f"training curves: {plot_training_curves(output_dir)}")
        return results


def _run_locked(args, ctx: DistContext, argv: list[str], output_dir: Path, resume, moved: str | None,
                log, metrics_log: JsonLines) -> dict[str, Any]:
    log.info("arguments: " + " ".join(argv))
    log.info(f"{ctx.world_size} process(es), device {ctx.device}")
    log.info(retain_freed_memory(args.retain_freed_memory))
    if moved:
        log.info(moved)
    if ctx.is_main:
        removed = remove_stale_temporaries(output_dir)
        if removed:
            log.info(f"removed {len(removed)} temporary files of an interrupted write: {removed}")
        if resume is not None:
            dropped = metrics_log.drop_after(resume["global_step"])
            if dropped:
                log.info(f"metrics.jsonl: dropped {dropped} records after step {resume['global_step']} (the "
                         "checkpoint's step), which this resume runs again")
    model = _build_model(args, ctx, log)
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "total": sum(p.numel() for p in model.parameters()),
              "trainable_by_module": model.trainable_parameter_counts()}
    log.info(f"parameters: {counts['trainable']:,} trainable of {counts['total']:,} "
             f"({', '.join(f'{k} {v:,}' for k, v in counts['trainable_by_module'].items())})")
    precision = resolve_precision(args.precision, ctx.device)
    _seed_everything(args.seed + ctx.rank)  # per-rank random streams (dropout) from here on
    # Every split and the Trainer before anything is written: bad data or flags stop the run here.
    resolution = model.clip.visual.input_resolution
    trainer = val_set = test_set = query_bank = None
    post_process = methods_from_args(args)
    recognition = args.task == "recognition"
    build = build_recognition_dataset if recognition else build_dataset
    if args.do_train:
        train_set = build(args, "train", resolution)
        val_set = build(args, "val", resolution) if args.eval_every_epoch else None
        trainer = _make_trainer(args, ctx, model, precision, metrics_log, train_set, resume, log)
    if args.do_eval:
        test_set = build(args, "test", resolution)
    if "qb_norm" in post_process:  # QB-Norm's query bank: the training captions
        query_bank = train_set if args.do_train else build_dataset(args, "train", resolution)
    if ctx.is_main:
        write_json(output_dir / "hparams.json",
                   {**vars(args), "model_config": model.config.to_dict(), "image_resolution": resolution,
                    "world_size": ctx.world_size, "device": str(ctx.device), "parameters": counts,
                    "torch": torch.__version__, "resumed_at_step": resume["global_step"] if resume else None})

    def eval_on(dataset, split, save_similarity=False, post_process=None, report=False):
        if recognition:
            return evaluate_recognition(model, dataset, ctx, args.batch_size_val, args.num_thread_reader, precision,
                                        split, report_dir=str(output_dir) if report else None)
        return evaluate(model, dataset, ctx, args.batch_size_val, args.num_thread_reader, precision, split,
                        save_similarity=str(output_dir / f"similarity_{split}.pt") if save_similarity else None,
                        post_process=post_process, query_bank=query_bank,
                        report_dir=str(output_dir) if report else None)

    results: dict[str, Any] = {}
    if trainer is not None and _train(args, trainer, val_set, eval_on, results, log):
        return results  # stopped by --stop_after_steps: no test evaluation
    if test_set is not None:
        test = eval_on(test_set, "test", args.save_similarity, post_process, args.retrieval_report or recognition)
        results["test"] = test
        if val_set is not None:
            results["best_epoch_selected_on_test_split"] = _same_data(val_set, test_set)
            if results["best_epoch_selected_on_test_split"]:
                log.info("note: the val split is the test split, so the best epoch was chosen on the test set "
                         "(the released protocol); use --holdout_val_videos or --test_csv for a clean selection")
        step = {"step": trainer.progress.global_step} if trainer is not None else {}
        metrics_log.write({"kind": "test", **step, **test})
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
            with deterministic_mode(args.deterministic):
                return run(args, ctx, argv)
        finally:
            cleanup_distributed()
    except USER_ERRORS as error:
        raise SystemExit(f"error: {one_line(error)}") from None


if __name__ == "__main__":
    main()
