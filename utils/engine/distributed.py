"""Process-group set-up and the collectives training and evaluation need.

One process when not launched by ``torchrun`` (``WORLD_SIZE`` unset or 1); otherwise ``torch.distributed`` is
initialised from torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``; multi-node works through torchrun's rendezvous), with NCCL on GPUs and gloo on CPU.
All helpers below also work, as identities, in a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: global rank, world size, local rank and the device it computes on."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda, cuda:1 ..."


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """A --device value (DEVICE_HELP) -> the device. Under torchrun (`local_rank` given) "auto" and "cuda" mean
    this process's GPU. ValueError for a name that is no device or a GPU this machine does not have."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device ({DEVICE_HELP})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA device on this machine (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"--device {name!r}: only the CPU and CUDA GPUs are supported ({DEVICE_HELP})")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Initialise from torchrun's environment; ``device`` as for resolve_device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                world_size=world_size, rank=rank,
                                device_id=dev if use_cuda else None)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def shard_bounds(n: int, rank: int, world_size: int) -> range:
    """Contiguous, non-overlapping shard of ``range(n)`` for ``rank``; sizes differ by at most one, no padding."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the ranks' ``x`` [n_r, ...] (n_r may differ) in rank order, on every rank, without padding
    left in the result. Used to assemble evaluation features computed on ``shard_bounds`` shards."""
    if not _active():
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def all_gather_object(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
