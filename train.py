"""Trainer: the same code on one CPU (`python run.py --config C`) or under torchrun with DDP.

Model families plug in through a training class (`TRAINING_FAMILIES`), built as
`cls(models, config, perceptual)` and exposing:

- `models`: {checkpoint name: nn.Module} saved in the published layout;
- `optimizers`, `schedulers`: {checkpoint name: object} (schedulers step once per epoch);
- `ddp_modules`: {name: nn.Module} the trainer wraps in DistributedDataParallel (in place);
- `draws(epoch, step, global_batch, rows, device) -> dict`: this rank's rows of the
  step's random draws, a pure function of (seed, epoch, step);
- `forward_backward(batch, epoch, draws, autocast, scaler) -> (losses, generated)`:
  weighted losses (detached, for logging) after back-propagation;
- `optimizer_step(epoch, scaler)`: clipping and optimizer steps.

The trainer knows no loss by name. The config's batch size is the global batch:
each of N ranks takes its 1/N rows of the same global batch, so N processes
compute what one process computes (up to BatchNorm statistics, which are per rank
unless `sync_bn` is on, a GPU-only PyTorch feature).

Checkpoints (`<log_dir>/checkpoint.pth.tar`, plus `%08d-checkpoint.pth.tar` every
`checkpoint_freq` epochs) hold the published layout plus `schedulers`,
`resume_step` (batches of the next epoch already done, after Ctrl-C/SIGTERM), and
`config`; written atomically by rank 0.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import signal
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from datasets import DatasetRepeater, FramesDataset
from modules.checkpoint import load_checkpoint, save_checkpoint, unwrap
from utils import dist as du
from utils import optim
from utils.config import save_config
from utils.frame_size import frame_size

log = logging.getLogger("train")

TRAINING_FAMILIES = {
    "tpsmm": "modules.tpsmm_training:TPSMMTraining",
    "fomm": "modules.fomm.training:FOMMTraining",
}


def training_class(family: str):
    module, _, name = TRAINING_FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name)


class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch: a seeded permutation cut into global batches, from `start_batch` on.

    Global batch b holds perm[b*G:(b+1)*G]; rank r takes its rows r*G/N .. (r+1)*G/N.
    The last incomplete global batch is dropped, as the reference's `drop_last`.
    """

    def __init__(self, length: int, global_batch: int, epoch: int, seed: int, rank: int = 0, world: int = 1,
                 start_batch: int = 0, max_batches: int | None = None):
        self.length, self.global_batch = length, global_batch
        self.local = global_batch // world
        self.epoch, self.seed, self.rank = epoch, seed, rank
        self.start_batch = start_batch
        total = length // global_batch
        self.num_batches = total if max_batches is None else min(total, int(max_batches))

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.length, generator=gen).tolist()
        for b in range(self.start_batch, self.num_batches):
            start = b * self.global_batch + self.rank * self.local
            yield from perm[start:start + self.local]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch) * self.local


class StopRequested:
    """Ctrl-C / SIGTERM set a flag; the loop saves a checkpoint and stops at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def make_autocast(precision: str, device: torch.device):
    """Autocast context factory for `train_params.precision` (fp32: no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ValueError(f"train_params.precision must be fp32, bf16 or fp16, got {precision!r}")
    if device.type != "cuda" and dtype == torch.float16:
        raise ValueError("fp16 autocast needs a GPU; use precision bf16 or fp32 on CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


class RunLogger:
    """Rank-0 logging: plain-text log, TensorBoard scalars and image grids. No-ops on other ranks."""

    def __init__(self, log_dir: str, enabled: bool):
        self.enabled = enabled
        self.writer = None
        self.log_path = os.path.join(log_dir, "log.txt")
        if enabled:
            os.makedirs(log_dir, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(log_dir, "tensorboard"))

    def line(self, text: str) -> None:
        if self.enabled:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")

    def scalars(self, values: dict[str, float], step: int, prefix: str = "loss/") -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(prefix + k, v, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _worker_init(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, sampler: Sampler, local_batch: int, workers: int, device: torch.device):
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                      persistent_workers=False)


def restore_schedulers(schedulers: dict, rest: dict, start_epoch: int) -> None:
    """Scheduler states from our checkpoints; for a published checkpoint (none stored), the schedule
    is set to `start_epoch` (as the reference's `last_epoch=start_epoch - 1`), with the LR it gives there
    whatever LR the stored optimizer state holds."""
    saved = rest.get("schedulers") or {}
    for name, scheduler in schedulers.items():
        if name in saved:
            scheduler.load_state_dict(saved[name])
            continue
        scheduler.last_epoch = start_epoch  # the LR the reference's schedule gives that epoch
        lrs = scheduler._get_closed_form_lr()
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = list(lrs)


def _dataset(config: dict, is_train: bool = True) -> FramesDataset:
    dp = config["dataset_params"]
    return FramesDataset(root_dir=dp["root_dir"], frame_shape=(*frame_size(config), 3), id_sampling=dp["id_sampling"],
                         is_train=is_train, augmentation_params=dp["augmentation_params"],
                         seed=int(config["train_params"]["seed"]))


def train(config: dict, models: dict[str, nn.Module], log_dir: str, checkpoint: str | None = None,
          device: torch.device | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train `models` as `config['train_params']` says; returns a summary (epochs run, last losses, paths)."""
    from modules.perceptual import build_perceptual

    tp = config["train_params"]
    rank, world = du.get_rank(), du.get_world_size()
    device = device or torch.device("cpu")
    global_batch = int(tp["batch_size"])
    if global_batch % world:
        raise ValueError(f"train_params.batch_size {global_batch} is not divisible by the {world} processes")
    local_batch = global_batch // world
    main = du.is_main_process()
    logger = RunLogger(log_dir, main)
    if main:
        save_config(config, os.path.join(log_dir, "config.yaml"))

    perceptual = None
    if sum(tp["loss_weights"].get("perceptual", [0])) != 0:
        perceptual = build_perceptual(tp["perceptual_backbone"], tp["perceptual_weights"], seed=int(tp["seed"]))
    torch.manual_seed(int(tp["seed"]) + rank)
    if world > 1 and tp["sync_bn"] and device.type == "cuda":
        models = {k: nn.SyncBatchNorm.convert_sync_batchnorm(v) for k, v in models.items()}
    for m in models.values():
        m.to(device)
        if tp["channels_last"]:
            m.to(memory_format=torch.channels_last)
    family = training_class(config["model_family"])(models, config, perceptual)
    for m in family.ddp_modules.values():
        m.to(device)

    start_epoch, resume_step = 0, 0
    if checkpoint:
        rest = load_checkpoint(checkpoint, family.models, family.optimizers, map_location=device, strict=False)
        resume_step = int(rest.get("resume_step", 0))
        start_epoch = int(rest.get("epoch", -1)) + 1
        restore_schedulers(family.schedulers, rest, start_epoch)
        logger.line(f"resumed from {checkpoint} at epoch {start_epoch}, step {resume_step}")

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        for name, module in list(family.ddp_modules.items()):
            family.ddp_modules[name] = DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
                                           find_unused_parameters=True)

    dataset = dataset if dataset is not None else DatasetRepeater(_dataset(config), tp["num_repeats"])
    autocast = make_autocast(tp["precision"], device)
    scaler = torch.amp.GradScaler("cuda") if tp["precision"] == "fp16" else None
    num_epochs = int(tp["num_epochs"])
    summary: dict[str, Any] = {"log_dir": log_dir, "epochs_run": 0, "stopped": False}
    last_path = os.path.join(log_dir, "checkpoint.pth.tar")

    def save(epoch_done: int, step_in_next: int) -> None:
        if not main:
            return
        extra = {"epoch": epoch_done, "resume_step": step_in_next,
                 "schedulers": {k: s.state_dict() for k, s in family.schedulers.items()},
                 "config": {k: v for k, v in config.items()}}
        save_checkpoint(last_path, family.checkpoint_models(epoch_done), family.optimizers, **extra)
        if step_in_next == 0 and ((epoch_done + 1) % int(tp["checkpoint_freq"]) == 0 or epoch_done + 1 == num_epochs):
            save_checkpoint(os.path.join(log_dir, f"{epoch_done:08d}-checkpoint.pth.tar"),
                            family.checkpoint_models(epoch_done), family.optimizers, **extra)

    with StopRequested() as stop:
        for epoch in range(start_epoch, num_epochs):
            for m in family.ddp_modules.values():
                m.train()
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sampler = EpochSampler(len(dataset), global_batch, epoch, int(tp["seed"]), rank, world,
                                   start_batch=resume_step, max_batches=tp["max_steps_per_epoch"])
            if sampler.num_batches == 0:
                raise ValueError(f"dataset has {len(dataset)} items, fewer than one batch of {global_batch}")
            loader = make_loader(dataset, sampler, local_batch, int(tp["dataloader_workers"]), device)
            totals: dict[str, float] = {}
            count, wait_time, t_epoch = 0, 0.0, time.time()
            bar = None
            if main:
                from tqdm import tqdm

                bar = tqdm(total=sampler.num_batches, initial=resume_step, desc=f"epoch {epoch}", leave=False,
                           dynamic_ncols=True)
            step = resume_step
            t_wait = time.time()
            generated = batch = None
            for batch in loader:
                wait_time += time.time() - t_wait
                batch = _to_device(batch, device, tp["channels_last"])
                rows = slice(rank * local_batch, (rank + 1) * local_batch)
                draws = family.draws(epoch, step, global_batch, rows, device)
                losses, generated = family.forward_backward(batch, epoch, draws, autocast, scaler)
                family.optimizer_step(epoch, scaler)
                step += 1
                count += 1
                values = {k: float(du.all_reduce_mean(v)) for k, v in losses.items()}
                for k, v in values.items():
                    totals[k] = totals.get(k, 0.0) + v
                global_step = epoch * sampler.num_batches + step
                if main and step % max(1, int(tp["log_freq"])) == 0:
                    logger.scalars(values, global_step)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
                    bar.update(1)
                if du.any_rank(stop.requested, device):
                    stop.requested = True
                    break
                t_wait = time.time()
            if bar is not None:
                bar.close()
            means = {k: v / max(1, count) for k, v in totals.items()}
            summary["last_losses"] = means
            if stop.requested and step < sampler.num_batches:
                save(epoch - 1, step)
                logger.line(f"stopped by signal in epoch {epoch} after {step} steps; checkpoint {last_path}")
                summary["stopped"] = True
                break
            with warnings.catch_warnings():  # the bg optimizer has not stepped before bg_start
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                for s in family.schedulers.values():
                    s.step()
            resume_step = 0
            elapsed = time.time() - t_epoch
            logger.line(f"{epoch:08d}) " + "; ".join(f"{k} - {v:.5f}" for k, v in means.items())
                        + f" | {elapsed:.1f}s, data wait {wait_time:.1f}s")
            logger.scalars({"data_wait_fraction": wait_time / max(elapsed, 1e-9)}, epoch, prefix="time/")
            if main and generated is not None and epoch % max(1, int(tp["image_freq"])) == 0:
                from utils.visualizer import training_grid

                logger.image("train/source_driving_kp_deformed_prediction_occlusion",
                             training_grid(batch["source"], batch["driving"], generated), epoch)
            save(epoch, 0)
            summary["epochs_run"] += 1
            if stop.requested:
                summary["stopped"] = True
                break
    du.barrier()
    logger.close()
    summary["checkpoint"] = last_path
    return summary


def random_scale(kp: torch.Tensor, scale: float, uniform: torch.Tensor) -> torch.Tensor:
    """Keypoints (B, N, 2) times a random diagonal in [1 - scale, 1 + scale] (AVD training, MRAA Sec. 3.3).

    `uniform` (B, 2) holds the U(0, 1) draws.
    """
    theta = torch.diag_embed(uniform * (2 * scale) + (1 - scale)).unsqueeze(1).to(kp)  # B x 1 x 2 x 2
    return torch.matmul(theta, kp.unsqueeze(-1)).squeeze(-1)


def train_avd(config: dict, models: dict[str, nn.Module], checkpoint: str, log_dir: str,
              device: torch.device | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train the AVD network on a frozen keypoint detector (MRAA), into its own log folder.

    `checkpoint` is the main run's checkpoint (or an AVD checkpoint to resume). Outputs
    go to `log_dir` (the caller picks a folder apart from the main run's) as
    `avd-checkpoint.pth.tar` (+ `avd-%08d-checkpoint.pth.tar`): every network of the
    main checkpoint plus `avd_network` and `optimizer_avd` (the published layout).
    """
    ap = config["train_avd_params"]
    device = device or torch.device("cpu")
    rank, world = du.get_rank(), du.get_world_size()
    main = du.is_main_process()
    if not checkpoint:
        raise ValueError("--mode train_avd needs --checkpoint (a trained keypoint detector)")
    avd = models["avd_network"]
    optimizer = optim.adam(avd.parameters(), lr=ap["lr"], betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, ap["epoch_milestones"], gamma=0.1)
    rest = load_checkpoint(checkpoint, models, {"optimizer_avd": optimizer}, map_location=device, strict=False)
    resumed_avd = "optimizer_avd" in rest or rest.get("avd_epoch") is not None
    start_epoch = int(rest.get("avd_epoch", -1)) + 1 if resumed_avd else 0
    if resumed_avd and "avd_scheduler" in rest:
        scheduler.load_state_dict(rest["avd_scheduler"])
    keep = {k: v for k, v in rest.items() if k not in ("avd_epoch", "avd_scheduler", "resume_step", "schedulers")}
    for m in models.values():
        m.to(device)
    kp_detector = models["kp_detector"].eval().requires_grad_(False)
    logger = RunLogger(log_dir, main)
    if main:
        save_config(config, os.path.join(log_dir, "config.yaml"))
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        avd_train = DDP(avd, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        avd_train = avd
    global_batch = int(ap["batch_size"])
    if global_batch % world:
        raise ValueError(f"train_avd_params.batch_size {global_batch} is not divisible by {world} processes")
    dataset = dataset if dataset is not None else DatasetRepeater(_dataset(config), ap["num_repeats"])
    global_batch = min(global_batch, len(dataset) - len(dataset) % world) or world
    local_batch = global_batch // world
    seed = int(config["train_params"]["seed"])
    out_path = os.path.join(log_dir, "avd-checkpoint.pth.tar")
    summary: dict[str, Any] = {"log_dir": log_dir, "epochs_run": 0, "checkpoint": out_path}

    def save(epoch: int) -> None:
        if main:
            extra = dict(keep, epoch=keep.get("epoch", 0), avd_epoch=epoch, avd_scheduler=scheduler.state_dict())
            save_checkpoint(out_path, models, {"optimizer_avd": optimizer}, **extra)
            if (epoch + 1) % int(ap["checkpoint_freq"]) == 0 or epoch + 1 == int(ap["num_epochs"]):
                save_checkpoint(os.path.join(log_dir, f"avd-{epoch:08d}-checkpoint.pth.tar"), models,
                                {"optimizer_avd": optimizer}, **extra)

    with StopRequested() as stop:
        for epoch in range(start_epoch, int(ap["num_epochs"])):
            avd_train.train()
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sampler = EpochSampler(len(dataset), global_batch, epoch, seed, rank, world,
                                   max_batches=ap["max_steps_per_epoch"])
            loader = make_loader(dataset, sampler, local_batch, int(ap["dataloader_workers"]), device)
            gen = torch.Generator().manual_seed(seed * 104729 + epoch)
            total, count = 0.0, 0
            for batch in loader:
                batch = _to_device(batch, device, False)
                with torch.no_grad():
                    kp_source = kp_detector(batch["source"])
                    kp_driving = kp_detector(batch["driving"])
                    uniform = torch.rand(global_batch, 2, generator=gen)[rank * local_batch:(rank + 1) * local_batch]
                    scaled = random_scale(kp_driving["fg_kp"], ap["random_scale"], uniform)
                rec = avd_train(kp_source, {"fg_kp": scaled})
                loss = ap["lambda_shift"] * torch.abs(kp_driving["fg_kp"] - rec["fg_kp"]).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total += float(du.all_reduce_mean(loss.detach()))
                count += 1
                if du.any_rank(stop.requested, device):
                    stop.requested = True
                    break
            scheduler.step()
            logger.line(f"avd {epoch:08d}) rec_kp - {total / max(1, count):.5f}")
            logger.scalars({"rec_kp": total / max(1, count)}, epoch, prefix="avd/")
            save(epoch)
            summary["epochs_run"] += 1
            summary["last_loss"] = total / max(1, count)
            if stop.requested:
                summary["stopped"] = True
                break
    du.barrier()
    logger.close()
    return summary
