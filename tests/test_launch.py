"""The launch environment: SLURM's srun variables parsed into rank / world size / local rank and the meeting
point, torchrun's winning over them, one process otherwise (fabricated environments, no process started)."""
from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from tests.conftest import free_port
from utils.engine.runtime import distributed
from utils.engine.runtime.distributed import Launch, first_host, init_distributed, launch_from_environment

SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456", "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NODELIST": "gpu[07-08]"}


class FakeStore:
    """Stands for the TCPStore of an srun launch (no process group is formed)."""

    timeout = None

    def set_timeout(self, timeout):
        self.timeout = timeout


def test_srun_variables_give_rank_world_and_local_rank(monkeypatch):
    calls, stores = [], []
    monkeypatch.setattr(distributed.dist, "TCPStore", lambda *args: stores.append(args) or FakeStore())
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    for name, value in SRUN.items():
        monkeypatch.setenv(name, value)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")  # reads os.environ
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device) == (5, 8, 1, torch.device("cpu"))
    # the first node of the step, port 20000 + 123456 mod 20000; rank 5 a client of rank 0's store
    assert stores == [("gpu07", 23456, 8, False, distributed.RENDEZVOUS_TIMEOUT)]
    assert calls == [{"backend": "gloo", "store": calls[0]["store"], "world_size": 8, "rank": 5, "device_id": None}]
    assert isinstance(calls[0]["store"], FakeStore) and calls[0]["store"].timeout == distributed.dist.default_pg_timeout


def test_master_address_and_port_and_the_job_count_fallbacks():
    env = {**SRUN, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
    assert launch_from_environment(env).init_method == "tcp://10.0.0.1:29400"
    no_step = {k: v for k, v in SRUN.items() if k == "SLURM_STEP_ID" or not k.startswith("SLURM_STEP")}
    assert launch_from_environment({**no_step, "SLURM_NTASKS": "6"}) == Launch("slurm", 5, 6, 1, "tcp://gpu07:23456")


@pytest.mark.parametrize("env,expected", [
    ({**SRUN, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, Launch("torchrun", 1, 2, 1)),  # torchrun wins
    ({**SRUN, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, Launch()),  # one task (the batch script itself)
    ({}, Launch()),
])
def test_torchrun_wins_and_one_task_is_one_process(env, expected):
    assert launch_from_environment(env) == expected


@pytest.mark.parametrize("env", [
    {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"},                                  # an salloc shell
    {k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"},                     # an sbatch script (SLURM_PROCID 0..)
])
def test_slurm_tasks_without_srun_run_one_process_with_a_warning(monkeypatch, env):
    """A plain `python main.py` where SLURM's job variables ask for several tasks: no process group (it would wait
    for ranks srun never starts), a warning saying how to launch them."""
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: pytest.fail("no process group"))
    with pytest.warns(UserWarning, match=r"SLURM_NTASKS=\d is set but srun did not start this process \(no "
                                         r"SLURM_STEP_ID\): running as ONE process; .* launch with `srun python"):
        ctx = init_distributed("cpu", env)
    assert (ctx.rank, ctx.world_size) == (0, 1)


def test_srun_processes_that_do_not_meet_stop_naming_the_meeting_point():
    """Rank 0 of 2 with no other task: a LaunchError after the rendezvous timeout instead of a silent wait (torch's
    default: 30 minutes), naming the host and port."""
    port = free_port()
    env = {**SRUN, "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    with pytest.raises(distributed.LaunchError, match=rf"srun launch: rank 0 of 2: the processes did not all meet "
                                                      rf"at 127\.0\.0\.1:{port} within 1 s .*start every task "
                                                      rf"with srun"):
        init_distributed("cpu", env, rendezvous_timeout=timedelta(seconds=1))
    assert not distributed.dist.is_initialized()


@pytest.mark.parametrize("nodelist,host", [("gpu[03-05,9],cpu1", "gpu03"), ("node7", "node7"), ("n1,n2", "n1"),
                                           ("a-[1-2]-ib", "a-1-ib"), ("x[3]", "x3")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize("env,message", [
    ({**SRUN, "SLURM_PROCID": "x"}, r"the environment variable SLURM_PROCID='x' is not an integer"),
    ({**SRUN, "SLURM_PROCID": "8"}, "slurm: rank 8 is outside the world of 8 processes"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"}, "neither MASTER_ADDR nor a SLURM node list"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({**{k: v for k, v in SRUN.items() if k != "SLURM_STEP_NUM_TASKS"}, "SLURM_NTASKS": "abc"},
     "the environment variable SLURM_NTASKS='abc' is not an integer"),
    ({**SRUN, "SLURM_STEP_NUM_TASKS": "abc"}, "the environment variable SLURM_STEP_NUM_TASKS='abc' is not an integer"),
    ({**SRUN, "MASTER_PORT": "http"}, "the environment variable MASTER_PORT='http' is not an integer"),
])
def test_bad_launch_variables_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        launch_from_environment(env)


def dry_run_msrvtt(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`DRY_RUN=1 bash scripts/msrvtt.sh` with a fake MSR-VTT folder and `env` on top: the planned command on stdout,
    the batch plan on stderr."""
    root = tmp_path / "msrvtt"
    (root / "videos").mkdir(parents=True)
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_data.json", "MSRVTT_JSFUSION_test.csv"):
        (root / name).touch()
    full_env = {**os.environ, "MSRVTT_ROOT": str(root), "PRETRAINED_DIR": str(tmp_path), "DRY_RUN": "1",
                "OUTPUT_DIR": str(tmp_path / "out"), **env}
    for name in ("ACCUMULATE", "PER_GPU_BATCH", "SLURM_PROCID", "SLURM_STEP_ID", "SLURM_NTASKS",
                 "SLURM_STEP_NUM_TASKS"):
        if name not in env:
            full_env.pop(name, None)
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(["bash", "scripts/msrvtt.sh"], cwd=repo, env=full_env, capture_output=True, text=True,
                          timeout=60)


def test_the_dataset_scripts_run_one_python_process_per_srun_task(tmp_path):
    """scripts/slurm.sbatch runs `srun bash scripts/msrvtt.sh`: under a task's variables the script starts python
    (not torchrun) and splits the global batch 128 over the step's 8 tasks."""
    proc = dry_run_msrvtt(tmp_path, SLURM_PROCID="3", SLURM_STEP_ID="0", SLURM_NTASKS="8", NPROC_PER_NODE="4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("python main.py ")
    assert "--batch_size 16 --gradient_accumulation_steps 1 --micro_batch_size 0 " in proc.stdout
    assert "global batch 128 = 16 per process x 8 processes: each contrastive loss sees 128 pairs" in proc.stderr


def test_the_dataset_scripts_in_an_sbatch_script_without_srun_do_not_split_over_tasks(tmp_path):
    """The batch script itself (SLURM_PROCID 0, SLURM_NTASKS 8, no srun step): one process, the whole batch."""
    proc = dry_run_msrvtt(tmp_path, SLURM_PROCID="0", SLURM_NTASKS="8", NPROC_PER_NODE="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("python main.py ")
    assert "--batch_size 128 " in proc.stdout and "x 1 processes" in proc.stderr


def test_one_gpu_plans_the_exact_128_pair_loss_by_default(tmp_path):
    """The released contrastive batch on one GPU: the whole 128 pairs in one loss, in micro-batches of
    PER_GPU_BATCH (gradient caching, one more forward), not 4 accumulation steps of 32-pair losses."""
    proc = dry_run_msrvtt(tmp_path, NPROC_PER_NODE="1")
    assert proc.returncode == 0, proc.stderr
    assert "--batch_size 128 --gradient_accumulation_steps 1 --micro_batch_size 32 " in proc.stdout
    assert "each contrastive loss sees 128 pairs, as released; cost: one more forward" in proc.stderr
    wider = dry_run_msrvtt(tmp_path / "wider", NPROC_PER_NODE="1", PER_GPU_BATCH="64")
    assert "--batch_size 128 --gradient_accumulation_steps 1 --micro_batch_size 64 " in wider.stdout


def test_gradient_accumulation_is_an_explicit_opt_in(tmp_path):
    proc = dry_run_msrvtt(tmp_path, NPROC_PER_NODE="1", ACCUMULATE="1")
    assert proc.returncode == 0, proc.stderr
    assert "--batch_size 32 --gradient_accumulation_steps 4 --micro_batch_size 0 " in proc.stdout
    assert "each contrastive loss sees 32 pairs, not 128 (fewer negatives than released); no extra forward" \
        in proc.stderr
    bad = dry_run_msrvtt(tmp_path / "bad", NPROC_PER_NODE="1", ACCUMULATE="yes")
    assert bad.returncode == 2 and "ACCUMULATE=yes: set 1" in bad.stderr and not bad.stdout
