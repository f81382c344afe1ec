"""Train and evaluate STOP (or DGL, or a frozen-CLIP meanP baseline) for a task of utils.engine.tasks: text-video
retrieval (the default), or with --task recognition action recognition (docs/RECOGNITION.md).

    python main.py --do_train --do_eval --datatype msrvtt ... --output_dir outputs/x        # one process
    torchrun --nproc_per_node 4 main.py --do_train ...                                    # DDP, any node count
    srun python main.py --do_train ...                                                    # one SLURM task per GPU
    python main.py --do_eval --init_model outputs/x/ckpt_best.pt ... --output_dir outputs/x_eval

Model flags come from models.add_model_args, data flags from dataloaders.add_data_args, each task's own flags
from its Task.add_args. See docs/TRAINING.md.
The output folder receives hparams.json, log.txt, metrics.jsonl, ckpt_last.pt, ckpt_best.pt and
eval_results.json. A folder holding another run's files is refused (--resume continues that run, --overwrite
moves its files aside first); one process writes a folder at a time (its .lock). What is checked, and how bad
input and faults end: docs/RELIABILITY.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataloaders import DataConfig, add_data_args
from models import ModelConfig, VideoTextModel, add_model_args, create_model, load_trained
from models.clip import load_clip
from models.config_fields import check_ranges
from models.config_fields import resume_free as free
from utils.engine.run.cli import FlagError, OneLineArgumentParser, errors_as_one_line
from utils.engine.run.curves import plot_training_curves
from utils.engine.run.data_fingerprint import FINGERPRINT_KEY, checked_fingerprint
from utils.engine.run.folder import RUN_FILES, claim_output_dir, read_resume, resume_folder
from utils.engine.run.folder_lock import FolderLock
from utils.engine.run.tensorboard_log import TensorBoardLog
from utils.engine.runtime.allocator import add_retain_freed_memory_flag, retain_freed_memory
from utils.engine.runtime.determinism import deterministic_mode
from utils.engine.runtime.distributed import DEVICE_HELP, DistContext, barrier, cleanup_distributed, init_distributed
from utils.engine.runtime.log import JsonLines, setup_logging, write_json
from utils.engine.runtime.precision import PRECISIONS, resolve_precision
from utils.engine.tasks import TASKS, EvaluationRun, Task
from utils.engine.training.checkpoint import read_checkpoint_file, remove_stale_temporaries
from utils.engine.training.trainer import TrainConfig, Trainer, add_train_args, check_micro_batch_size


def build_parser() -> argparse.ArgumentParser:
    return _build_parser()[0]


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, set[str]]]:
    """The parser and, for every task of TASKS, the flags (argparse dests) its add_args registered."""
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--task", choices=tuple(TASKS), default="retrieval",
                     help="; ".join(f"{name}: {task.help}" for name, task in TASKS.items()))
    free(run.add_argument("--do_train", action="store_true", help="train (and evaluate on the val split each epoch)"),
         "--resume needs it")
    free(run.add_argument("--do_eval", action="store_true",
                          help="evaluate on the test split: after training with the best checkpoint, else "
                               "--init_model"), "whether the test split is evaluated after training")
    output_dir = run.add_argument("--output_dir", default=None,
                     help="folder for logs, metrics, checkpoints and results; required unless --resume (which "
                          "continues in the checkpoint's folder). A folder holding another run's files ("
                          + ", ".join(RUN_FILES) + ") is refused unless --overwrite")
    free(output_dir, "must be the checkpoint's folder (checked by main.parse_args)")
    free(run.add_argument("--overwrite", action="store_true",
                          help="start this run in an --output_dir that holds another run: its files (the run files "
                               "and log.txt) are first MOVED into <output_dir>/previous_run_<date-time>/ (nothing "
                               "is deleted)"), "refused with --resume")
    run.add_argument("--pretrained_dir", default=None,
                     help="folder of OpenAI's CLIP weights (ViT-B-32.pt ...); default $STOP_PRETRAINED_DIR or "
                          "~/models/pretrained")
    run.add_argument("--pretrained_clip_name", default="ViT-B/32",
                     help="ViT-B/32, ViT-B/16, ViT-L/14 (looked up in --pretrained_dir), a path to CLIP weights "
                          "or a Hugging Face transformers CLIP folder (docs/MODEL.md)")
    free(run.add_argument("--init_model", default=None,
                          help="start from these trained weights: a run folder, a checkpoint of ours (ckpt_best.pt "
                               "/ ckpt_last.pt), a state dict, or a checkpoint of the released implementation"),
         "the checkpoint's weights replace it")
    free(run.add_argument("--resume", default=None,
                          help="continue an interrupted run from this ckpt_last.pt (or its folder), at the exact "
                               "step, in that folder. The flags must be the run's (hparams.json) except those that "
                               "do not change it (output, logging, saving, workers: each declares it beside its "
                               "flag, models.config_fields.resume_free); a difference is refused, naming the flags"),
         "the checkpoint to continue")
    extend = run.add_argument("--resume_extend_epochs", action="store_true",
                     help="with --resume: allow a larger --epochs than the run's. The learning rate then follows "
                          "the schedule of the new total from the checkpoint's step on (warm-up over "
                          "round(warmup_proportion x new total steps), cosine to 0 at the new last step), so it "
                          "jumps at the resume from the old plan's value to the new plan's; the steps already run "
                          "keep theirs. Extends a finished run too")
    free(extend, "allows another --epochs")
    free(run.add_argument("--deterministic", action="store_true",
                          help="deterministic kernels only (torch.use_deterministic_algorithms, cuDNN deterministic, "
                               "no autotuning): same seed, machine, thread count and flags give the same numbers on "
                               "a GPU too; the CPU kernels are deterministic without it (docs/TRAINING.md)"),
         "deterministic kernels for the same function (bit-for-bit where the default kernels are not)")
    run.add_argument("--device", default="auto", help=DEVICE_HELP + " (under torchrun: each process's own GPU)")
    add_retain_freed_memory_flag(run)
    run.add_argument("--eval_every_epoch", action=argparse.BooleanOptionalAction, default=True,
                     help="evaluate on the val split after every epoch and keep the best in ckpt_best.pt")
    free(run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                          help="also log TensorBoard scalars (loss, lr per group, gradient norm, samples/s, data "
                               "time, val and test metrics) to <output_dir>/tensorboard/ (needs the tensorboard "
                               "package)"), "whether the scalars are also logged for TensorBoard")
    free(run.add_argument("--plot_curves", action=argparse.BooleanOptionalAction, default=True,
                          help="draw the training curves of metrics.jsonl into <output_dir>/training_curves.png at "
                               "the end of a training run (scripts/plot_curves.py draws them for any run folder)"),
         "whether training_curves.png is drawn")

    optim = parser.add_argument_group("optimisation")
    free(optim.add_argument("--batch_size_val", type=int, default=16, help="evaluation batch per process"),
         "evaluation batch (the same features, to float rounding)")
    optim.add_argument("--precision", choices=PRECISIONS, default="amp",
                       help="amp: float16 autocast + loss scaling on CUDA (bfloat16 on the CPU); fp16; bf16; fp32 "
                            "(utils/engine/runtime/precision.py)")
    optim.add_argument("--freeze_clip", action=argparse.BooleanOptionalAction, default=True,
                       help="keep the CLIP backbone frozen (--no-freeze_clip trains it at lr * coef_lr)")
    add_train_args(parser, {"run": run, "optimisation": optim})
    add_model_args(parser)
    add_data_args(parser)
    task_flags = {}
    for name, task in TASKS.items():
        before = {action.dest for action in parser._actions}
        task.add_args(parser)
        task_flags[name] = {action.dest for action in parser._actions} - before
    return parser, task_flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, every range checked here (before any slow work); errors are one `error: ...` line."""
    try:
        return _parse_args(argv)
    except FlagError as error:
        raise SystemExit(f"error: {error}") from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser, task_flags = _build_parser()
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    if not (args.do_train or args.do_eval):
        parser.error("nothing to do: pass --do_train and/or --do_eval")
    if args.batch_size_val < 1:
        parser.error(f"--batch_size_val must be >= 1, got {args.batch_size_val}")
    try:
        check_ranges(TrainConfig, args)
        check_ranges(DataConfig, args)
        check_micro_batch_size(args.micro_batch_size, args.batch_size, args.gradient_accumulation_steps)
        ModelConfig.from_args(args)  # --max_frames, --max_words and every other model option
    except ValueError as error:
        parser.error(str(error))
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        parser.error("--tensorboard needs the tensorboard package (pip install tensorboard), or leave it out")
    _check_task_args(parser, args, task, task_flags)
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


def _check_task_args(parser: argparse.ArgumentParser, args: argparse.Namespace, task: Task,
                     task_flags: dict[str, set[str]]) -> None:
    """--datatype among the task's, no other task's flag at a value other than its default, the task's checks."""
    if task.datatypes and args.datatype not in task.datatypes:
        readers = [name for name, other in TASKS.items() if args.datatype in other.datatypes]
        parser.error(f"--task {task.name} reads {', '.join(task.datatypes)}; --datatype {args.datatype} is a "
                     f"dataset of --task {' / '.join(readers)}")
    for name, flags in task_flags.items():
        foreign = sorted(f"--{flag}" for flag in flags - task_flags[task.name]
                         if getattr(args, flag) != parser.get_default(flag))
        if name != task.name and foreign:
            parser.error(f"{' / '.join(foreign)} are flags of --task {name}: leave them out with --task {task.name}")
    if args.micro_batch_size and not task.gradient_cache:
        parser.error(f"--micro_batch_size caches the gradients of a contrastive step: leave it out with --task "
                     f"{task.name}")
    try:
        task.check_args(args)
    except ValueError as error:
        parser.error(str(error))


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


def _build_model(args: argparse.Namespace, ctx: DistContext, log) -> VideoTextModel:
    """The model of the flags on its device, with --init_model loaded and CLIP unlocked with --no-freeze_clip."""
    _seed_everything(args.seed)  # identical model initialisation on every rank
    config = ModelConfig.from_args(args)
    clip = load_clip(args.pretrained_clip_name, args.pretrained_dir, config.clip_activation)
    config.check_text_context(clip.context_length)
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


def _make_trainer(args: argparse.Namespace, ctx: DistContext, task: Task, model, precision, metrics_log, train_set,
                  resume: dict[str, Any] | None, log) -> Trainer:
    """The Trainer of the flags with the task's training step; with --resume at the checkpoint's step (model
    tensors, optimizer, RNG)."""
    trainer = Trainer(task.training_step(model, precision, train_set, ctx.device), train_set, ctx,
                      TrainConfig.from_args(args), precision, str(args.output_dir), metrics_log, args=dict(vars(args)))
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


def _train(args: argparse.Namespace, task: Task, trainer: Trainer, evaluation: EvaluationRun,
           results: dict[str, Any], log) -> bool:
    """--do_train (and --resume). Returns whether the run was stopped early (--stop_after_steps); on completion
    the model holds the best epoch's weights if there was a selection (the task's selection metric)."""
    start = time.time()
    val_set = evaluation.datasets.get("val")
    name, key = task.selection.label, task.selection.key
    status = trainer.train(
        evaluate=(lambda: task.evaluate(evaluation, val_set, "val", final=False)) if val_set is not None else None,
        metric=task.selection.value)
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
    output_dir, task = Path(args.output_dir), TASKS[args.task]
    resume = read_resume(args, ctx, build_parser()) if args.resume else None
    fingerprint = checked_fingerprint(args) if args.do_train else None  # the files it trains on, and their CLIP
    with FolderLock(output_dir, "--output_dir") if ctx.is_main else contextlib.nullcontext():
        moved = claim_output_dir(output_dir, bool(args.resume), args.overwrite) if ctx.is_main else None
        barrier()
        log = setup_logging(output_dir, ctx.is_main)
        tensorboard = None
        if args.tensorboard and ctx.is_main:  # a resume drops the events of the steps it runs again
            tensorboard = TensorBoardLog(output_dir, task.scalars,
                                         purge_step=resume["global_step"] + 1 if resume else None)
        metrics_log = JsonLines(output_dir / "metrics.jsonl", enabled=ctx.is_main,
                                listeners=[tensorboard.write] if tensorboard else [])
        try:
            results = _run_locked(args, ctx, task, argv, output_dir, resume, fingerprint, moved, log, metrics_log)
        finally:
            if tensorboard is not None:
                tensorboard.close()
        if args.plot_curves and args.do_train and ctx.is_main:
            log.info(f"training curves: {plot_training_curves(output_dir, task.scalars, task.curves)}")
        return results


def _run_locked(args, ctx: DistContext, task: Task, argv: list[str], output_dir: Path, resume, fingerprint,
                moved: str | None, log, metrics_log: JsonLines) -> dict[str, Any]:
    log.info("arguments: " + " ".join(argv))
    log.info(f"{ctx.world_size} process(es), device {ctx.device}")
    log.info(retain_freed_memory(args.retain_freed_memory))
    if moved:
        log.info(moved)
    if fingerprint is not None and fingerprint.warning:
        log.warning(fingerprint.warning)
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
    splits = (["train"] + ["val"] * args.eval_every_epoch) * args.do_train + ["test"] * args.do_eval
    datasets = {split: task.build_dataset(args, split, resolution)
                for split in dict.fromkeys(splits + list(task.extra_splits(args)))}
    evaluation = EvaluationRun(args, model, ctx, precision, output_dir, datasets)
    trainer = (_make_trainer(args, ctx, task, model, precision, metrics_log, datasets["train"], resume, log)
               if args.do_train else None)
    if ctx.is_main:
        write_json(output_dir / "hparams.json",
                   {**vars(args), "model_config": model.config.to_dict(), "image_resolution": resolution,
                    "world_size": ctx.world_size, "device": str(ctx.device), "parameters": counts,
                    "torch": torch.__version__, "resumed_at_step": resume["global_step"] if resume else None,
                    FINGERPRINT_KEY: fingerprint.record if fingerprint else None})

    results: dict[str, Any] = {}
    if trainer is not None and _train(args, task, trainer, evaluation, results, log):
        return results  # stopped by --stop_after_steps: no test evaluation
    if args.do_eval:
        test = task.evaluate(evaluation, datasets["test"], "test", final=True)
        results["test"] = test
        if "val" in datasets:
            same = task.split_identity(datasets["val"])
            results["best_epoch_selected_on_test_split"] = same is not None and same == task.split_identity(
                datasets["test"])
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
    with errors_as_one_line():
        _check_paths(args)
        ctx = init_distributed(args.device)
        try:
            with deterministic_mode(args.deterministic):
                return run(args, ctx, argv)
        finally:
            cleanup_distributed()


if __name__ == "__main__":
    main()
