"""Process-group set-up and the collectives training and evaluation need.

How the process was started (``launch_from_environment``):
* torchrun (``WORLD_SIZE`` set): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``
  (multi-node through torchrun's rendezvous). It wins over SLURM's variables (torchrun inside an allocation).
* SLURM's srun (``SLURM_PROCID`` and srun's ``SLURM_STEP_ID`` set, more than one task: ``SLURM_STEP_NUM_TASKS``,
  else ``SLURM_NTASKS``): one task per process; rank ``SLURM_PROCID``, local rank ``SLURM_LOCALID``; the process
  group meets, within RENDEZVOUS_TIMEOUT (else a LaunchError naming the meeting point), at
  ``MASTER_ADDR`` (default: the first host of ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST`` /
  ``SLURM_NODELIST``) and ``MASTER_PORT`` (default 20000 + SLURM_JOB_ID mod 20000, so two jobs sharing a node do
  not collide). A task that sees a single GPU (``--gpus-per-task 1``) uses it whatever its local rank.
* otherwise one process; with a warning when SLURM's variables ask for several tasks (``SLURM_NTASKS`` > 1 in
  an sbatch script or an salloc shell) but srun did not start this process (no ``SLURM_STEP_ID``): those ranks
  would never come.
``torch.distributed`` is initialised with NCCL on GPUs and gloo on CPU. All helpers below also work, as
identities, in a single process.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Mapping

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


@dataclass(frozen=True)
class Launch:
    """How this process was started: by "torchrun", by SLURM's "srun", or as a "single" process; its global
    rank, the world size, its rank on its node and where the process group meets (a torch init_method)."""
    launcher: str = "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str = "env://"


RENDEZVOUS_TIMEOUT = timedelta(minutes=10)  # how long srun's tasks may take to meet (they start together)


class LaunchError(ValueError):
    """The processes of a launch did not meet: the message names the meeting point and what to check."""


def _int(env: Mapping[str, str], name: str, default: str) -> int:
    value = env.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name}={value!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[03-05,9],cpu1" -> "gpu03", "a-[1-2]-ib" -> "a-1-ib"."""
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\]([^,]*))?", nodelist.strip())
    prefix, ranges, suffix = match.group(1), match.group(2), match.group(3) or ""
    host = prefix + (re.split(r"[-,]", ranges)[0] + suffix if ranges else "")
    if not host:
        raise ValueError(f"cannot read a host from the SLURM node list {nodelist!r}")
    return host


def _slurm_tasks(env: Mapping[str, str]) -> int:
    """The tasks of this srun step (SLURM_STEP_NUM_TASKS, else the job's SLURM_NTASKS); a value that is not an
    integer names the variable it came from."""
    name = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    return _int(env, name, "1")


def _started_by_srun(env: Mapping[str, str]) -> bool:
    """srun sets SLURM_STEP_ID (SLURM_STEPID in old releases) in each task; sbatch scripts and salloc shells
    have the job's variables (SLURM_NTASKS, even SLURM_PROCID) without it."""
    return "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env)


def _warn_about_tasks_without_srun(env: Mapping[str, str]) -> None:
    tasks = env.get("SLURM_NTASKS", "")
    if tasks.isdigit() and int(tasks) > 1:
        warnings.warn(f"SLURM_NTASKS={tasks} is set but srun did not start this process (no SLURM_STEP_ID): "
                      f"running as ONE process; to run {tasks} processes launch with `srun python ...` (e.g. "
                      f"scripts/slurm.sbatch) or torchrun", stacklevel=3)


def launch_from_environment(env: Mapping[str, str]) -> Launch:
    """The Launch that ``env`` (os.environ) describes (the module docstring); ValueError naming a variable that
    is not a number or a rank outside the world."""
    if "WORLD_SIZE" in env:
        launch = Launch("torchrun", _int(env, "RANK", "0"), _int(env, "WORLD_SIZE", "1"),
                        _int(env, "LOCAL_RANK", "0"))
    elif _started_by_srun(env) and _slurm_tasks(env) > 1:
        nodelist = next((env[k] for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                         if env.get(k)), None)
        if "MASTER_ADDR" not in env and nodelist is None:
            raise ValueError("srun launch: neither MASTER_ADDR nor a SLURM node list (SLURM_NODELIST) is set")
        addr = env.get("MASTER_ADDR") or first_host(nodelist)
        port = _int(env, "MASTER_PORT", str(20000 + _int(env, "SLURM_JOB_ID", "9500") % 20000))
        launch = Launch("slurm", _int(env, "SLURM_PROCID", "0"), _slurm_tasks(env), _int(env, "SLURM_LOCALID", "0"),
                        f"tcp://{addr}:{port}")
    else:
        if not _started_by_srun(env):
            _warn_about_tasks_without_srun(env)
        return Launch()
    if not 0 <= launch.rank < launch.world_size:
        raise ValueError(f"{launch.launcher}: rank {launch.rank} is outside the world of {launch.world_size} "
                         "processes")
    return launch


def meet(launch: Launch, timeout: timedelta = RENDEZVOUS_TIMEOUT) -> dist.Store:
    """The store of an srun launch once all its processes have connected to rank 0's (`launch.init_method`,
    tcp://host:port); LaunchError naming the meeting point when they have not within `timeout`. The store then
    waits as long as torch's process groups do."""
    host, port = launch.init_method.removeprefix("tcp://").rsplit(":", 1)
    try:
        store = dist.TCPStore(host, int(port), launch.world_size, launch.rank == 0, timeout)
    except dist.DistError as error:
        raise LaunchError(
            f"srun launch: rank {launch.rank} of {launch.world_size}: the processes did not all meet at "
            f"{host}:{port} within {int(timeout.total_seconds())} s ({str(error).splitlines()[0]}): start every "
            f"task with srun (SLURM_NTASKS / SLURM_STEP_NUM_TASKS say {launch.world_size}), and check that "
            f"MASTER_ADDR / MASTER_PORT name a free port of rank 0's host that the others reach") from None
    store.set_timeout(dist.default_pg_timeout)
    return store


def init_distributed(device: str = "auto", env: Mapping[str, str] | None = None,
                     rendezvous_timeout: timedelta = RENDEZVOUS_TIMEOUT) -> DistContext:
    """Initialise from the launcher's environment (``env``, default os.environ; see launch_from_environment);
    ``device`` as for resolve_device; srun's processes must meet within ``rendezvous_timeout`` (torchrun has its
    own rendezvous)."""
    launch = launch_from_environment(os.environ if env is None else env)
    gpu = launch.local_rank
    if launch.launcher == "slurm" and torch.cuda.is_available() and torch.cuda.device_count() == 1:
        gpu = 0  # srun --gpus-per-task 1: each task sees its own GPU as device 0
    dev = resolve_device(device, gpu)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if launch.world_size > 1 and not dist.is_initialized():
        meeting = ({"store": meet(launch, rendezvous_timeout)} if launch.launcher == "slurm"
                   else {"init_method": launch.init_method})
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **meeting, world_size=launch.world_size,
                                rank=launch.rank, device_id=dev if use_cuda else None)
    return DistContext(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank, device=dev)


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


class RankFailedError(ValueError):
    """Another process of the group stopped on bad input (the message names its rank and its error)."""


def raise_if_any_failed(error: BaseException | None) -> None:
    """Collective: each rank passes the error it stopped on, or None. When any rank failed, every rank raises:
    its own error, or RankFailedError naming the first rank that failed. In one process: raise `error` if any."""
    errors = all_gather_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
    if failed:
        rank, message = failed[0]
        raise RankFailedError(f"rank {rank} stopped: {message}")
