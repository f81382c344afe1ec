"""The training loop of every task: its step's loss of the global batch, accumulation, mixed precision,
clipping, checkpoints.

Global batch and gradient. Each rank encodes its ``batch_size`` items; the step gathers the features from all
ranks (``all_gather_with_grad``: gradient through the local slice) and computes its loss (retrieval's
models.ContrastiveLoss, recognition's ClassificationLoss) on the whole ``batch_size * world_size`` batch,
identically on every rank.
Each rank's backward therefore yields the part of the full-batch gradient that flows through its own samples;
the loss is multiplied by ``world_size`` before backward so that DDP's gradient AVERAGE equals the exact
gradient of the global-batch loss. The update is thus the same as one process computing that loss on the
whole batch (tested to 1e-5). (The released code omits the factor; its gradients are 1/world of this, which
only matters for gradient clipping, since Adam is scale invariant up to eps.)

Gradient accumulation (``--gradient_accumulation_steps k``): every micro-step is a contrastive loss on its own
``batch_size * world_size`` pairs (the negatives of a sample are the other samples of ITS micro-step), the k
losses are averaged (each backward is scaled by 1/k) and one optimizer step follows. So accumulation keeps the
number of samples per update but NOT the contrastive batch: 1 GPU x 32 x 4 steps sees 31 negatives per sample
where 4 GPUs x 32 see 127. Prefer gradient caching (``--micro_batch_size``), which keeps the contrastive batch
whole (the recipes of scripts/launch.sh do by default).

An epoch has ``floor(len(train) / (batch_size * world_size)) // k`` optimizer steps; leftover pairs are
dropped. The data order is a function of (seed, epoch) alone (``utils.engine.training.data_order``), which lets
``--resume``
skip exactly the consumed micro-batches and continue at the same step, mid-epoch included. On resume the
learning-rate schedule is rebuilt from the flags (``TrainConfig``) at the checkpoint's step, not taken from the
checkpoint: with the same flags it is the same schedule, with a larger --epochs (``--resume_extend_epochs``)
it is the schedule of the new total from that step on.

Finiteness. Every optimizer step checks the loss and (without a loss scaler, which handles overflowing
gradients itself by skipping the step) the gradient norm BEFORE the update, with one device synchronisation:
a NaN or inf stops the run with ``TrainingError`` naming the step and the value, and the parameters keep their
last finite values. No checkpoint with a non-finite tensor is written (``Trainer.save`` checks the payload),
so ckpt_last.pt / ckpt_best.pt on disk always hold the last good state.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.checkpoints import FORMAT
from models.config_fields import add_config_args, config_from_args, option
from utils.engine.runtime.distributed import DistContext, all_gather_object, barrier
from utils.engine.runtime.log import JsonLines, get_logger, peak_memory_mb
from utils.engine.runtime.precision import Precision
from utils.engine.training.checkpoint import capture_rng_state, non_finite_tensors, restore_rng_state, save_atomic
from utils.engine.training.data_order import ResumableEpochSampler, SeededItems
from utils.engine.training.gradient_cache import gradient_cached_backward
from utils.engine.training.optimization import build_optimizer, build_scheduler

LOGIT_SCALE_RANGE = (0.1, math.log(100.0))  # clamp of a trained logit_scale, as released
SKIPPED_VIDEOS_LOGGED = 20  # bad training videos named per epoch in the log (metrics.jsonl has them all)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run); the message says where
    and what to do."""


def check_micro_batch_size(micro_batch_size: int, batch_size: int, accumulation_steps: int) -> None:
    """ValueError naming the flags unless --micro_batch_size is 0 (off) or divides --batch_size, without
    --gradient_accumulation_steps (which splits the contrastive batch, where gradient caching keeps it whole)."""
    if micro_batch_size == 0:
        return
    if micro_batch_size < 0 or batch_size % micro_batch_size:
        raise ValueError(f"--micro_batch_size {micro_batch_size} must divide --batch_size {batch_size} (or be 0: off)")
    if accumulation_steps > 1:
        raise ValueError(f"--micro_batch_size keeps the contrastive batch of --batch_size pairs per process whole, "
                         f"--gradient_accumulation_steps {accumulation_steps} splits it: use one of the two")


@dataclass
class Progress:
    """Where training stands; (epoch, step_in_epoch) is the NEXT optimizer step to run."""
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_value: float | None = None
    best_epoch: int | None = None


RUN, OPTIM = "run", "optimisation"  # the flags' argparse groups in main.py


@dataclass(frozen=True)
class TrainConfig:
    """The training flags the loop needs, each with its default, help, range and whether a --resume may change it
    (``add_train_args`` registers them on main.py's parser, ``TrainConfig.from_args`` reads them)."""
    epochs: int = option(5, "training epochs", group=OPTIM, at_least=1)
    batch_size: int = option(32, "training pairs per process and micro-step", group=OPTIM, at_least=1)
    train_group_size: int = option(
        1, "shuffle the training items in groups of G consecutive rows of the training list, so each group shares "
           "a global batch (which G must divide): hard negatives, e.g. the synthetic dataset's --train_pairs (a "
           "clip and its reversed twin); 1: plain shuffle", group=OPTIM, at_least=1, metavar="G", type=int)
    lr: float = option(1e-3, "learning rate of the new (prompt) parameters", group=OPTIM, above=0)
    coef_lr: float = option(5e-4, "CLIP's parameters, when not frozen, train at lr * coef_lr", group=OPTIM,
                            at_least=0)
    wd: float = option(0.2, "AdamW weight decay", group=OPTIM, at_least=0)
    wd_exclude: str = option("bias", "tensors without weight decay: biases (as released) or also every 1-D tensor",
                             ("bias", "bias_and_1d"), OPTIM)
    warmup_proportion: float = option(0.1, "linear warm-up over this fraction of the steps, then cosine to 0",
                                      group=OPTIM, within=(0, 1))
    gradient_accumulation_steps: int = option(
        1, "micro-steps per optimizer step (each micro-step's contrastive loss uses only its own batch_size x "
           "processes pairs as negatives)", group=OPTIM, at_least=1)
    micro_batch_size: int = option(
        0, "gradient caching: encode and back-propagate the --batch_size pairs of a step in micro-batches of this "
           "many (it must divide --batch_size), for the exact gradient of the whole contrastive batch with one "
           "micro-batch's activation memory, at one more forward per step (docs/TRAINING.md); 0: off", group=OPTIM,
        resume_free="the same gradient (gradient caching of the whole batch), another memory / time trade")
    clip_grad_norm: float = option(1.0, "gradient norm clipping (0: off)", group=OPTIM, at_least=0)
    ddp_find_unused_parameters: bool = option(
        True, "let DDP handle trainable tensors without gradient (STOP's region-score conv has none)", group=OPTIM,
        action=argparse.BooleanOptionalAction,
        resume_free="how DDP finds the parameters without gradient (the same gradients)")
    seed: int = option(42, "the seed of the model's initialisation, the data order and the random draws",
                       group=RUN, at_least=0)
    num_thread_reader: int = option(4, "DataLoader worker processes per process", group=RUN, at_least=0,
                                    resume_free="DataLoader worker processes (the data of a step does not depend "
                                                "on them)")
    n_display: int = option(50, "log the training state every this many steps", group=RUN, at_least=1,
                            resume_free="how often steps are logged")
    save_steps: int = option(0, "also write ckpt_last.pt every this many steps inside an epoch (0: at epoch ends "
                                "only)", group=RUN, at_least=0,
                             resume_free="how often ckpt_last.pt is written inside an epoch")
    stop_after_steps: int = option(0, "save ckpt_last.pt and exit after this many optimizer steps (0: run all "
                                      "epochs); the schedule still spans --epochs, so --resume continues the same run",
                                   group=RUN, at_least=0, resume_free="when this process stops")

    @classmethod
    def from_args(cls, args) -> TrainConfig:
        """The configuration of argparse-style ``args`` (every field's flag must be there)."""
        return config_from_args(cls, args)


def add_train_args(parser: argparse.ArgumentParser, groups: dict[str, Any] | None = None) -> None:
    """Register one flag per TrainConfig field (in ``groups``' "run" / "optimisation" argparse groups)."""
    add_config_args(parser, TrainConfig, groups=groups)


class Trainer:
    """Owns the optimizer, schedule, scaler, sampler and progress of one training run. ``step_module`` is the
    module DDP wraps, the task's training step (retrieval's ContrastiveStep, recognition's ClassificationStep):
    its ``model`` is the VideoTextModel trained, its ``INPUTS`` name the batch entries its forward takes, it
    returns the loss of the global batch, and ``GRADIENT_CACHE`` (default False) says whether it splits into
    ``features`` and ``loss`` for --micro_batch_size (utils.engine.training.gradient_cache)."""

    def __init__(self, step_module: torch.nn.Module, train_set, ctx: DistContext, config: TrainConfig,
                 precision: Precision, output_dir: str | None = None, metrics: JsonLines | None = None,
                 args: Dict[str, Any] | None = None):
        model = step_module.model
        self.model, self.train_set, self.ctx, self.config = model, train_set, ctx, config
        self.precision = precision
        self.output_dir, self.metrics, self.args = output_dir, metrics, args or {}
        self.accum = config.gradient_accumulation_steps
        if self.accum < 1:
            raise ValueError("--gradient_accumulation_steps must be >= 1")
        check_micro_batch_size(config.micro_batch_size, config.batch_size, self.accum)
        if config.micro_batch_size and not getattr(step_module, "GRADIENT_CACHE", False):
            raise ValueError(f"--micro_batch_size caches the gradients of a contrastive step; "
                             f"{type(step_module).__name__} does not split into features and loss: leave it out")
        self.sampler = ResumableEpochSampler(len(train_set), config.batch_size, ctx.rank, ctx.world_size,
                                             seed=config.seed, group_size=config.train_group_size)
        self.steps_per_epoch = self.sampler.batches_per_epoch // self.accum
        if self.steps_per_epoch == 0:
            raise ValueError(f"one epoch of {len(train_set)} pairs has fewer than one optimizer step "
                             f"({config.batch_size} per process x {ctx.world_size} processes x "
                             f"{self.accum} accumulation steps); lower --batch_size or the accumulation")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.groups = model.param_groups(config.lr, config.coef_lr, config.wd, config.wd_exclude)
        self.optimizer = build_optimizer(self.groups)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, config.warmup_proportion)
        self.scaler = precision.grad_scaler()
        self.trainable = [p for g in self.groups for p in g["params"]]
        self.logit_scales = [p for n, p in model.named_parameters() if n.endswith("logit_scale") and p.requires_grad]
        self.step_inputs = step_module.INPUTS
        if ctx.distributed:
            step_module = DistributedDataParallel(
                step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters)
        self.step_module = step_module
        self.progress = Progress()
        self.saved_steps: Dict[str, int] = {}  # checkpoint name -> the global step it holds (written by this run)
        self.skipped_videos: Dict[str, str] = {}  # video id -> what is wrong with it, logged by this process

    # ----------------------------------------------------------------------------------------- state
    def checkpoint(self, with_training_state: bool = True) -> Dict[str, Any]:
        """The checkpoint payload (see utils.engine.training.checkpoint). Collective: every rank must call it."""
        rng = all_gather_object(capture_rng_state()) if with_training_state else None
        payload = {"format": FORMAT, "model": self.model.learned_state_dict(),
                   "model_config": self.model.config.to_dict(), **asdict(self.progress), "args": self.args,
                   "world_size": self.ctx.world_size, "device": str(self.ctx.device)}
        if with_training_state:
            payload.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                           scaler=self.scaler.state_dict() if self.scaler is not None else None, rng=rng)
        return payload

    def save(self, name: str, with_training_state: bool = True) -> None:
        """Write checkpoint ``name`` atomically; TrainingError (on every rank: the tensors are the same on all)
        instead of writing a payload with a NaN or inf tensor, so the file keeps its last good content."""
        payload = self.checkpoint(with_training_state)
        bad = non_finite_tensors(payload)
        if bad:
            raise TrainingError(f"step {self.progress.global_step}: {len(bad)} tensors are not finite (e.g. "
                                f"{bad[:3]}); {name} is not written. {self._last_good()}")
        if self.ctx.is_main and self.output_dir is not None:
            save_atomic(payload, f"{self.output_dir}/{name}")
        self.saved_steps[name] = self.progress.global_step
        barrier()

    def _last_good(self) -> str:
        if "ckpt_last.pt" in self.saved_steps:
            return (f"The last good checkpoint is {self.output_dir}/ckpt_last.pt (step "
                    f"{self.saved_steps['ckpt_last.pt']}). Try a lower --lr (or --precision fp32).")
        return "No checkpoint of this run was written. Try a lower --lr (or --precision fp32)."

    def load_training_state(self, payload: Dict[str, Any], source: str) -> None:
        """Resume: optimizer, schedule, scaler, progress and this rank's RNG from ``payload`` (a checkpoint
        utils.engine.training.checkpoint.read_resumable_checkpoint accepted; model tensors are loaded by the caller)."""
        planned_lrs = list(self.scheduler.base_lrs)  # the flags' learning rates, per group
        planned_decay = [g["weight_decay"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(payload["optimizer"])  # moments; also the saved groups' lr / decay ...
        for group, lr, decay in zip(self.optimizer.param_groups, planned_lrs, planned_decay):
            group["initial_lr"], group["weight_decay"] = lr, decay  # ... which the flags replace
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.progress = Progress(**{k: payload[k] for k in asdict(Progress())})
        # The schedule of the flags (the checkpoint's WarmupCosine may plan another total) at the saved step.
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, self.config.warmup_proportion,
                                         start_step=self.progress.global_step)
        self.saved_steps["ckpt_last.pt"] = self.progress.global_step
        if self.progress.step_in_epoch > self.steps_per_epoch:  # == : stopped after an epoch's last step
            raise TrainingError(f"--resume {source}: saved at step {self.progress.step_in_epoch} of an epoch "
                             f"that now has {self.steps_per_epoch} steps; resume with the same batch size, "
                             f"number of processes and accumulation")
        rng = payload["rng"]
        if len(rng) == self.ctx.world_size:
            restore_rng_state(rng[self.ctx.rank])
        else:
            get_logger().warning(f"--resume: saved by {len(rng)} processes, now {self.ctx.world_size}: the data "
                                 f"order is kept, the model's random stream (dropout) is re-seeded")
            torch.manual_seed(self.config.seed + self.ctx.rank + 1000 * self.progress.global_step)

    # ----------------------------------------------------------------------------------------- loop
    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch=self.progress.step_in_epoch * self.accum)
        return DataLoader(SeededItems(self.train_set, self.config.seed), batch_size=self.config.batch_size,
                          sampler=self.sampler, num_workers=self.config.num_thread_reader, drop_last=True,
                          pin_memory=self.ctx.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed + epoch))

    def _optimizer_step(self, batches) -> Dict[str, Any]:
        start = time.perf_counter()
        data_time, loss_sum = 0.0, 0.0
        device = self.ctx.device
        for micro in range(self.accum):
            t = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - t
            inputs = [batch[key].to(device, non_blocking=True) for key in self.step_inputs]
            last = micro == self.accum - 1
            if self.config.micro_batch_size:  # (then accum == 1; the contrastive step only)
                loss = self._gradient_cached_backward(*inputs)
            else:
                with contextlib.nullcontext() if last or not self.ctx.distributed else self.step_module.no_sync():
                    loss = self.step_module(*inputs)
                    self._backward(loss * (self.ctx.world_size / self.accum))
            loss_sum = loss_sum + loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.clip_grad_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.trainable if p.grad is not None])
        self._check_finite(loss_sum / self.accum, grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            for p in self.logit_scales:
                p.clamp_(*LOGIT_SCALE_RANGE)
        return {"loss": loss_sum / self.accum, "grad_norm": grad_norm, "data_time": data_time,
                "step_time": time.perf_counter() - start}

    def _backward(self, scaled_loss: torch.Tensor) -> None:
        (self.scaler.scale(scaled_loss) if self.scaler is not None else scaled_loss).backward()

    def _gradient_cached_backward(self, text: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor
                                  ) -> torch.Tensor:
        """--micro_batch_size: the backward of the unsplit batch's loss, in micro-batches (gradient_cache)."""
        core = self.step_module.module if self.ctx.distributed else self.step_module
        return gradient_cached_backward(
            core.features, core.loss, self.step_module, text, video, video_mask, self.config.micro_batch_size,
            self.ctx.world_size / self.accum, self._backward,
            no_sync=self.step_module.no_sync if self.ctx.distributed else None,
            train_logit_scale=bool(self.logit_scales))

    def _check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """TrainingError before the update of the step being run when its loss, or (without a loss scaler) its
        gradient norm, is NaN or inf. One synchronisation with the device per step; the values are the same on
        every rank (the loss of the global batch, the all-reduced gradient), so all ranks stop together."""
        loss_value, norm_value = torch.stack([loss.detach().float(), torch.as_tensor(grad_norm).float()
                                              .to(loss.device)]).tolist()
        checked = [("loss", loss_value)] + ([("gradient norm", norm_value)] if self.scaler is None else [])
        bad = [f"the {what} is {value}" for what, value in checked if not math.isfinite(value)]
        if bad:
            self.model.zero_grad(set_to_none=True)
            raise TrainingError(f"training step {self.progress.global_step + 1} (epoch {self.progress.epoch + 1}): "
                                f"{', '.join(bad)}; stopped before the update. {self._last_good()}")

    def _log_step(self, stats: Dict[str, Any], epoch: int) -> None:
        loss = float(stats["loss"])
        samples = self.config.batch_size * self.ctx.world_size * self.accum
        record = {"kind": "train", "epoch": epoch + 1, "step": self.progress.global_step, "loss": loss,
                  "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(stats["grad_norm"]),
                  "lr_groups": {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)},
                  "data_time": stats["data_time"], "step_time": stats["step_time"],
                  "samples_per_s": samples / max(stats["step_time"], 1e-9),
                  "peak_memory_mb": peak_memory_mb(self.ctx.device)}
        get_logger().info(
            f"epoch {epoch + 1} step {record['step']}/{self.total_steps} loss {loss:.4f} lr {record['lr']:.3e} "
            f"grad_norm {record['grad_norm']:.3f} data {record['data_time']:.3f}s step {record['step_time']:.3f}s "
            f"{record['samples_per_s']:.1f} samples/s peak mem {record['peak_memory_mb']:.0f} MiB")
        if self.metrics is not None:
            self.metrics.write(record)

    def _record_skipped_videos(self, epoch: int, record: Dict[str, Any]) -> None:
        """Collective. A training set that knows its bad videos (``bad_videos``: {video id: what is wrong}, as
        dataloaders.RetrievalDataset, found by any rank or DataLoader worker) has those first found in this epoch
        added to the epoch's ``record`` ("skipped_videos" and "skipped_videos_count"; "skipped_videos_total":
        all so far in this process) and named in the log, not only in the workers' warnings on stderr."""
        if not hasattr(self.train_set, "bad_videos"):
            return
        found: Dict[str, str] = {}
        for part in all_gather_object(self.train_set.bad_videos):
            found.update(part)
        new = {video: kind for video, kind in found.items() if video not in self.skipped_videos}
        self.skipped_videos.update(new)
        record.update(skipped_videos=new, skipped_videos_count=len(new), skipped_videos_total=len(self.skipped_videos))
        if new:
            shown = list(new.items())[:SKIPPED_VIDEOS_LOGGED]
            listed = ", ".join(f"{video} ({kind})" for video, kind in shown)
            more = f" and {len(new) - len(shown)} more (all in metrics.jsonl)" if len(new) > len(shown) else ""
            get_logger().warning(f"epoch {epoch + 1}: skipped {len(new)} bad training video(s) ("
                                 f"{len(self.skipped_videos)} of {len(self.train_set.video_ids)} so far): "
                                 f"{listed}{more}")

    def train(self, evaluate: Callable[[], Dict[str, Any]] | None = None,
              metric: Callable[[Dict[str, Any]], float] | None = None) -> str:
        """Run to the end of --epochs (or --stop_after_steps). After each epoch ``evaluate()`` (if given) is
        scored by ``metric`` (the task's selection metric, required with ``evaluate``); ckpt_best.pt keeps the
        best (later epochs win ties, as released) and ckpt_last.pt the resumable state. Returns "finished" or
        "stopped"."""
        if evaluate is not None and metric is None:
            raise ValueError("Trainer.train: an evaluate() needs the metric that scores its results")
        log, cfg, p = get_logger(), self.config, self.progress
        self.model.train()
        for epoch in range(p.epoch, cfg.epochs):
            epoch_start, loss_total, steps_run = time.time(), 0.0, 0
            batches = iter(self._loader(epoch))
            bar = tqdm(total=self.steps_per_epoch, initial=p.step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not self.ctx.is_main, dynamic_ncols=True)
            while p.step_in_epoch < self.steps_per_epoch:
                try:
                    stats = self._optimizer_step(batches)
                except BaseException:
                    bar.close()
                    raise
                p.global_step += 1
                p.step_in_epoch += 1
                loss_total = loss_total + stats["loss"]
                steps_run += 1
                bar.update(1)
                if p.global_step % cfg.n_display == 0 or p.global_step == 1:
                    self._log_step(stats, epoch)
                    bar.set_postfix(loss=f"{float(stats['loss']):.4f}")
                if cfg.save_steps and p.global_step % cfg.save_steps == 0 and p.step_in_epoch < self.steps_per_epoch:
                    self.save("ckpt_last.pt")
                if cfg.stop_after_steps and p.global_step >= cfg.stop_after_steps:
                    bar.close()
                    self.save("ckpt_last.pt")
                    log.info(f"stopping after step {p.global_step} (--stop_after_steps); resume with "
                             f"--resume {self.output_dir}/ckpt_last.pt")
                    return "stopped"
            bar.close()
            p.epoch, p.step_in_epoch = epoch + 1, 0
            # mean over the steps run in this process (after a resume: those since the resume)
            mean_loss = float(loss_total) / steps_run if steps_run else None
            record = {"kind": "epoch", "epoch": epoch + 1, "step": p.global_step, "train_loss": mean_loss,
                      "steps_run": steps_run, "epoch_seconds": time.time() - epoch_start}
            log.info(f"epoch {epoch + 1}/{cfg.epochs} done: mean loss "
                     f"{'n/a' if mean_loss is None else f'{mean_loss:.4f}'} over {steps_run} steps "
                     f"({record['epoch_seconds']:.0f}s)")
            self._record_skipped_videos(epoch, record)
            if evaluate is not None:
                results = evaluate()
                value = metric(results)
                if not math.isfinite(value):
                    raise TrainingError(f"epoch {epoch + 1}: the evaluation metric is {value}; not kept as best. "
                                        f"{self._last_good()}")
                record["eval"] = results
                if p.best_value is None or value >= p.best_value:
                    p.best_value, p.best_epoch = value, epoch + 1
                    self.save("ckpt_best.pt", with_training_state=False)
                record.update(best_value=p.best_value, best_epoch=p.best_epoch)
                self.model.train()
            if self.metrics is not None:
                self.metrics.write(record)
            self.save("ckpt_last.pt")
        return "finished"
