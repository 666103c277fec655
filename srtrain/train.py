"""The training loop, top to bottom: set-up, resume, then per step train and post the step's sums (read by the
host once the device is done with them: srtrain/agreement.py), per epoch validate, checkpoint and log. Nothing is
lost to a fault but the current step: see docs/faults.md."""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import broadcast_object_list, set_seed
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from srtrain.agreement import StepAgreement, StepSums, lag_for
from srtrain.checkpoint import (
    CheckpointError,
    TrainState,
    checkpoint_problem,
    copy_checkpoint,
    is_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from srtrain.config import Config, ConfigError
from srtrain.data import (
    DevicePatches,
    StreamLoader,
    StreamPatches,
    TrainImages,
    TrainPatches,
    ValImages,
    load_images,
    training_pair,
    whole_batch,
)
from srtrain.ema import WeightAverage
from srtrain.evaluation import evaluate
from srtrain.faults import inject
from srtrain.files import first_line, write_text_atomically
from srtrain.launch import make_accelerator
from srtrain.losses import LOSSES
from srtrain.models import build_model
from srtrain.models.profile import trainable_parameters
from srtrain.models.weights import load_init_weights
from srtrain.rundir import RunDir, open_run, repair_after_kill
from srtrain.stopping import EXIT_RESUMABLE, StoppedToResume, Stopper
from srtrain.tracking import Tracker, console, new_run_id, only_wandb_run, rows_wandb_lacks, wandb_mode
from srtrain.visual import sample_grid


class NonFiniteLossError(RuntimeError):
    """Training diverged: raised at the first NaN/inf loss, or a loss DIVERGED_FACTOR times its lowest, before more
    compute is wasted (and before such a model is validated, let alone kept as `best`)."""


class AlreadyFinished(Exception):
    """A resume of a run that trained all its epochs (or its time budget): nothing to do, status 0."""


DIVERGED_FACTOR = 100.0  # a step's loss this many times the run's lowest: diverged (docs/faults.md)


def checked_model(cfg: Config) -> torch.nn.Module:
    """The job's model, built and run once on a tiny LR patch: an option it cannot use (`channels=0`, a head count
    that does not divide the width...) fails here, as a configuration error, before data or a run directory."""
    negative = [f"model.{k}={v}" for k, v in cfg.model.args.items() if isinstance(v, int | float) and v < 0]
    if negative:  # sizes, counts, factors: a negative one builds an empty or mirrored part instead of failing
        raise ConfigError(f"model '{cfg.model.name}': {', '.join(negative)} must be >= 0")
    try:
        with warnings.catch_warnings():  # torch warns of zero-size weights (channels=0) before they fail below
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            model = build_model(cfg.model.name, cfg.scale, **cfg.model.args)
        side = cfg.patch_size // cfg.scale
        probe = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))  # the seeded RNG untouched
        with torch.no_grad():
            sr = model.eval()(probe)
        if sr.shape != (1, 3, side * cfg.scale, side * cfg.scale):
            raise ValueError(f"it returns {tuple(sr.shape)} for a {side}x{side} input at x{cfg.scale}")
    except ConfigError:
        raise
    except Exception as err:  # each model's constructor and forward raise their own types
        options = ", ".join(f"model.{k}={v!r}" for k, v in cfg.model.args.items()) or "its default options"
        reason = " ".join(str(err).split()) or type(err).__name__  # the whole reason, on one line
        raise ConfigError(
            f"model '{cfg.model.name}' x{cfg.scale} does not work with {options} ({reason}); fix those values "
            "(docs/models.md lists each model's options)"
        ) from None
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model '{cfg.model.name}' has no parameters to train; pick a trainable --model")
    return model.train()


def training_forward(model: torch.nn.Module, cfg: Config, accelerator: Accelerator) -> Callable[..., torch.Tensor]:
    """The module the training step calls: `model`, or with `compile: true` a torch.compile of it in `compile_mode`
    sharing its weights (`reduce-overhead` replays the fixed-shape step as CUDA graphs: one launch instead of one per
    kernel, what a small model's step is made of on a GPU). Validation, samples and checkpoints keep the eager
    module: it is what `srtrain eval` runs (same float32 scores, plain state_dict keys), and validation images of
    every size would each recompile. A tiny function is compiled first, so that a machine without a working
    compiler stops here, before training."""
    if not cfg.compile:
        return model
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(1, device=accelerator.device))
    except Exception as err:  # inductor raises its own types, from dynamo, the C++ compiler or triton
        reason = first_line(err)
        raise ConfigError(
            f"compile: true, but torch.compile fails on {accelerator.device} ({reason}): install a C++ compiler "
            "(apt-get install g++; on CUDA also triton) or set --compile=false"
        ) from None
    if accelerator.is_main_process:
        console.print("torch.compile: the training forward compiles at the first steps (tens of seconds on CPU)")
    return torch.compile(model, mode=cfg.compile_mode)


def check_in_sync(accelerator: Accelerator, *models: torch.nn.Module) -> None:
    """All replicas must hold identical weights (DDP applies the same averaged gradients everywhere), and identical
    weight averages; a checksum per process proves it at every checkpoint and stops a run whose ranks drifted apart."""
    checksum = sum(p.detach().double().sum() for model in models for p in model.parameters()).reshape(1)
    sums = accelerator.gather(checksum)
    if not bool((sums == sums[0]).all()):
        raise RuntimeError(f"model replicas differ across processes (weight checksums {sums.tolist()})")


def checked(images: TrainImages, cfg: Config, min_hr: int, fix: str, main: bool) -> TrainImages:
    """The images, refused before training if one is bad, or without the bad ones (`data.skip_bad`)."""
    if not cfg.data.skip_bad:
        images.check(cfg.scale, min_hr, fix)
        return images
    images, skipped = images.without_bad(cfg.scale, min_hr, fix, cfg.data.max_bad_fraction)
    for n, message in enumerate(skipped, 1) if main else ():
        console.print(f"[bold yellow]warning:[/] skipped bad image {n}/{len(skipped)}: {message}", highlight=False)
    return images


def make_train_loader(cfg: Config, accelerator: Accelerator) -> DataLoader | StreamLoader:
    """This process's training batches: the patch dataset, checked, then sharded by accelerate's `prepare`;
    a streamed source (`data.streaming`) is split by `StreamPatches` itself and must not be sharded again. With
    `data.on_device` the same loader's batches are cut where the model trains (`DevicePatches`), not in the host's
    loader."""
    fix = f"lower --patch_size (now {cfg.patch_size}) or remove the image"
    if cfg.data.streaming:
        patches = StreamPatches(
            cfg.data, cfg.scale, cfg.patch_size, cfg.seed, fix, accelerator.process_index, accelerator.num_processes
        )
        loader = DataLoader(
            patches,
            batch_size=cfg.batch_size,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        return StreamLoader(loader, accelerator.device)
    images = checked(load_images(cfg.data, "train"), cfg, cfg.patch_size, fix, accelerator.is_main_process)
    order = {"batch_size": cfg.batch_size, "shuffle": True, "drop_last": True}  # the same batches on both paths
    if cfg.data.on_device:
        patches = DevicePatches(images, cfg.scale, cfg.patch_size, cfg.data.repeat, cfg.seed, accelerator.device)
        if accelerator.is_main_process:
            console.print(f"[bold]note:[/] data.on_device: {patches.where}")
        return accelerator.prepare(DataLoader(patches, collate_fn=whole_batch, **order))
    patches = TrainPatches(images, cfg.scale, cfg.patch_size, cfg.data.repeat, cfg.seed)
    loader = DataLoader(patches, num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(), **order)
    return accelerator.prepare(loader)


def lr_at(cfg: Config, progress: float) -> float:
    """The learning rate at `progress` in [0, 1] of training: linear warm-up, then cosine to `min_lr`,
    step decay by `gamma` every `step_every`, or constant."""
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    t = min(1.0, (progress - cfg.warmup) / (1 - cfg.warmup))
    if cfg.scheduler == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** math.floor(t / cfg.step_every)
    return cfg.lr


def epoch_batches(loader: DataLoader | StreamLoader, epoch: int, skip: int) -> Iterable[dict[str, torch.Tensor]]:
    """Epoch `epoch`'s batches after the first `skip` (consumed before a mid-epoch checkpoint). A map-style
    loader skips them in its sampler, without loading a patch; a stream has to read past them."""
    loader.dataset.set_epoch(epoch)  # the patches drawn (accelerate's set_epoch reaches only the sampler)
    loader.set_epoch(epoch)
    if not skip:
        return loader
    return (
        itertools.islice(loader, skip, None) if isinstance(loader, StreamLoader) else skip_first_batches(loader, skip)
    )


def on_main(accelerator: Accelerator, write: Callable[[], None]) -> None:
    """Run `write` on the main process; its failure (e.g. a full disk) stops every process, none left waiting."""
    error = [""]
    if accelerator.is_main_process:
        try:
            write()
        except CheckpointError as err:
            error = [str(err)]
        except OSError as err:  # metrics.jsonl, a sample grid: the checkpoint before them is complete
            error = [f"could not write {first_line(err)}; free space and resume with --resume=auto"]
    broadcast_object_list(error)
    if error[0]:
        raise CheckpointError(error[0])


@dataclass
class Job:
    """What the step and epoch-end functions share."""

    cfg: Config
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., torch.Tensor]
    state: TrainState
    stopper: Stopper
    tracker: Tracker
    run: RunDir
    config_yaml: str
    train_loader: DataLoader | StreamLoader
    memory_format: torch.memory_format
    forward: Callable[..., torch.Tensor]  # the training step's: `model`, or its torch.compile (`compile: true`)
    val_loader: DataLoader
    val_set: ValImages
    bicubic_psnr_y: float
    total_steps: int
    agreement: StepAgreement
    average: WeightAverage | None  # with `ema`: what is validated, sampled and kept as `best`
    clock0: float = 0.0  # perf_counter() minus the training seconds already spent
    epoch_began: float = 0.0  # the training seconds when this epoch began
    saved_at_s: float = 0.0  # training seconds at the last checkpoint
    nan_skips: int = 0


def finish_step(job: Job, loss_sum: torch.Tensor, patches: int, epoch_end: bool) -> None:
    """End an optimizer step on every process without waiting for the device: post the step's sums (`loss_sum`:
    this process's loss times its `patches`, on the device) for the host to read later (`StepAgreement`), then the
    update, which the optimizer skips on the device where the summed loss is not finite (`found_inf`)."""
    cfg, state, stopper, acc = job.cfg, job.state, job.stopper, job.accelerator
    inject("step", state.step + 1, acc.is_main_process, lambda: bool(stopper.signal_name))
    state.step += 1
    progress = stopper.progress_of_budget() if stopper.budget_s else state.step / job.total_steps
    lr = lr_at(cfg, progress)
    clock = time.perf_counter() - job.clock0
    skip = job.agreement.post(state.step, loss_sum, patches, lr, stopper.vote(), clock, epoch_end)
    job.optimizer.optimizer.found_inf = skip  # read by the fused Adam(W) step (under fp16, the loss scaler's own)
    if cfg.grad_clip:
        acc.clip_grad_norm_(job.model.parameters(), cfg.grad_clip)
    for group in job.optimizer.param_groups:
        group["lr"] = lr
    update(job.optimizer.optimizer, acc.scaler)
    if job.average:
        job.average.update(state.step, skip)


def update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """The optimizer's step, through the loss scaler under fp16, then the gradients cleared: what accelerate's
    optimizer wrapper does for one process or DDP, without its per-call look for an optional package (twice a step)
    and for `zero_grad`'s signature, 0.5 ms a step on a CPU: as long as a small model's whole step on a GPU."""
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


def settle(job: Job, steps: list[StepSums]) -> None:
    """The host's part of steps the device has done, in order: the agreed stop votes and clock, the loss checked
    (`nan_policy`, divergence), added to the epoch's and logged on the step axis. Raises NonFiniteLossError at the
    first step that fails a check (every process at the same step), before anything after it is saved."""
    cfg, state, stopper = job.cfg, job.state, job.stopper
    for done in steps:
        stopper.update(done.signals > 0, done.seconds)
        state.train_seconds = stopper.train_seconds
        state.epoch_seconds = state.train_seconds - job.epoch_began
        loss = done.loss
        if not math.isfinite(loss):
            job.nan_skips += 1
            if cfg.nan_policy == "stop" or job.nan_skips > cfg.nan_max_skips:
                in_a_row = f", {job.nan_skips} steps in a row" if cfg.nan_policy == "skip" else ""
                raise NonFiniteLossError(
                    f"loss became {loss} at step {done.step} (epoch {state.epoch + 1}){in_a_row}: {fixes(job)}"
                )
        elif loss > DIVERGED_FACTOR * state.lowest_loss:
            raise NonFiniteLossError(
                f"training diverged at step {done.step} (epoch {state.epoch + 1}): the loss is {loss:.4g}, "
                f"{loss / state.lowest_loss:,.0f} times its lowest ({state.lowest_loss:.4g}), likely a learning rate "
                f"too high: {fixes(job)}"
            )
        else:
            job.nan_skips, state.lowest_loss = 0, min(state.lowest_loss, loss)
            state.epoch_loss_sum, state.epoch_patches = (
                state.epoch_loss_sum + done.loss_sum,
                state.epoch_patches + done.patches,
            )
        state.step_values = {"train/loss": loss, "train/lr": done.lr}
        job.tracker.log_step(done.step, state.step_values, commit=not (done.epoch_end or stopper.out_of_time()))


def fixes(job: Job) -> str:
    """What to change after a diverged step, and where the last good checkpoint is."""
    cfg, last = job.cfg, job.run.last
    changes = [
        f"lower --lr (now {cfg.lr})",
        f"lower --grad_clip (now {cfg.grad_clip})" if cfg.grad_clip else "set --grad_clip",
    ]
    if cfg.mixed_precision != "no":
        changes.append("use --mixed_precision=no")
    if is_checkpoint(last) and not checkpoint_problem(last):
        where = f"the last good checkpoint is {last} (step {read_state(last).step}; --resume=auto continues from it)"
    else:
        where = f"no checkpoint was written yet: remove {job.run.path} or pick another --output_dir to run again"
    return f"{', '.join(changes[:-1])} or {changes[-1]}; {where}"


def save_last(job: Job) -> None:
    """Checkpoint this step to `checkpoints/last` (every process calls: the replicas are compared first)."""
    check_in_sync(job.accelerator, job.model, *([job.average.model] if job.average else []))
    job.saved_at_s = job.state.train_seconds
    on_main(job.accelerator, lambda: write_last(job))


def write_last(job: Job) -> None:
    """Write `checkpoints/last` from the state as it is (one process)."""
    acc, average = job.accelerator, job.average.model if job.average else None
    plain = acc.unwrap_model(job.model)
    save_checkpoint(job.run.last, plain, job.optimizer, job.state, job.config_yaml, acc.scaler, average)


def checkpoint_due(job: Job) -> bool:
    cfg, state = job.cfg, job.state
    by_steps = bool(cfg.checkpoint_every) and state.step % cfg.checkpoint_every == 0
    by_time = bool(cfg.checkpoint_every_min) and state.train_seconds - job.saved_at_s >= 60 * cfg.checkpoint_every_min
    return by_steps or by_time


def end_epoch(job: Job, epoch: int, validate: bool) -> dict[str, float]:
    """Validate (when due: the weight average with `ema`, and the trained weights beside it), checkpoint, then
    publish: W&B and metrics.jsonl committed right after the checkpoint (a resume restores a row a kill cut off),
    then samples and `best`. Returns the epoch's metrics."""
    cfg, state, acc = job.cfg, job.state, job.accelerator
    row: dict[str, float] = {}
    if validate:
        inject("validation", epoch, acc.is_main_process)
        evaluated = job.average.model if job.average else job.model
        val = evaluate(
            evaluated, job.val_loader, acc, cfg.scale, job.loss_fn, gray=cfg.data.gray, ensemble=cfg.val_ensemble
        )
        row = {
            "train_loss": state.epoch_loss_sum / state.epoch_patches if state.epoch_patches else float("nan"),
            "val_loss": val["loss"].mean().item(),
            "psnr_y": val["psnr_y"].mean().item(),
            "ssim_y": val["ssim_y"].mean().item(),
            "psnr_rgb": val["psnr_rgb"].mean().item(),
            "bicubic_psnr_y": job.bicubic_psnr_y,
            "lr": job.optimizer.param_groups[0]["lr"],
            "epoch_time_s": state.epoch_seconds,
            "patches_per_s": state.epoch_patches / state.epoch_seconds if state.epoch_seconds else 0.0,
            "train_minutes": state.train_seconds / 60,
        }
        if job.average:  # the row's scores are the average's; the trained weights' beside them
            raw = evaluate(job.model, job.val_loader, acc, cfg.scale, gray=cfg.data.gray, ensemble=cfg.val_ensemble)
            row |= {"raw_psnr_y": raw["psnr_y"].mean().item(), "raw_ssim_y": raw["ssim_y"].mean().item()}
    with job.stopper.updating():  # a stop signal during validation saves the epoch's last step (one process)
        return close_epoch(job, epoch, row)


def close_epoch(job: Job, epoch: int, row: dict[str, float]) -> dict[str, float]:
    """The epoch's state, its checkpoint, then W&B, metrics.jsonl, samples and `best`."""
    cfg, state, acc = job.cfg, job.state, job.accelerator
    improved = bool(row) and row["psnr_y"] > state.best_psnr_y
    if improved:
        state.best_psnr_y, state.best_epoch = row["psnr_y"], epoch
    if row:
        row["best_psnr_y"] = state.best_psnr_y
    state.epoch, state.epoch_row = epoch, row
    state.batches_done, state.epoch_loss_sum, state.epoch_patches, state.epoch_seconds = 0, 0.0, 0, 0.0
    save_last(job)

    def publish() -> None:
        inject("epoch_end", epoch, True)
        if not row:
            return
        plain = job.average.model if job.average else acc.unwrap_model(job.model)
        samples = [
            sample_grid(plain, job.val_set[i], cfg.scale, cfg.val_ensemble)
            for i in range(min(cfg.num_samples, len(job.val_set)))
        ]
        job.tracker.log_samples(samples, epoch, state.step)
        job.tracker.log_epoch(row, epoch, state.step)
        job.tracker.summary(
            best_psnr_y=state.best_psnr_y, best_epoch=state.best_epoch, bicubic_psnr_y=job.bicubic_psnr_y
        )
        if improved:
            copy_checkpoint(job.run.last, job.run.best)

    on_main(acc, publish)
    return row


def stop_message(job: Job) -> str:
    state = job.state
    saved = f"checkpoint {job.run.last}" if state.step else "nothing trained yet"
    return (
        f"stopped by {job.stopper.cause() or 'a signal to another process'} at step {state.step} (epoch "
        f"{state.epoch + 1}, batch {state.batches_done}); {saved}; continue with --resume=auto"
    )


def stop_to_resume(job: Job) -> None:
    """A signal (several processes): checkpoint this step (unless the epoch end just did), leave the marker, flush
    W&B, exit 75."""
    state = job.state
    if state.batches_done:
        save_last(job)
    on_main(job.accelerator, lambda: job.stopper.write_marker(job.run.stopped, state.step, state.epoch))
    job.tracker.finish()
    raise StoppedToResume(stop_message(job))


def save_to_resume(job: Job) -> int:
    """A signal (one process, `Stopper.arm`): the state is that of the last completed step; checkpoint it (unless
    the epoch end just did), leave the marker and say so; the exit status. Runs in a forked child on CPU: no
    threads of its own, its line written straight to the file descriptor."""
    torch.set_num_threads(1)  # a forked child has none of the parent's OpenMP threads
    state, status = job.state, EXIT_RESUMABLE
    try:
        settle(job, job.agreement.drain())  # on a GPU, the last steps the host had not read yet (none on a CPU)
        line = f"srtrain: {stop_message(job)}"
        if state.batches_done:
            write_last(job)
        job.stopper.write_marker(job.run.stopped, state.step, state.epoch)
    except (CheckpointError, OSError, NonFiniteLossError) as err:
        line, status = f"error: {err}", 1
    with suppress(OSError):  # a closed stderr must not turn a saved stop into a failure
        os.write(2, (line + "\n").encode())
    return status


def progress_bar(epoch: int, cfg: Config, main: bool) -> Progress:
    return Progress(
        TextColumn(f"epoch {epoch}/{cfg.epochs}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not main,
        transient=True,
    )


def start_job(cfg: Config) -> Job:
    """Everything before the first step: launch checks, model, data, then the run directory (new, or resumed from
    its checkpoint), optimizer, tracker, and the bicubic baseline every epoch is compared with."""
    accelerator = make_accelerator(cfg.mixed_precision, cfg.grad_accum, cfg.cpu_threads, tracking=True)
    stopper = Stopper(cfg.time_budget_min * 60)
    stopper.install()
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.grad_accum
    model = checked_model(cfg)
    train_loader = make_train_loader(cfg, accelerator)
    val_images = checked(load_images(cfg.data, "val"), cfg, 8 * cfg.scale, "remove it from the validation set", main)
    # the model and the data passed their checks: only now is a run directory made (a failed start leaves none)
    run = open_run(cfg, main, global_batch)
    try:
        return claimed_job(cfg, accelerator, stopper, model, train_loader, val_images, run, global_batch)
    except BaseException:
        run.discard()
        raise


def claimed_job(
    cfg: Config,
    accelerator: Accelerator,
    stopper: Stopper,
    model: torch.nn.Module,
    train_loader: DataLoader | StreamLoader,
    val_images: TrainImages,
    run: RunDir,
    global_batch: int,
) -> Job:
    """The rest of the start, in the claimed run directory: weights, optimizer, the checkpoint resumed, the tracker
    and the bicubic baseline."""
    main = accelerator.is_main_process
    if cfg.init_from and run.ckpt is None:
        fresh = load_init_weights(model, Path(cfg.init_from), cfg.model.name, cfg.scale, cfg.model.args)
        if main and fresh:
            console.print(fresh)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # NHWC often runs convolutions faster on GPUs
    val_set = ValImages(val_images, cfg.scale)
    val_loader = DataLoader(val_set, batch_size=1, num_workers=cfg.data.num_workers)

    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel per update, and the update skipped on the device for a non-finite loss (`finish_step`)
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    loss_fn = LOSSES[cfg.loss]
    model, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
    # accelerate runs the whole forward under autocast; keep that to the training step, so that validation and
    # samples score the float32 output `srtrain eval` gives for the saved weights
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    average = WeightAverage(accelerator.unwrap_model(model), cfg.ema) if cfg.ema else None
    forward = training_forward(model, cfg, accelerator)
    # accelerate also steps on an epoch's last batch, so an epoch of n batches has ceil(n / grad_accum) steps
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    if len(train_loader) < cfg.grad_accum:
        raise ConfigError(
            f"an epoch has {len(train_loader.dataset)} patches, fewer than one global batch "
            f"({cfg.batch_size} x {accelerator.num_processes} processes x {cfg.grad_accum}); raise --data.repeat"
        )

    state = TrainState()
    if run.ckpt is not None:
        plain, averaged = accelerator.unwrap_model(model), average.model if average else None
        state = load_checkpoint(run.ckpt, plain, optimizer, accelerator.scaler, averaged)
    if not run.continues:  # a new run, also from another run's checkpoint: a new W&B run (or the one started over)
        state.wandb_run_id = (only_wandb_run(run) if run.started_over else "") or new_run_id()
    config_yaml = cfg.to_yaml()
    lost_rows: list[dict[str, float]] = []  # metrics rows a kill kept from W&B: logged again
    if main and run.continues:
        rows, damaged = repair_after_kill(run, state)
        if damaged:
            console.print(
                f"[bold yellow]warning:[/] {run.metrics}: line(s) {damaged} are not whole rows (a write cut off by a "
                "full disk or a kill); rewritten without them (the checkpoint's own epoch row is kept)"
            )
        if wandb_mode(cfg) != "disabled":
            lost_rows = rows_wandb_lacks(run, state.wandb_run_id, rows)
    elif main:
        if run.started_over:
            console.print(f"[bold yellow]note:[/] {run.path} has no checkpoint yet: the run starts over there")
        write_text_atomically(run.config, config_yaml)
    done = [run.continues and finished(cfg, state) and not lost_rows]  # (W&B rows to restore: a segment for them)
    broadcast_object_list(done)
    if done[0]:
        raise AlreadyFinished(
            f"{run.path} already finished (epoch {state.epoch} of {cfg.epochs}, best PSNR-Y {state.best_psnr_y:.2f} "
            f"dB at epoch {state.best_epoch}); nothing to train: raise --epochs or --time_budget_min to train on"
        )
    if main and run.ckpt is not None and state.epoch_batches not in (0, len(train_loader)):
        console.print(
            f"[bold yellow]note:[/] the training data now makes {len(train_loader)} batches per epoch where the "
            f"checkpoint's run had {state.epoch_batches}: epochs and the learning-rate schedule change from here"
        )
    state.epoch_batches = len(train_loader)
    tracker = Tracker(accelerator, cfg, run, state.wandb_run_id)
    tracker.restore_epochs(lost_rows, state.step, state.step_values)
    stopper.update(False, state.train_seconds)
    state.global_batch = global_batch
    bicubic = evaluate(
        build_model("bicubic", cfg.scale).to(accelerator.device), val_loader, accelerator, cfg.scale, gray=cfg.data.gray
    )
    job = Job(
        cfg,
        accelerator,
        model,
        optimizer,
        loss_fn,
        state,
        stopper,
        tracker,
        run,
        config_yaml,
        train_loader,
        memory_format,
        forward,
        val_loader,
        val_set,
        bicubic["psnr_y"].mean().item(),
        cfg.epochs * steps_per_epoch,
        StepAgreement(accelerator, lag_for(accelerator.device)),
        average,
        saved_at_s=state.train_seconds,
    )
    if main:
        announce(job, len(val_images))
    return job


def finished(cfg: Config, state: TrainState) -> bool:
    """At an epoch's end (validated) with every epoch trained, or the time budget spent."""
    budget_spent = bool(cfg.time_budget_min) and state.train_seconds >= 60 * cfg.time_budget_min
    return not state.batches_done and (state.epoch >= cfg.epochs or budget_spent)


def announce(job: Job, val_count: int) -> None:
    """The run's one-line summary: model, data, processes, batch, precision, length, where it writes."""
    cfg, acc, run, state = job.cfg, job.accelerator, job.run, job.state
    n_params = trainable_parameters(job.model)
    length = f"{cfg.time_budget_min:g} min budget" if job.stopper.budget_s else f"{job.total_steps} steps"
    for problem in run.skipped:
        console.print(f"[bold yellow]warning:[/] damaged checkpoint passed over: {problem}")
    console.print(
        f"[bold]srtrain[/] {cfg.model.name} x{cfg.scale}: {n_params:,} parameters, "
        f"{len(job.train_loader.dataset.images)} train / {val_count} val images, {acc.num_processes} process(es) "
        f"on {acc.device}, batch {cfg.batch_size}/process x {acc.num_processes} x {cfg.grad_accum} accumulation = "
        f"{state.global_batch} global, lr {cfg.lr}, {cfg.mixed_precision} precision, {length}, run dir {run.path}"
        + (
            f", resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batches_done}) from {run.ckpt}"
            if run.ckpt
            else ""
        )
    )


def finish_job(job: Job, last: dict[str, float]) -> dict[str, float]:
    """Close the tracker, print the verdict against bicubic, return the run's summary."""
    state, acc = job.state, job.accelerator
    job.tracker.finish()
    if acc.is_main_process:
        final = last.get("psnr_y", state.best_psnr_y)
        same = f"weights identical on all {acc.num_processes} processes; " if acc.num_processes > 1 else ""
        console.print(
            f"[bold]done[/]: final val PSNR-Y {final:.2f} dB vs bicubic {job.bicubic_psnr_y:.2f} dB "
            f"({final - job.bicubic_psnr_y:+.2f} dB); best {state.best_psnr_y:.2f} dB at epoch {state.best_epoch}; "
            f"{same}checkpoints in {job.run.checkpoints}"
        )
    return {
        "best_psnr_y": state.best_psnr_y,
        "best_epoch": state.best_epoch,
        "bicubic_psnr_y": job.bicubic_psnr_y,
        **{f"final_{k}": v for k, v in last.items()},
    }


def train(cfg: Config) -> dict[str, float]:
    """Run one job; return the final summary (best and last PSNR-Y, bicubic PSNR-Y)."""
    job = start_job(cfg)
    if job.accelerator.num_processes == 1:  # a signal is answered at once, not at the end of a step
        fork = job.accelerator.device.type == "cpu"  # a forked child cannot use CUDA
        job.stopper.arm(lambda: save_to_resume(job), job.tracker.finish, fork)
    try:
        last = train_loop(job)
    finally:
        job.stopper.disarm()  # done or failed: the process ends as the command decides
    return finish_job(job, last)


def train_loop(job: Job) -> dict[str, float]:
    """The epochs and their steps; returns the last validated epoch's metrics."""
    cfg, acc, model, state = job.cfg, job.accelerator, job.model, job.state
    stopper, loader = job.stopper, job.train_loader
    last: dict[str, float] = {}
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)  # this process's, over the step's patches
    pending, patches = 0, 0  # loader batches and patches of the step in progress: state once the step is
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if stopper.out_of_time():
            break
        model.train()
        job.clock0, job.epoch_began = (
            time.perf_counter() - state.train_seconds,
            state.train_seconds - state.epoch_seconds,
        )
        batches = len(loader)
        epoch_done = state.batches_done == batches  # (a stop during validation saved the epoch's last step)
        with progress_bar(epoch, cfg, acc.is_main_process) as bar:
            task = bar.add_task("train", total=batches, completed=state.batches_done, loss=float("nan"))
            for batch in epoch_batches(loader, epoch, state.batches_done):
                batch = training_pair(batch, cfg.scale)  # float LR/HR made on the device, one batched resize
                with acc.accumulate(model):
                    with acc.autocast():  # the training forward only: validation runs in float32
                        sr = job.forward(batch["lr"].contiguous(memory_format=job.memory_format))
                    loss = job.loss_fn(sr.float(), batch["hr"])
                    acc.backward(loss)
                    loss_sum += loss.detach().double() * len(batch["lr"])
                    pending, patches = pending + 1, patches + len(batch["lr"])
                    if not acc.sync_gradients:
                        continue
                with stopper.updating():  # weights and state change together (see Stopper.arm)
                    state.batches_done, pending = state.batches_done + pending, 0
                    epoch_done = state.batches_done == batches
                    finish_step(job, loss_sum, patches, epoch_done)
                    loss_sum, patches = loss_sum.zero_(), 0
                    settle(job, job.agreement.ready())
                    if epoch_done or checkpoint_due(job):
                        settle(job, job.agreement.drain())  # a checkpoint or validation holds every step before it
                        if not epoch_done and not stopper.stop_now() and not stopper.handing_over():
                            save_last(job)
                    bar.update(task, completed=state.batches_done, loss=state.step_values.get("train/loss", math.nan))
                if stopper.stop_now():
                    break
        with stopper.updating():
            settle(job, job.agreement.drain())  # (a stop before the epoch's end)
        if stopper.agreed_signal and not epoch_done:
            stop_to_resume(job)
        validate = epoch % cfg.val_every == 0 or epoch == cfg.epochs or stopper.out_of_time()
        last = end_epoch(job, epoch, validate) or last
        if stopper.agreed_signal and epoch != cfg.epochs:
            stop_to_resume(job)
    return last
