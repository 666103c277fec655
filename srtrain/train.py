"""The training loop, top to bottom: set-up, resume, then per epoch train, validate, log, checkpoint."""

from __future__ import annotations

import math
import os
import time
import uuid
from datetime import datetime
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast, broadcast_object_list, set_seed
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from srtrain.checkpoint import (
    TrainState,
    copy_checkpoint,
    is_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from srtrain.config import Config, ConfigError
from srtrain.data import StreamLoader, StreamPatches, TrainPatches, ValImages, load_images
from srtrain.evaluation import evaluate
from srtrain.models import build_model
from srtrain.models.weights import load_model_weights
from srtrain.tracking import Tracker, console
from srtrain.visual import sample_grid


class NonFiniteLossError(RuntimeError):
    """Training diverged: raised at the first NaN/inf loss, before more compute is wasted."""


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


def make_accelerator(cfg: Config) -> Accelerator:
    """The Accelerator for this job; refuses launches that would silently run the wrong way."""
    use_cpu = not torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and use_cpu:
        raise ConfigError("mixed_precision=fp16 needs a GPU; on CPU use --mixed_precision=bf16 or no")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but no distributed launcher started us: {LAUNCH_HELP}"
        )
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="wandb",
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    check_launch(accelerator)
    if use_cpu:
        # `accelerate launch` exports OMP_NUM_THREADS=1 unless told otherwise, which leaves all but one core
        # idle; share the cores among this node's processes instead (or take --cpu_threads as given).
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cfg.cpu_threads or max(1, (os.cpu_count() or 1) // local_processes))
    return accelerator


def check_in_sync(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """All replicas must hold identical weights (DDP applies the same averaged gradients everywhere); a
    checksum per process proves it at every checkpoint and stops a run whose ranks drifted apart."""
    checksum = sum(p.detach().double().sum() for p in model.parameters()).reshape(1)
    sums = accelerator.gather(checksum)
    if not bool((sums == sums[0]).all()):
        raise RuntimeError(f"model replicas differ across processes (weight checksums {sums.tolist()})")


def make_train_loader(cfg: Config, accelerator: Accelerator) -> DataLoader | StreamLoader:
    """This process's training batches: the patch dataset, checked, then sharded by accelerate's `prepare`;
    a streamed source (`data.streaming`) is split by `StreamPatches` itself and must not be sharded again."""
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
    images = load_images(cfg.data, "train")
    images.check(cfg.scale, cfg.patch_size, fix)
    patches = TrainPatches(images, cfg.scale, cfg.patch_size, cfg.data.repeat, cfg.seed)
    loader = DataLoader(
        patches,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
    )
    return accelerator.prepare(loader)


def resolve_output_dir(cfg: Config) -> Path:
    """The run directory: `--output_dir`, the latest matching run for `--resume=auto`, or a new one."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    prefix = f"{cfg.model.name}_x{cfg.scale}_"
    if cfg.resume == "auto":
        runs = sorted(p for p in Path("runs").glob(prefix + "*") if is_checkpoint(p / "checkpoints" / "last"))
        if runs:
            return runs[-1]
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    broadcast_object_list(stamp)
    return Path("runs") / (prefix + stamp[0])


def resume_path(cfg: Config, out_dir: Path) -> Path | None:
    """The checkpoint to continue from, or None for a fresh start."""
    if cfg.resume == "auto":
        for name in ("last", "last.old"):
            if is_checkpoint(out_dir / "checkpoints" / name):
                return out_dir / "checkpoints" / name
        return None
    if cfg.resume:
        path = Path(cfg.resume)
        path = path / "checkpoints" / "last" if is_checkpoint(path / "checkpoints" / "last") else path
        if not is_checkpoint(path):
            raise ConfigError(f"resume: '{cfg.resume}' holds no checkpoint (model.safetensors + training_state.pt)")
        return path
    return None


def check_resumable(cfg: Config, ckpt: Path) -> None:
    """A checkpoint continues only the same model at the same scale."""
    saved = yaml.safe_load((ckpt / "config.yaml").read_text())
    if saved["scale"] != cfg.scale:
        raise ConfigError(f"resume: checkpoint {ckpt} was trained with scale={saved['scale']}, not {cfg.scale}")
    if saved["model"]["name"] != cfg.model.name:
        raise ConfigError(f"resume: checkpoint {ckpt} holds model '{saved['model']['name']}', not '{cfg.model.name}'")


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


def train(cfg: Config) -> dict[str, float]:
    """Run one job; return the final summary (best and last PSNR-Y, bicubic PSNR-Y)."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    out_dir = resolve_output_dir(cfg)
    ckpt = resume_path(cfg, out_dir)
    if ckpt is not None:
        check_resumable(cfg, ckpt)
    main = accelerator.is_main_process
    model = build_model(cfg.model.name, cfg.scale, **cfg.model.args)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model '{cfg.model.name}' has no parameters to train; pick a trainable --model")
    if cfg.init_from and ckpt is None:
        load_model_weights(model, Path(cfg.init_from))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # NHWC often runs convolutions faster on GPUs

    train_loader = make_train_loader(cfg, accelerator)
    val_images = load_images(cfg.data, "val")
    val_images.check(cfg.scale, 8 * cfg.scale, "remove it from the validation set")
    val_set = ValImages(val_images, cfg.scale)
    val_loader = DataLoader(val_set, batch_size=1, num_workers=cfg.data.num_workers)

    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.functional.l1_loss if cfg.loss == "l1" else torch.nn.functional.mse_loss
    model, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
    steps_per_epoch = len(train_loader) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(
            f"an epoch has {len(train_loader.dataset)} patches, fewer than one global batch "
            f"({cfg.batch_size} x {accelerator.num_processes} processes x {cfg.grad_accum}); raise --data.repeat"
        )
    total_steps = cfg.epochs * steps_per_epoch
    budget_s = cfg.time_budget_min * 60

    state = TrainState(wandb_run_id=uuid.uuid4().hex[:8])
    if ckpt is not None:
        state = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, accelerator.scaler)
    config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config_yaml)
    tracker = Tracker(accelerator, cfg, out_dir, state.wandb_run_id)
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.grad_accum
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if main:
        budget = f"{cfg.time_budget_min:g} min budget" if budget_s else f"{total_steps} steps"
        console.print(
            f"[bold]srtrain[/] {cfg.model.name} x{cfg.scale}: {n_params:,} parameters, "
            f"{len(train_loader.dataset.images)} train / {len(val_images)} val images, "
            f"{accelerator.num_processes} process(es) "
            f"on {accelerator.device}, batch {cfg.batch_size}/process x {accelerator.num_processes} x "
            f"{cfg.grad_accum} accumulation = {global_batch} global, lr {cfg.lr}, {cfg.mixed_precision} precision, "
            f"{budget}, run dir {out_dir}" + (f", resuming from epoch {state.epoch} ({ckpt})" if ckpt else "")
        )

    def progress_at(epoch_start: float) -> float:
        """Training progress in [0, 1]; with a time budget the main process's clock decides for all ranks."""
        if not budget_s:
            return (state.step + 1) / total_steps
        spent = torch.tensor([state.train_seconds + time.perf_counter() - epoch_start], device=accelerator.device)
        return broadcast(spent).item() / budget_s

    bicubic = evaluate(
        build_model("bicubic", cfg.scale).to(accelerator.device), val_loader, accelerator, cfg.scale, gray=cfg.data.gray
    )
    bicubic_psnr_y = bicubic["psnr_y"].mean().item()
    last: dict[str, float] = {}
    out_of_budget = bool(budget_s) and state.train_seconds >= budget_s
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if out_of_budget:
            break
        train_loader.dataset.set_epoch(epoch)  # the patches drawn (accelerate's set_epoch reaches only the sampler)
        train_loader.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
        patches = 0
        with Progress(
            TextColumn(f"epoch {epoch}/{cfg.epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=console,
            disable=not main,
            transient=True,
        ) as bar:
            task = bar.add_task("train", total=len(train_loader), loss=float("nan"))
            for batch in train_loader:
                progress = progress_at(start)
                if budget_s and progress >= 1 and patches:  # an epoch always trains at least one step
                    out_of_budget = True
                    break
                with accelerator.accumulate(model):
                    sr = model(batch["lr"].contiguous(memory_format=memory_format))
                    loss = loss_fn(sr.float(), batch["hr"])
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss became {loss.item()} at epoch {epoch}, step {state.step}: lower --lr "
                            f"(now {cfg.lr}), set --grad_clip, or use --mixed_precision=no; "
                            f"the last good checkpoint is in {out_dir / 'checkpoints'}"
                        )
                    accelerator.backward(loss)
                    if cfg.grad_clip and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(cfg, progress)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    state.step += 1
                loss_sum += loss.detach().double() * len(batch["lr"])
                patches += len(batch["lr"])
                bar.update(task, advance=1, loss=loss.item())
        out_of_budget = out_of_budget or (bool(budget_s) and progress_at(start) >= 1)  # no empty epoch next
        epoch_time = time.perf_counter() - start
        state.train_seconds += epoch_time
        totals = accelerator.reduce(
            torch.stack([loss_sum, torch.tensor(float(patches), device=loss_sum.device, dtype=torch.float64)]),
            "sum",
        )
        state.epoch = epoch
        if epoch % cfg.val_every and epoch != cfg.epochs and not out_of_budget:
            continue

        val = evaluate(model, val_loader, accelerator, cfg.scale, loss_fn, gray=cfg.data.gray)
        last = {
            "train_loss": (totals[0] / totals[1]).item() if totals[1] else float("nan"),
            "val_loss": val["loss"].mean().item(),
            "psnr_y": val["psnr_y"].mean().item(),
            "ssim_y": val["ssim_y"].mean().item(),
            "psnr_rgb": val["psnr_rgb"].mean().item(),
            "bicubic_psnr_y": bicubic_psnr_y,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            "patches_per_s": totals[1].item() / epoch_time,
            "train_minutes": state.train_seconds / 60,
        }
        check_in_sync(model, accelerator)
        improved = last["psnr_y"] > state.best_psnr_y
        if improved:
            state.best_psnr_y, state.best_epoch = last["psnr_y"], epoch
        if main:
            plain = accelerator.unwrap_model(model)
            tracker.log_samples(
                [sample_grid(plain, val_set[i], cfg.scale) for i in range(min(cfg.num_samples, len(val_set)))], epoch
            )
            tracker.log_epoch(last, epoch)
            tracker.summary(best_psnr_y=state.best_psnr_y, best_epoch=state.best_epoch, bicubic_psnr_y=bicubic_psnr_y)
            ckpt_dir = out_dir / "checkpoints"
            save_checkpoint(ckpt_dir / "last", plain, optimizer, state, config_yaml, accelerator.scaler)
            if improved:
                copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
        accelerator.wait_for_everyone()

    tracker.finish()
    summary = {
        "best_psnr_y": state.best_psnr_y,
        "best_epoch": state.best_epoch,
        "bicubic_psnr_y": bicubic_psnr_y,
        **{f"final_{k}": v for k, v in last.items()},
    }
    if main:
        final = last.get("psnr_y", state.best_psnr_y)
        console.print(
            f"[bold]done[/]: final val PSNR-Y {final:.2f} dB vs bicubic {bicubic_psnr_y:.2f} dB "
            f"({final - bicubic_psnr_y:+.2f} dB); best {state.best_psnr_y:.2f} dB at epoch {state.best_epoch}; "
            + (
                f"weights identical on all {accelerator.num_processes} processes; "
                if accelerator.num_processes > 1
                else ""
            )
            + f"checkpoints in {out_dir / 'checkpoints'}"
        )
    return summary
