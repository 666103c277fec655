"""Process set-up and teardown for every command: the Accelerator (devices, processes, CPU threads), the checks
that refuse a launch that would silently run the wrong way, and the way a worker of a multi-process launch ends."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

import torch
from accelerate import Accelerator, DataLoaderConfiguration

from srtrain.config import ConfigError
from srtrain.precision import checked_precision, launcher_disagrees
from srtrain.tracking import console

LAUNCH_HELP = (
    "launch several processes with `accelerate launch --multi_gpu --num_processes N srtrain/main.py` "
    "(several nodes: add --num_machines, --machine_rank, --main_process_ip, --main_process_port; "
    "on CPU-only machines also export ACCELERATE_USE_CPU=1), or run one process without WORLD_SIZE set"
)


def check_launch(accelerator: Accelerator) -> None:
    """Refuse a launch where the environment promises several processes but accelerate runs one: every
    copy would silently train alone on all the data and write the same files."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:
        raise ConfigError(f"WORLD_SIZE={world} but accelerate sees 1 process: {LAUNCH_HELP}")


def make_accelerator(
    mixed_precision: str = "no", grad_accum: int = 1, cpu_threads: int = 0, tracking: bool = False
) -> Accelerator:
    """This process's Accelerator: a GPU when there is one, the precision checked (`srtrain.precision`), W&B as
    its tracker for training, and on CPU the cores shared among this node's processes (`cpu_threads` > 0: that
    many threads, capped to the cores)."""
    use_cpu = not torch.cuda.is_available()
    checked_precision(mixed_precision)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but no distributed launcher started us: {LAUNCH_HELP}"
        )
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with="wandb" if tracking else None,
        # non_blocking: a prepared loader's batch (pinned by its DataLoader) is copied to the GPU without waiting
        # for the steps queued before it; accelerate's default waits
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=not use_cpu),
    )
    check_launch(accelerator)
    if (note := launcher_disagrees(mixed_precision)) and accelerator.is_main_process:
        console.print(f"[yellow]{note}")
    if use_cpu:
        # `accelerate launch` exports OMP_NUM_THREADS=1 unless told otherwise, which leaves all but one core
        # idle; share the cores among this node's processes instead (or take cpu_threads as given).
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        cores = os.cpu_count() or 1
        if cpu_threads > cores and accelerator.is_main_process:  # more threads than cores only slows down
            console.print(f"[bold yellow]note:[/] cpu_threads={cpu_threads} capped to this machine's {cores} cores")
        torch.set_num_threads(min(cpu_threads, cores) or max(1, cores // local_processes))
    return accelerator


def close_process_group() -> bool:
    """Every rank, on every way out of a command, destroys its gloo/NCCL group; True when there was one."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group to close
    if dist is None or not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True


def end_process(status: int) -> NoReturn:
    """A worker of a multi-process launch ends here, after its group is closed, without finalizing the interpreter.

    torch never joins gloo's worker threads (destroying the group leaves them running). One that is still releasing
    a finished collective's tensors when the interpreter finalizes needs the GIL that finalization denies it, and
    the process aborts with "terminate called without an active exception" (about 1 run in 60 of a 2-process
    training on CPU; pytorch/pytorch PR 179291). So the exit handlers (W&B, logging) run and the output is flushed
    while the interpreter is whole, then the process exits with `status` at once."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
