"""Trainer: the same code on one CPU (`python run.py --config C`) or under torchrun with DDP.

The trainer owns the loop, back-propagation, autocast, the GradScaler (saved in the
checkpoint), gradient clipping, checkpoints and logging; it knows no loss by name.
What is trained comes from a training class: a model family's (`training_class(family)`,
registered in `modules.family`) or the AVD stage's (`modules.tpsmm_training.AVDTraining`),
built as `cls(models, config, perceptual)` and exposing:

- `models`: {checkpoint name: nn.Module} loaded from and saved to checkpoints (published layout);
- `optimizers`, `schedulers`: {checkpoint name: object} (schedulers step once per epoch);
- `ddp_modules`: {name: nn.Module} the trainer wraps in DistributedDataParallel (in place);
- `loop_params`: the loop's settings (`batch_size` = the global batch, `num_epochs`,
  `num_repeats`, `checkpoint_freq`, `max_steps_per_epoch`, `dataloader_workers`, `seed`,
  `precision`, `channels_last`, `log_freq`, `image_freq`), e.g. `config['train_params']`;
- `draws(epoch, step, global_batch, rows, device) -> dict`: this rank's rows of the
  step's random draws, a pure function of (seed, epoch, step);
- `stages(epoch) -> [utils.optim.Stage]`: the optimizer updates of one step, in order; a
  stage names its optimizers, returns its `{name: weighted scalar}` losses and declares its
  gradient clipping (`GradClip`). Per stage the trainer zeroes those optimizers' gradients,
  runs the losses under autocast, asserts the sum is finite, back-propagates it (scaled
  under the GradScaler), unscales, clips and steps; `shared['generated']` (set by a stage)
  feeds the TensorBoard image grid;
- `checkpoint_models(epoch) -> {name: nn.Module}`: the networks a checkpoint holds;
- optional: `uses_perceptual` (False: no perceptual backbone is built), `checkpoint_prefix`
  ('' -> `checkpoint.pth.tar`), `epoch_key` ('epoch'), `log_tag` (''), `on_resume(rest)`
  (sees the loaded checkpoint's other entries) and `checkpoint_extras() -> dict` (more entries).

The config's batch size is the global batch: each of N ranks takes its 1/N rows of the
same global batch, so N processes compute what one process computes (up to BatchNorm
statistics, which are per rank unless `sync_bn` is on, a GPU-only PyTorch feature).

Checkpoints (`<log_dir>/checkpoint.pth.tar`, plus `%08d-checkpoint.pth.tar` every
`checkpoint_freq` epochs and at the last) hold the published layout plus `schedulers`
({optimizer name: state}), `resume_step` (batches of the next epoch already done, after
Ctrl-C/SIGTERM), `config` and, under fp16, `grad_scaler`; written atomically by rank 0.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from datasets import DatasetRepeater, FramesDataset
from modules.checkpoint import load_checkpoint, save_checkpoint
from modules.family import get_family
from modules.tpsmm_training import AVDTraining, random_scale  # noqa: F401  (random_scale: a public name here)
from utils import dist as du
from utils import optim
from utils.config import save_config
from utils.errors import UserError
from utils.io import stale_temporaries_in
from utils.runlock import RunLock
from utils.frame_size import frame_size

log = logging.getLogger("train")

def training_class(family: str) -> type:
    """The training class of a registered model family (`modules.family`)."""
    return get_family(family).training_class()


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
        self.signal: int | None = None  # the signal that stopped the run
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
        self.signal = signum

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
        raise UserError(f"train_params.precision must be fp32, bf16 or fp16, got {precision!r}")
    if device.type != "cuda" and dtype == torch.float16:
        raise UserError("fp16 autocast needs a GPU; use precision bf16 or fp32 on CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def train_precision(precision: str, device: torch.device, notes: list[str] | None = None) -> str:
    """`train_params.precision` on `device`: 'auto' is decided by `utils.precision.resolve_precision` (bf16 where
    the device runs it natively, fp16 on older CUDA devices, else fp32). With `notes` (rank 0) the choice of
    'auto' is printed and logged, and an explicit bf16/fp16 that the device only emulates warns in one line."""
    from utils.precision import resolve_precision

    try:
        choice = resolve_precision(precision, device)
    except ValueError as err:
        raise UserError(f"train_params.precision: {err}") from None
    if notes is not None and (precision == "auto" or choice.warning):
        line = f"warning: train_params.{choice.warning}" if choice.warning else f"train_params.{choice.line()}"
        print(line, file=sys.stderr)
        notes.append(line)
    return choice.name


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


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The GradScaler fp16 autocast needs (None otherwise)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def restore_schedulers(schedulers: dict, rest: dict, start_epoch: int) -> None:
    """Scheduler states from our checkpoints (`rest['schedulers']`); a scheduler with no stored state (a
    published checkpoint holds only `epoch`) is replayed from its base LRs to `start_epoch` (as the
    reference's `last_epoch=start_epoch - 1`), whatever LR the stored optimizer state holds."""
    saved = rest.get("schedulers") or {}
    for name, scheduler in schedulers.items():
        if name in saved:
            scheduler.load_state_dict(saved[name])
            continue
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = lr
        with warnings.catch_warnings():  # stepping a schedule with no optimizer step yet is intended here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for _ in range(start_epoch):
                scheduler.step()


class TrainStep:
    """One optimisation step of a training class: its stages in order (see the module docstring)."""

    def __init__(self, family, autocast=contextlib.nullcontext, scaler: torch.amp.GradScaler | None = None):
        self.family, self.autocast, self.scaler = family, autocast, scaler

    def backward(self, stage: optim.Stage, batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
        """Zero the stage's gradients, compute its losses, back-propagate their sum; the losses, detached."""
        for name in stage.optimizers:
            self.family.optimizers[name].zero_grad(set_to_none=True)
        with self.autocast():
            losses = stage.losses(batch, draws, shared)
        total = sum(v.mean() for v in losses.values())
        assert torch.isfinite(total), {k: float(v.mean()) for k, v in losses.items()}
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        return {k: v.detach().mean() for k, v in losses.items()}

    def step(self, stage: optim.Stage) -> None:
        """Unscale (GradScaler), clip as the stage declares, step its optimizers in order."""
        optimizers = [self.family.optimizers[name] for name in stage.optimizers]
        if self.scaler is not None and stage.clip:
            for opt in optimizers:
                self.scaler.unscale_(opt)
        for clip in stage.clip:
            torch.nn.utils.clip_grad_norm_(clip.parameters, max_norm=clip.max_norm, norm_type=clip.norm_type)
        for opt in optimizers:
            self.scaler.step(opt) if self.scaler is not None else opt.step()

    def __call__(self, batch: dict, epoch: int, draws: dict) -> tuple[dict[str, torch.Tensor], Any]:
        """All stages of one step; returns (detached losses, `shared['generated']` or None)."""
        shared: dict[str, Any] = {}
        losses: dict[str, torch.Tensor] = {}
        for stage in self.family.stages(epoch):
            losses.update(self.backward(stage, batch, draws, shared))
            self.step(stage)
        if self.scaler is not None:
            self.scaler.update()
        for opt in self.family.optimizers.values():
            opt.zero_grad(set_to_none=True)
        return losses, shared.get("generated")


def _dataset(config: dict, is_train: bool = True) -> FramesDataset:
    dp = config["dataset_params"]
    return FramesDataset(root_dir=dp["root_dir"], frame_shape=(*frame_size(config), 3), id_sampling=dp["id_sampling"],
                         is_train=is_train, augmentation_params=dp["augmentation_params"],
                         seed=int(config["train_params"]["seed"]), index_cache=dp["index_cache"],
                         frame_cache=dp["frame_cache"])


class _Run:
    """One training run of a training class: set-up, resume, epochs, checkpoints (rank 0 writes)."""

    def __init__(self, cls, config: dict, models: dict[str, nn.Module], log_dir: str, device: torch.device):
        from modules.perceptual import build_perceptual

        tp = config["train_params"]
        self.config, self.log_dir, self.device = config, log_dir, device
        self.rank, self.world = du.get_rank(), du.get_world_size()
        self.main = du.is_main_process()
        perceptual = None
        if getattr(cls, "uses_perceptual", True) and sum(tp["loss_weights"].get("perceptual", [0])) != 0:
            perceptual = build_perceptual(tp["perceptual_backbone"], tp["perceptual_weights"], seed=int(tp["seed"]))
        if self.world > 1 and tp["sync_bn"] and device.type == "cuda":
            models = {k: nn.SyncBatchNorm.convert_sync_batchnorm(v) for k, v in models.items()}
        for m in models.values():
            m.to(device)
        self.family = family = cls(models, config, perceptual)
        self.lp = lp = family.loop_params
        torch.manual_seed(int(lp["seed"]) + self.rank)
        for m in list(models.values()) + list(family.ddp_modules.values()):
            m.to(device)
            if lp["channels_last"]:
                m.to(memory_format=torch.channels_last)
        self.global_batch = int(lp["batch_size"])
        if self.global_batch % self.world:
            raise UserError(f"batch_size {self.global_batch} is not divisible by the {self.world} processes")
        self.local_batch = self.global_batch // self.world
        self.prefix = getattr(family, "checkpoint_prefix", "")
        self.epoch_key = getattr(family, "epoch_key", "epoch")
        self.tag = getattr(family, "log_tag", "")
        self.logger: RunLogger | None = None  # opened by `open_outputs`, once every input has been checked
        self.lock: RunLock | None = None  # rank 0's lock of the run folder, taken by `open_outputs`
        self._notes: list[str] = []
        self.precision = train_precision(lp["precision"], device, self._notes if self.main else None)
        self.scaler = make_grad_scaler(self.precision, device)
        self.step_fn = TrainStep(family, make_autocast(self.precision, device), self.scaler)
        self.last_path = os.path.join(log_dir, f"{self.prefix}checkpoint.pth.tar")
        self.start_epoch, self.resume_step = 0, 0

    def resume(self, checkpoint: str) -> None:
        f = self.family
        rest = load_checkpoint(checkpoint, f.models, f.optimizers, map_location=self.device, strict=False)
        for name in rest.pop("unfit_optimizers", ()):
            note = (f"{checkpoint}: its '{name}' is another optimizer's state (a published MRAA AVD-stage file "
                    f"stores the AVD optimizer under it too); '{name}' starts fresh")
            print(note, file=sys.stderr)
            self._notes.append(note)
        if hasattr(f, "on_resume"):
            f.on_resume(rest)
        if self.epoch_key in rest:
            self.start_epoch = int(rest[self.epoch_key]) + 1
            self.resume_step = int(rest.get("resume_step", 0))
        restore_schedulers(f.schedulers, rest, self.start_epoch)
        if self.scaler is not None and "grad_scaler" in rest:
            self.scaler.load_state_dict(rest["grad_scaler"])
        self._notes.append(f"resumed from {checkpoint} at epoch {self.start_epoch}, step {self.resume_step}")

    def open_outputs(self, resumed: bool) -> None:
        """Create the run folder, record the config, open the logs: only after the config, checkpoint and
        data have all been checked, so a refused run creates nothing. A resume never overwrites the run's
        `config.yaml` (the record of how it was trained): a different config goes beside it, named by the
        resume's time; TensorBoard continues in its folder."""
        self.take_lock()
        if self.main:
            os.makedirs(self.log_dir, exist_ok=True)
            record_config(self.config, self.log_dir, resumed)
            for stale in stale_temporaries_in(self.log_dir):  # checkpoint writes cut by kill -9 / power loss
                os.remove(stale)
                note = f"removed {stale}, an unfinished checkpoint write of a process that no longer runs"
                print(note, file=sys.stderr)
                self._notes.append(note)
        self.logger = RunLogger(self.log_dir, self.main)
        for note in self._notes:
            self.logger.line(note)

    def take_lock(self) -> None:
        """One writer per run folder (`utils.runlock`): rank 0 takes the folder's lock, every rank learns
        the outcome, and all stop with the same one-line error when another live run holds it."""
        refused = None
        if self.main:
            self.lock = RunLock(self.log_dir)
            try:
                self.lock.acquire()
            except UserError as err:  # RunLockedError, or a folder that cannot be written
                refused = str(err)
            else:
                if self.lock.took_over:
                    note = f"took over {self.lock.path} from a run that no longer runs ({self.lock.took_over})"
                    print(note, file=sys.stderr)
                    self._notes.append(note)
        refused = du.broadcast_object(refused)
        if refused:
            raise UserError(refused)

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def wrap_ddp(self) -> None:
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            for name, module in list(self.family.ddp_modules.items()):
                self.family.ddp_modules[name] = DDP(module, device_ids=ids, find_unused_parameters=True)

    def save(self, epoch_done: int, step_in_next: int) -> None:
        """`checkpoint.pth.tar`, and the numbered copy at the end of every `checkpoint_freq`-th and the last epoch."""
        if not self.main:
            return
        f = self.family
        extra = dict(f.checkpoint_extras()) if hasattr(f, "checkpoint_extras") else {}
        extra.update({self.epoch_key: epoch_done, "resume_step": step_in_next,
                      "schedulers": {k: s.state_dict() for k, s in f.schedulers.items()},
                      "config": dict(self.config)})
        if self.scaler is not None:
            extra["grad_scaler"] = self.scaler.state_dict()
        models = f.checkpoint_models(epoch_done)
        save_checkpoint(self.last_path, models, f.optimizers, **extra)
        done = epoch_done + 1
        if step_in_next == 0 and (done % int(self.lp["checkpoint_freq"]) == 0 or done == int(self.lp["num_epochs"])):
            numbered = os.path.join(self.log_dir, f"{self.prefix}{epoch_done:08d}-checkpoint.pth.tar")
            save_checkpoint(numbered, models, f.optimizers, **extra)

    def epoch(self, epoch: int, dataset: Dataset, stop: StopRequested) -> tuple[int, int, dict, Any]:
        """One epoch from `resume_step`: (steps done, steps in the epoch, mean losses, last batch and generated)."""
        lp, family = self.lp, self.family
        for m in family.ddp_modules.values():
            m.train()
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), self.global_batch, epoch, int(lp["seed"]), self.rank, self.world,
                               start_batch=self.resume_step, max_batches=lp["max_steps_per_epoch"])
        if sampler.num_batches == 0:
            raise UserError(f"dataset has {len(dataset)} items, fewer than one batch of {self.global_batch}")
        loader = make_loader(dataset, sampler, self.local_batch, int(lp["dataloader_workers"]), self.device)
        totals: dict[str, float] = {}
        bar = None
        if self.main:
            from tqdm import tqdm

            bar = tqdm(total=sampler.num_batches, initial=self.resume_step, desc=f"{self.tag} epoch {epoch}".strip(),
                       leave=False, dynamic_ncols=True)
        step, last = self.resume_step, (None, None)
        rows = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        self.wait_time, t_wait = 0.0, time.time()
        for batch in loader:
            self.wait_time += time.time() - t_wait
            batch = _to_device(batch, self.device, lp["channels_last"])
            draws = family.draws(epoch, step, self.global_batch, rows, self.device)
            losses, generated = self.step_fn(batch, epoch, draws)
            step += 1
            values = {k: float(du.all_reduce_mean(v)) for k, v in losses.items()}
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            if self.main and step % max(1, int(lp["log_freq"])) == 0:
                self.logger.scalars(values, epoch * sampler.num_batches + step, prefix=self._prefix())
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
                bar.update(1)
            last = (batch, generated)
            if du.any_rank(stop.requested, self.device):
                stop.requested = True
                break
            t_wait = time.time()
        if bar is not None:
            bar.close()
        count = max(1, step - self.resume_step)
        return step, sampler.num_batches, {k: v / count for k, v in totals.items()}, last

    def _prefix(self) -> str:
        return f"{self.tag}/" if self.tag else "loss/"

    def end_epoch(self, epoch: int, means: dict, elapsed: float, last) -> None:
        with warnings.catch_warnings():  # e.g. the bg optimizer has not stepped before bg_start
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for s in self.family.schedulers.values():
                s.step()
        self.resume_step = 0
        self.logger.line(f"{self.tag} {epoch:08d}) ".lstrip() + "; ".join(f"{k} - {v:.5f}" for k, v in means.items())
                         + f" | {elapsed:.1f}s, data wait {self.wait_time:.1f}s")
        if self.tag:  # per-epoch means of a stage (e.g. avd/rec_kp), as the AVD stage always logged them
            self.logger.scalars(means, epoch, prefix=f"{self.tag}/")
        self.logger.scalars({"data_wait_fraction": self.wait_time / max(elapsed, 1e-9)}, epoch, prefix="time/")
        batch, generated = last
        if self.main and generated is not None and epoch % max(1, int(self.lp["image_freq"])) == 0:
            from utils.visualizer import training_grid

            self.logger.image("train/source_driving_kp_deformed_prediction_occlusion",
                              training_grid(batch["source"], batch["driving"], generated), epoch)
        self.save(epoch, 0)

    def fit(self, dataset: Dataset) -> dict[str, Any]:
        summary: dict[str, Any] = {"log_dir": self.log_dir, "epochs_run": 0, "stopped": False}
        with StopRequested() as stop:
            for epoch in range(self.start_epoch, int(self.lp["num_epochs"])):
                t_epoch = time.time()
                step, num_batches, means, last = self.epoch(epoch, dataset, stop)
                summary["last_losses"] = means
                if stop.requested and step < num_batches:
                    self.save(epoch - 1, step)
                    self.logger.line(f"stopped by signal in epoch {epoch} after {step} steps; "
                                     f"checkpoint {self.last_path}")
                    summary["stopped"] = True
                    break
                self.end_epoch(epoch, means, time.time() - t_epoch, last)
                summary["epochs_run"] += 1
                if stop.requested:
                    summary["stopped"] = True
                    break
            summary["signal"] = stop.signal if summary["stopped"] else None
        du.barrier()
        self.logger.close()
        summary["checkpoint"] = self.last_path
        return summary


def fit(cls, config: dict, models: dict[str, nn.Module], log_dir: str, checkpoint: str | None = None,
        device: torch.device | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train a training class `cls` (see the module docstring); returns a summary (epochs run, last losses, paths)."""
    run = _Run(cls, config, models, log_dir, device or torch.device("cpu"))
    if checkpoint:
        run.resume(checkpoint)
    if dataset is None:
        dataset = DatasetRepeater(_dataset(config), run.lp["num_repeats"])
    try:
        run.open_outputs(resumed=bool(checkpoint))
        run.wrap_ddp()
        return run.fit(dataset)
    finally:
        run.release_lock()


def record_config(config: dict, log_dir: str, resumed: bool) -> str:
    """`config.yaml` of a new run; on a resume the original is kept, and a config that differs from it is
    written beside it as `config-resume-<YYYYmmdd-HHMMSS>.yaml`. Returns the path that holds this config."""
    import yaml

    path = os.path.join(log_dir, "config.yaml")
    if resumed and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            if yaml.safe_load(handle) == yaml.safe_load(yaml.safe_dump(dict(config), sort_keys=False)):
                return path
        path = os.path.join(log_dir, time.strftime("config-resume-%Y%m%d-%H%M%S.yaml"))
    save_config(config, path)
    return path


def train(config: dict, models: dict[str, nn.Module], log_dir: str, checkpoint: str | None = None,
          device: torch.device | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train `models` as `config['train_params']` says; returns a summary (epochs run, last losses, paths)."""
    return fit(training_class(config["model_family"]), config, models, log_dir, checkpoint, device, dataset)


def train_avd(config: dict, models: dict[str, nn.Module], checkpoint: str, log_dir: str,
              device: torch.device | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train the AVD network on a frozen keypoint detector (MRAA), into its own log folder.

    `checkpoint` is the main run's checkpoint (or an AVD checkpoint to resume). Outputs
    go to `log_dir` (the caller picks a folder apart from the main run's) as
    `avd-checkpoint.pth.tar` (+ `avd-%08d-checkpoint.pth.tar`): every network of the
    main checkpoint plus `avd_network` and `optimizer_avd` (the published layout).
    The stage is the family's (`avd_training_class`).
    """
    if not checkpoint:
        raise UserError("--mode train_avd needs --checkpoint (a trained keypoint detector)")
    return fit(avd_training_class(config["model_family"]), config, models, log_dir, checkpoint, device, dataset)


def avd_training_class(family: str) -> type:
    """The AVD stage of a family: its training class's `avd_stage` (MRAA: regions), TPSMM's `AVDTraining`
    (keypoints); a family with neither (FOMM) is a one-line UserError."""
    stage = getattr(training_class(family), "avd_stage", None)
    if stage is None and family != "tpsmm":
        raise UserError(f"model family {family!r} has no AVD stage (--mode train_avd is for TPSMM and MRAA configs)")
    return stage or AVDTraining
