"""A generic, resumable training loop for any method returning a :class:`LossOutput`.

A *method* is an :class:`torch.nn.Module` whose ``forward(batch)`` takes a dict of tensors
(``images``, ``text_ids``, ``pids``, ...) and returns
:class:`textreid.losses.combine.LossOutput`; for evaluation it also offers
``encode_image(images) -> [B, D]`` and ``encode_text(text_ids) -> [B, D]``. The trainer knows
nothing else about it: evaluation is injected as ``evaluate_fn(method) -> {"R1": ..., ...}``.

Model selection uses whatever split ``evaluate_fn`` evaluates. Pass a **validation** split:
the trainer never looks for a test set. Selecting the best epoch on the test set (IRRA's
``--val_dataset test``, which inflates reported numbers) is only possible by deliberately
passing a test-set ``evaluate_fn``; recipes that reproduce it must name that option.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from textreid._checks import (
    check_choice,
    check_int,
    check_positive,
    check_unit_interval,
    reads_are_free,
)
from textreid.training._progress import ProgressPrinter
from textreid.training.checkpoint import (
    atomic_write,
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
    save_weights,
)
from textreid.training.distributed import broadcast_object, init_distributed
from textreid.training.optim import OPTIMIZERS, OptimizerName, ParamRule, build_optimizer
from textreid.training.schedule import SCHEDULES, ScheduleName, build_scheduler

__all__ = [
    "Callback",
    "EvaluateFn",
    "FitResult",
    "Trainer",
    "TrainerConfig",
    "TrainingInterrupted",
    "seed_everything",
]

_log = logging.getLogger("textreid.training")

EvaluateFn = Callable[[nn.Module], Mapping[str, float]]
"""``evaluate_fn(method) -> {"R1": 73.4, "mAP": 66.1, ...}`` on a validation split."""

_AMP = ("auto", "none", "bf16", "fp16")
_UNITS = ("epoch", "step")
# Settings that only shape output or bookkeeping (and the seed, which only seeds fresh
# runs): a resumed run may change them freely.
_RESUME_FREE = frozenset(
    {
        "output_dir",
        "progress",
        "verbosity",
        "heartbeat_s",
        "tensorboard",
        "device",
        "log_every",
        "checkpoint_every",
        "keep_last",
        "eval_every",
        "find_unused_parameters",
        "seed",
    }
)
# Changes the saved optimizer state or schedule position cannot be carried over to.
_RESUME_FATAL = frozenset({"optimizer", "param_rules", "schedule_unit"})
_MODES = ("max", "min")
_SELECT_EPOCHS = ("best", "last")


@dataclass
class TrainerConfig:
    """Everything the :class:`Trainer` needs besides the method, the data and the metric.

    Defaults follow IRRA (Jiang and Ye, CVPR 2023, arXiv:2303.12501): Adam with coupled
    weight decay 4e-5, lr 1e-5, 60 epochs, 5 warmup epochs from 0.1x then cosine, stepped per
    epoch. Two IRRA settings are *not* defaults and belong to its recipe: Adam ``eps=1e-3``
    (the library uses 1e-8) and the per-module rules of
    :func:`~textreid.training.optim.irra_param_rules`.

    Attributes:
        epochs: number of training epochs.
        lr: base learning rate (groups scale it by their rule's ``lr_mult``).
        weight_decay: default weight decay (coupled L2 for Adam/SGD, decoupled for AdamW).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        betas, eps: Adam/AdamW coefficients. momentum: SGD momentum.
        param_rules: ordered :class:`ParamRule` list (per-module lr multiplier and weight decay).
        warmup_epochs: linear warmup length in epochs (``< epochs``).
        warmup_start_factor: fraction of the lr at the first warmup period.
        schedule: ``"cosine"`` or ``"constant"`` after warmup.
        schedule_unit: ``"epoch"`` (IRRA: the rate changes once per epoch) or ``"step"``
            (once per optimizer update; warmup and total are then counted in updates).
        grad_accum_steps: micro-batches per optimizer update; the loss of each micro-batch is
            divided by the size of its group, so the update equals a full-batch mean loss.
        grad_clip_norm: clip the global gradient L2 norm to this value (``None`` = off).
        amp: ``"none"``, ``"bf16"`` (autocast), ``"fp16"`` (autocast + GradScaler) or
            ``"auto"``: decided once the device is known, bf16 on a CUDA device that supports
            it, else fp16 on CUDA, ``"none"`` on CPU and MPS (:attr:`Trainer.amp` says which).
            Steps the GradScaler skips (overflowing fp16 gradients) are counted in the epoch
            line, ``metrics.jsonl`` (``skipped_steps``) and :attr:`FitResult.skipped_steps`.
        seed: seeds torch, numpy and ``random`` at the start of a fresh run (``seed + rank``).
        output_dir: checkpoints (``checkpoints/``), ``metrics.jsonl``, ``best.safetensors``.
        checkpoint_every: save a resumable checkpoint every this many epochs (and at the end).
        keep_last: resumable checkpoints kept on disk.
        log_every: write a ``metrics.jsonl`` line every this many optimizer updates.
        eval_every: run ``evaluate_fn`` every this many epochs (and after the last one).
        select_metric: key of ``evaluate_fn``'s result selecting ``best.safetensors``.
        select_mode: ``"max"`` (higher is better, e.g. R1) or ``"min"``.
        select_epoch: ``"best"``: ``best.safetensors`` holds the evaluated epoch with the best
            ``select_metric``; ``"last"``: the last evaluated epoch with a finite metric,
            whatever its value. ``"last"`` suits a schedule that anneals the rate to zero with
            a validation split too small to rank epochs whose metrics differ by noise (on a
            few hundred captions, one caption moves R1 by a fraction of a point, and the
            highest of many noisy epochs is biased upwards); the metric is still computed,
            logged and shown in the epoch lines.
        progress: allow tqdm bars (shown only on rank 0, when stderr is a terminal or in a
            Jupyter kernel, and at ``verbosity >= 1``).
        verbosity: what rank 0 writes to stderr besides warnings and errors: 0 only the final
            line (selected epoch and why); 1 also one line per epoch (losses, lr, validation
            metrics, time, ETA, skipped steps) and, where no bar shows, a heartbeat line every
            ``heartbeat_s`` seconds inside an epoch; 2 also a line every ``log_every`` updates.
        heartbeat_s: seconds between in-epoch heartbeat lines where no bar is shown (a log
            file, ``progress=False``); ``None`` turns them off. Each one reads the running
            loss from the device once.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during ``fit`` and no
            cuDNN autotuning.
        device: e.g. ``"cuda:0"``; default ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        find_unused_parameters: passed to DistributedDataParallel.
        tensorboard: also log to ``output_dir/tensorboard`` when ``tensorboard`` is installed.
    """

    epochs: int = 60
    lr: float = 1e-5
    weight_decay: float = 4e-5
    optimizer: OptimizerName = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    param_rules: tuple[ParamRule, ...] = ()
    warmup_epochs: int = 5
    warmup_start_factor: float = 0.1
    schedule: ScheduleName = "cosine"
    schedule_unit: Literal["epoch", "step"] = "epoch"
    grad_accum_steps: int = 1
    grad_clip_norm: float | None = None
    amp: Literal["auto", "none", "bf16", "fp16"] = "none"
    seed: int = 0
    output_dir: str = "runs/textreid"
    checkpoint_every: int = 1
    keep_last: int = 3
    log_every: int = 50
    eval_every: int = 1
    select_metric: str = "R1"
    select_mode: Literal["max", "min"] = "max"
    select_epoch: Literal["best", "last"] = "best"
    progress: bool = True
    verbosity: int = 1
    heartbeat_s: float | None = 30.0
    deterministic: bool = False
    device: str | None = None
    find_unused_parameters: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        fn = "TrainerConfig"
        for name in ("epochs", "grad_accum_steps", "checkpoint_every", "keep_last", "log_every"):
            check_int(getattr(self, name), name, fn, min_value=1)
        check_int(self.eval_every, "eval_every", fn, min_value=1)
        check_int(self.warmup_epochs, "warmup_epochs", fn, min_value=0)
        check_int(self.seed, "seed", fn, min_value=0)
        check_int(self.verbosity, "verbosity", fn, min_value=0)
        check_choice(self.verbosity, "verbosity", fn, (0, 1, 2))
        if self.heartbeat_s is not None:
            check_positive(self.heartbeat_s, "heartbeat_s", fn)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"{fn}: warmup_epochs ({self.warmup_epochs}) must be smaller than epochs "
                f"({self.epochs})"
            )
        check_positive(self.lr, "lr", fn)
        check_positive(self.weight_decay, "weight_decay", fn, allow_zero=True)
        check_positive(self.eps, "eps", fn)
        check_positive(self.momentum, "momentum", fn, allow_zero=True)
        check_unit_interval(self.warmup_start_factor, "warmup_start_factor", fn)
        if self.grad_clip_norm is not None:
            check_positive(self.grad_clip_norm, "grad_clip_norm", fn)
        check_choice(self.optimizer, "optimizer", fn, OPTIMIZERS)
        check_choice(self.schedule, "schedule", fn, SCHEDULES)
        check_choice(self.schedule_unit, "schedule_unit", fn, _UNITS)
        check_choice(self.amp, "amp", fn, _AMP)
        check_choice(self.select_mode, "select_mode", fn, _MODES)
        check_choice(self.select_epoch, "select_epoch", fn, _SELECT_EPOCHS)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.param_rules = tuple(self.param_rules)
        for rule in self.param_rules:
            if not isinstance(rule, ParamRule):
                raise TypeError(
                    f"{fn}: param_rules must hold ParamRule objects, got {type(rule).__name__}"
                )
        self.output_dir = os.fspath(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings) suitable for TOML/JSON and checkpoints."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["betas"] = list(self.betas)
        d["param_rules"] = [asdict(r) for r in self.param_rules]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the valid ones.

        ``param_rules`` entries may be ``ParamRule`` objects or dicts of its fields.
        """
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"TrainerConfig.from_dict: unknown keys {unknown}; valid keys are {sorted(known)}"
            )
        kwargs = dict(data)
        if "param_rules" in kwargs:
            kwargs["param_rules"] = tuple(
                r if isinstance(r, ParamRule) else ParamRule(**r) for r in kwargs["param_rules"]
            )
        if "betas" in kwargs:
            b = kwargs["betas"]
            kwargs["betas"] = (float(b[0]), float(b[1]))
        return cls(**kwargs)


@dataclass(frozen=True)
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        epochs_completed: epochs trained so far (including those before a resume).
        global_step: optimizer updates so far.
        best_value: ``select_metric`` of the selected epoch (``None`` without evaluation): the
            best seen, or the last finite one with ``select_epoch="last"``.
        best_epoch: the selected epoch (1-based), whose weights ``best_path`` holds.
        last_metrics: the last evaluation's metrics (empty without evaluation).
        best_path: ``best.safetensors`` when written.
        last_checkpoint: the newest resumable checkpoint written.
        skipped_steps: optimizer steps the fp16 GradScaler skipped because gradients
            overflowed (including those before a resume); 0 without fp16.
    """

    epochs_completed: int
    global_step: int
    best_value: float | None
    best_epoch: int | None
    last_metrics: dict[str, float]
    best_path: Path | None
    last_checkpoint: Path | None
    skipped_steps: int = 0


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``KeyboardInterrupt``) during :meth:`Trainer.fit`, after clean-up.

    Nothing is left half-written: checkpoints and ``best.safetensors`` are published
    atomically, ``metrics.jsonl`` and TensorBoard files are flushed and closed. The message
    names the last complete checkpoint and how to resume. Being a ``KeyboardInterrupt``,
    it stops code that only expects Ctrl-C just the same.

    Attributes:
        output_dir: the run's output folder.
        last_checkpoint: the newest complete checkpoint there (``None``: nothing to resume).
        epoch: epochs completed when interrupted.
    """

    def __init__(self, output_dir: Path, last_checkpoint: Path | None, epoch: int) -> None:
        self.output_dir = output_dir
        self.last_checkpoint = last_checkpoint
        self.epoch = epoch
        if last_checkpoint is None:
            how = "no checkpoint was written yet, so there is nothing to resume: run again"
        else:
            how = (
                f"last complete checkpoint: {last_checkpoint}; resume with "
                "Trainer.fit(resume=True) (train_recipe(..., resume=True)) or by running the "
                "same `textreid train` command with --resume"
            )
        super().__init__(f"training interrupted after {epoch} complete epoch(s); {how}")


class Callback:
    """Hooks called by :meth:`Trainer.fit` on every rank; override the ones you need.

    Set ``trainer.stop_training = True`` in a hook to stop after the current epoch (its
    checkpoint is written first, so ``fit(resume=True)`` continues from there).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume has been loaded)."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each ``metrics.jsonl`` line is formed (every ``log_every`` updates)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an epoch, its evaluation and its checkpoint."""

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        """After the last epoch."""


class _MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and, if installed, TensorBoard."""

    def __init__(self, output_dir: Path, *, resume_step: int | None, tensorboard: bool) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "metrics.jsonl"
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            # Lines logged after the checkpoint belong to a run that crashed; the resumed
            # run will log those steps again.
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line + "\n")
        text = "".join(kept)
        atomic_write(self.path, lambda f: f.write(text.encode()))
        self._file: IO[str] | None = open(self.path, "a")  # noqa: SIM115
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                _log.debug("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self._tb = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("epoch", "step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, global_step=record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the global stream augmentations use)
    torch.manual_seed(seed)


class Trainer:
    """Train a method with per-module lr rules, warmup+cosine, AMP, accumulation and DDP.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is joined on construction
    (:func:`~textreid.training.distributed.init_distributed`) and the method is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`; give the loader a
    :func:`~textreid.training.distributed.distributed_sampler` so ranks see disjoint shards.
    Any sampler or batch sampler with ``set_epoch`` gets the 0-based epoch before each epoch.

    Files in ``config.output_dir``: ``checkpoints/checkpoint-epochNNNN.pt`` (resumable:
    model, optimizer, scheduler, GradScaler, epoch, step, best metric, RNG states of every
    rank and of the loader's generators), ``best.safetensors`` (weights of the best
    evaluation), ``metrics.jsonl``. ``fit(resume=True)`` continues bit-for-bit from the newest
    readable checkpoint (same world size, deterministic kernels).

    Args:
        method: the module to train (moved to the trainer's device).
        train_loader: an iterable of dict batches with a ``len()`` (e.g. a DataLoader).
        config: a :class:`TrainerConfig`.
        evaluate_fn: ``evaluate_fn(method) -> metrics`` on a **validation** split, called
            under ``torch.no_grad()`` with the method in eval mode, on rank 0 only (the result
            is broadcast). ``None`` disables evaluation and ``best.safetensors``.
        callbacks: :class:`Callback` objects.

    Attributes:
        method: the unwrapped module. model: what is called in training (DDP or ``method``).
        optimizer, scheduler, scaler: the optimisation state.
        epoch: completed epochs. global_step: completed optimizer updates.
        best_value, best_epoch: ``select_metric`` of the epoch selected so far (the best, or
            the last with ``select_epoch="last"``) and that (1-based) epoch.
        stop_training: set to ``True`` to stop after the current epoch.
        amp: the precision in use, ``config.amp`` with ``"auto"`` decided for the device.
        skipped_steps: optimizer steps skipped by the GradScaler so far.

    Raises:
        TypeError: when ``method`` is not a module, ``config`` not a TrainerConfig or the
            loader has no length.
        ValueError: on an empty loader.
    """

    def __init__(
        self,
        method: nn.Module,
        train_loader: Any,
        config: TrainerConfig,
        evaluate_fn: EvaluateFn | None = None,
        callbacks: Sequence[Callback] | None = None,
    ) -> None:
        fn = "Trainer"
        if not isinstance(method, nn.Module):
            raise TypeError(f"{fn}: method must be a torch.nn.Module, got {type(method).__name__}")
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"{fn}: config must be a TrainerConfig, got {type(config).__name__}")
        try:
            n_batches = len(train_loader)
        except TypeError:
            raise TypeError(
                f"{fn}: train_loader must have a length (batches per epoch), got "
                f"{type(train_loader).__name__}"
            ) from None
        if n_batches == 0:
            raise ValueError(f"{fn}: train_loader yields no batches")
        self.config = config
        self.train_loader = train_loader
        self.evaluate_fn = evaluate_fn
        self.callbacks = list(callbacks or [])
        info = init_distributed()
        self.rank, self.world_size = info.rank, info.world_size
        if config.device is not None:
            self.device = torch.device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", info.local_rank)
        else:
            self.device = torch.device("cpu")
        self.method = method.to(self.device)
        self.model: nn.Module = self.method
        if self.world_size > 1:
            self.model = DistributedDataParallel(
                self.method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
            if not _has_set_epoch(train_loader):
                warnings.warn(
                    "Trainer: running on several ranks but the loader's sampler has no "
                    "set_epoch (no DistributedSampler): every rank iterates the whole dataset; "
                    "use textreid.training.distributed_sampler(dataset)",
                    UserWarning,
                    stacklevel=2,
                )
        self.optimizer = build_optimizer(
            self.method,
            name=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=config.betas,
            eps=config.eps,
            momentum=config.momentum,
            rules=config.param_rules,
        )
        self.updates_per_epoch = math.ceil(n_batches / config.grad_accum_steps)
        per = 1 if config.schedule_unit == "epoch" else self.updates_per_epoch
        self.scheduler = build_scheduler(
            self.optimizer,
            total=config.epochs * per,
            warmup=config.warmup_epochs * per,
            warmup_start_factor=config.warmup_start_factor,
            schedule=config.schedule,
        )
        self.amp = _resolve_amp(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.epoch = 0
        self.global_step = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.stop_training = False
        self._elapsed = 0.0
        self._t0 = 0.0
        self.skipped_steps = 0
        self._log: _MetricsLog | None = None
        self._last_checkpoint: Path | None = None
        self._progress = self._new_progress()
        # Device-side count of this epoch's skipped steps: read once, at the epoch's end.
        self._skipped_epoch: Tensor | None = None

    def _new_progress(self) -> ProgressPrinter:
        cfg = self.config
        return ProgressPrinter(
            enabled=self.is_main_process,
            verbosity=cfg.verbosity,
            bars=cfg.progress,
            heartbeat_s=cfg.heartbeat_s,
            epochs=cfg.epochs,
        )

    @property
    def is_main_process(self) -> bool:
        """True on rank 0, which writes files and runs ``evaluate_fn``."""
        return self.rank == 0

    @property
    def best_path(self) -> Path:
        """Where the best evaluation's weights are written."""
        return self.output_dir / "best.safetensors"

    # ------------------------------------------------------------------ fit

    def fit(self, resume: bool | str | os.PathLike[str] = False) -> FitResult:
        """Train until ``config.epochs`` epochs are done (or ``stop_training`` is set).

        Args:
            resume: ``False`` starts a fresh run (refused if ``output_dir`` already holds
                checkpoints); ``True`` continues from the newest readable checkpoint in
                ``output_dir/checkpoints`` (a fresh run when there is none); a path continues
                from that file.

        Resuming with a changed configuration warns, naming each old and new value; the new
        epochs, learning rate, schedule and optimizer hyper-parameters apply from the next
        epoch. Changes that cannot carry the saved state over (optimizer, ``param_rules``,
        ``schedule_unit``, fewer ``epochs`` than already done) raise ``ValueError``.

        Raises:
            ValueError: when a fresh run would overwrite checkpoints, or a checkpoint is
                corrupt, does not fit the method/optimizer or the configuration changed in a
                way it cannot follow (the message names the file).
            FileNotFoundError: when ``resume`` is a path that does not exist.
            TrainingInterrupted: on Ctrl-C, once nothing half-written remains.
        """
        cfg = self.config
        self.stop_training = False
        prev_deterministic = torch.are_deterministic_algorithms_enabled()
        prev_benchmark = torch.backends.cudnn.benchmark
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        try:
            resumed = self._resume(resume)
            if not resumed:
                seed_everything(cfg.seed + self.rank)
            self._progress = self._new_progress()  # its clocks start with this fit
            if self.is_main_process:
                self._log = _MetricsLog(
                    self.output_dir,
                    resume_step=self.global_step if resumed else None,
                    tensorboard=cfg.tensorboard,
                )
            for cb in self.callbacks:
                cb.on_fit_start(self)
            self._t0 = time.perf_counter() - self._elapsed
            while self.epoch < cfg.epochs and not self.stop_training:
                self._run_epoch()
            result = FitResult(
                epochs_completed=self.epoch,
                global_step=self.global_step,
                best_value=self.best_value,
                best_epoch=self.best_epoch,
                last_metrics=dict(self.last_metrics),
                best_path=self.best_path if self.best_epoch is not None else None,
                last_checkpoint=self._last_checkpoint,
                skipped_steps=self.skipped_steps,
            )
            self._final_line(result)
            for cb in self.callbacks:
                cb.on_fit_end(self, result)
            return result
        except KeyboardInterrupt:
            # Checkpoints and best weights are published atomically, so what is on disk is
            # complete; the open logs are flushed and closed before anyone reads the message.
            self._close_log()
            newest = list_checkpoints(self.checkpoint_dir)
            raise TrainingInterrupted(
                self.output_dir, newest[0][1] if newest else None, self.epoch
            ) from None
        finally:
            self._close_log()
            torch.use_deterministic_algorithms(prev_deterministic)
            torch.backends.cudnn.benchmark = prev_benchmark

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _final_line(self, result: FitResult) -> None:
        self._progress.final_line(
            epoch=self.epoch,
            stopped_early=self.epoch < self.config.epochs,
            metric=self.config.select_metric,
            mode=self.config.select_mode,
            select_epoch=self.config.select_epoch,
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            best_path=None if result.best_path is None else os.fspath(result.best_path),
            evaluated=self.evaluate_fn is not None,
            last_checkpoint=(
                None if result.last_checkpoint is None else os.fspath(result.last_checkpoint)
            ),
        )

    # ------------------------------------------------------------------ epoch

    def _run_epoch(self) -> None:
        cfg = self.config
        e = self.epoch
        _set_sampler_epoch(self.train_loader, e)
        self.model.train()
        n = len(self.train_loader)
        accum = cfg.grad_accum_steps
        window: dict[str, Tensor] = {}
        epoch_sums: dict[str, Tensor] = {}
        window_count = epoch_count = 0
        lr = self._base_lr()
        progress = self._progress
        self._skipped_epoch = (
            torch.zeros((), dtype=torch.int64, device=self.device)
            if self.scaler.is_enabled()
            else None
        )
        grad_norm: Tensor | None = None
        for i, batch in enumerate(progress.bar(self.train_loader, n, e + 1)):
            group_start = i - i % accum
            group_size = min(accum, n - group_start)
            last_micro = i - group_start == group_size - 1
            values = self._forward_backward(batch, group_size, last_micro)
            for key, v in values.items():
                window[key] = window.get(key, 0) + v
                epoch_sums[key] = epoch_sums.get(key, 0) + v
            window_count += 1
            epoch_count += 1
            if not last_micro:
                continue
            lr = self._base_lr()
            grad_norm = self._optimizer_step()
            self.global_step += 1
            if cfg.schedule_unit == "step":
                self.scheduler.step()
            if self.global_step % cfg.log_every == 0:
                record = {"epoch": e + 1, "step": self.global_step, "lr": lr}
                latest = {} if grad_norm is None else {"grad_norm": grad_norm}
                record.update(self._mean_over_ranks(window, window_count, latest=latest))
                record["time"] = time.perf_counter() - self._t0
                window, window_count = {}, 0
                self._write(record)
                progress.step_line(record)
                for cb in self.callbacks:
                    cb.on_log(self, record)
            if progress.heartbeat_due():
                # One read every heartbeat_s seconds at most; rank 0 only, no collective.
                loss = epoch_sums["loss"] / epoch_count
                progress.heartbeat(e + 1, i + 1, n, float(loss))
        if cfg.schedule_unit == "epoch":
            self.scheduler.step()
        self.epoch = e + 1
        record = {"epoch": self.epoch, "step": self.global_step, "lr": lr}
        # Every rank's scaler sees the same all-reduced gradients, so the count is the same
        # on every rank and travels with the loss means in their single transfer.
        latest = {} if self._skipped_epoch is None else {"skipped_steps": self._skipped_epoch}
        means = self._mean_over_ranks(epoch_sums, epoch_count, latest=latest)
        skipped = None if self._skipped_epoch is None else int(means.pop("skipped_steps"))
        record.update({f"epoch_{k}": v for k, v in means.items()})
        if skipped is not None:
            record["skipped_steps"] = skipped
            self.skipped_steps += skipped
            if skipped == self.updates_per_epoch and self.is_main_process:
                warnings.warn(
                    f"Trainer: the GradScaler skipped all {skipped} optimizer steps of epoch "
                    f"{self.epoch}: every float16 gradient overflowed (inf/NaN), so the weights "
                    "did not change; use amp='bf16' or 'none', or a lower learning rate",
                    UserWarning,
                    stacklevel=2,
                )
        if self.evaluate_fn is not None and (
            self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
        ):
            metrics = self._evaluate()
            self.last_metrics = metrics
            record.update({f"val/{k}": v for k, v in metrics.items()})
            self._update_best(metrics)
        self._elapsed = time.perf_counter() - self._t0
        record["time"] = self._elapsed
        self._write(record)
        if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
            self._save_checkpoint()
        progress.epoch_line(record, self.updates_per_epoch, skipped)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def _forward_backward(
        self, batch: object, group_size: int, last_micro: bool
    ) -> dict[str, Tensor]:
        """Forward and backward of one micro-batch (its loss divided by ``group_size``).

        Returns the detached loss and terms, left on the device: reading them would make the
        host wait for the step, so they are only summed here and read when logging.
        """
        cfg = self.config
        grad_sync = (
            self.model.no_sync()
            if isinstance(self.model, DistributedDataParallel) and not last_micro
            else contextlib.nullcontext()
        )
        with grad_sync:
            with torch.autocast(
                self.device.type,
                dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16,
                enabled=cfg.amp != "none",
            ):
                out = self.model(self._to_device(batch))
            total, terms = _unpack_output(out)
            scaled: Tensor = self.scaler.scale(total / group_size)
            torch.autograd.backward(scaled)
        return {"loss": total.detach().float(), **{f"loss/{k}": v for k, v in terms.items()}}

    def _base_lr(self) -> float:
        """The current rate of a multiplier-1 group (``config.lr`` times the schedule)."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) / float(group["lr_mult"]) if group["lr_mult"] else 0.0

    def _optimizer_step(self) -> Tensor | None:
        grad_norm = None
        if self.config.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(
                self.method.parameters(), self.config.grad_clip_norm
            )
        if self._skipped_epoch is None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            # The scaler backs its scale off exactly when it skips the step; comparing the
            # scale tensors on the device counts skips without making the host wait (the
            # public get_scale() would read the scale back every step).
            before = self.scaler._get_scale_async()
            assert before is not None
            before = before.clone()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            after = self.scaler._get_scale_async()
            assert after is not None
            self._skipped_epoch += after < before
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _to_device(self, batch: object) -> dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"Trainer: batches must be dicts of tensors, got {type(batch).__name__}"
            )
        # Batches come from host memory: on an accelerator the copy need not wait for its queue.
        non_blocking = not reads_are_free(self.device)
        return {
            k: v.to(self.device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
            for k, v in batch.items()
        }

    def _mean_over_ranks(
        self,
        sums: dict[str, Tensor],
        count: int,
        *,
        latest: Mapping[str, Tensor] | None = None,
    ) -> dict[str, float]:
        """Means of ``sums`` over ``count`` micro-batches of every rank, then the ``latest``
        values (the same on every rank, such as the gradient norm), read in one transfer:
        the only time a training step makes the host wait for the device."""
        keys = sorted(sums)
        if not keys:
            return {}
        packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32) for k in keys])
        # A fill on the device: a blocking copy of the count from the host would sync too.
        packed = torch.cat([packed, packed.new_full((1,), count)])
        if self.world_size > 1:
            dist.all_reduce(packed)
        latest = latest or {}
        extra = sorted(latest)
        last = [latest[k].detach().float().reshape(1) for k in extra]
        out = torch.cat([packed[:-1] / packed[-1], *last])
        return dict(zip([*keys, *extra], out.tolist(), strict=True))

    def _write(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(record)

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> dict[str, float]:
        assert self.evaluate_fn is not None
        payload: tuple[dict[str, float], str | None] = ({}, None)
        failure: Exception | None = None
        if self.is_main_process:
            self.method.eval()
            try:
                with torch.no_grad():
                    raw = self.evaluate_fn(self.method)
                payload = _validate_metrics(raw, self.config.select_metric)
            except Exception as e:
                # Tell the other ranks before raising, so they do not wait forever.
                failure = e
                payload = ({}, f"Trainer: evaluate_fn raised {e!r} on rank 0")
            finally:
                self.method.train()
        metrics, error = broadcast_object(payload)
        if failure is not None:
            raise failure
        if error is not None:
            raise ValueError(error)
        return metrics

    def _update_best(self, metrics: dict[str, float]) -> None:
        value = metrics[self.config.select_metric]
        if value != value:  # NaN never wins
            return
        if self.best_value is not None and self.config.select_epoch == "best":
            better = (
                value > self.best_value
                if self.config.select_mode == "max"
                else value < self.best_value
            )
            if not better:
                return
        self.best_value, self.best_epoch = value, self.epoch
        if self.is_main_process:
            save_weights(
                self.method,
                self.best_path,
                metadata={
                    "epoch": str(self.epoch),
                    "metric": self.config.select_metric,
                    "value": repr(value),
                },
            )

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        rng = capture_rng_state(self.train_loader)
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
            all_rng = gathered
        else:
            all_rng = [rng]
        if self.is_main_process:
            state = {
                "model": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "global_step": self.global_step,
                "best_value": self.best_value,
                "best_epoch": self.best_epoch,
                "last_metrics": dict(self.last_metrics),
                "elapsed": self._elapsed,
                "skipped_steps": self.skipped_steps,
                "world_size": self.world_size,
                "rng": all_rng,
                "config": self.config.to_dict(),
            }
            path = save_checkpoint(state, checkpoint_path(self.checkpoint_dir, self.epoch))
            prune_checkpoints(self.checkpoint_dir, self.config.keep_last)
            self._last_checkpoint = path
        if self.world_size > 1:
            dist.barrier()

    def _resume(self, resume: bool | str | os.PathLike[str]) -> bool:
        if resume is False:
            existing = list_checkpoints(self.checkpoint_dir)
            if existing:
                raise ValueError(
                    f"Trainer.fit: {self.checkpoint_dir} already holds {len(existing)} "
                    "checkpoint(s); pass resume=True to continue that run or choose another "
                    "output_dir"
                )
            return False
        if resume is True:
            found = load_latest_checkpoint(self.checkpoint_dir)
            if found is None:
                _log.warning("no checkpoint in %s; starting a fresh run", self.checkpoint_dir)
                return False
            path, ckpt = found
        else:
            path = Path(resume)
            ckpt = load_checkpoint(path)
        self._load_state(path, ckpt)
        _log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.global_step)
        return True

    def _config_changes(self, path: Path, ckpt: Mapping[str, Any]) -> bool:
        """Compare the checkpoint's configuration with this one: warn about each change that
        the resumed run follows, raise for those it cannot; True when anything changed that
        the optimizer or the schedule must take over."""
        saved = ckpt.get("config")
        if not isinstance(saved, Mapping):
            return False
        fn = "Trainer.fit"
        current = self.config.to_dict()
        diffs = {
            k: (saved[k], current[k])
            for k in sorted(current)
            if k in saved and k not in _RESUME_FREE and saved[k] != current[k]
        }
        done = int(ckpt["epoch"])
        if self.config.epochs < done:
            raise ValueError(
                f"{fn}: checkpoint {path} has already completed {done} epochs but epochs is "
                f"{self.config.epochs}; pass epochs >= {done} to continue that run"
            )
        fatal = {k: v for k, v in diffs.items() if k in _RESUME_FATAL}
        if fatal:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in fatal.items())
            raise ValueError(
                f"{fn}: checkpoint {path} was written with other settings the saved optimizer "
                f"and schedule state cannot follow ({listed}); resume with the old values or "
                "start a fresh run in another output_dir"
            )
        if diffs:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diffs.items())
            warnings.warn(
                f"{fn}: resuming {path} with changed settings: {listed}; the new values apply "
                f"from epoch {done + 1}, so the run differs from one trained with them "
                "throughout",
                UserWarning,
                stacklevel=4,
            )
        return bool(diffs)

    def _load_state(self, path: Path, ckpt: dict[str, Any]) -> None:
        required = ("model", "optimizer", "scheduler", "scaler", "epoch", "global_step", "rng")
        missing = [k for k in required if k not in ckpt]
        if missing:
            raise ValueError(f"Trainer.fit: checkpoint {path} lacks {missing}")
        changed = self._config_changes(path, ckpt)
        # The optimizer and scheduler states carry the hyper-parameters they were saved with;
        # the ones of this configuration are put back after loading.
        fresh_groups = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        fresh_factors = [dict(vars(f)) for f in self.scheduler.lr_lambdas]
        try:
            self.method.load_state_dict(ckpt["model"], strict=True)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"Trainer.fit: checkpoint {path} does not fit this method/optimizer: {e}"
            ) from e
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if changed:
            for group, fresh in zip(self.optimizer.param_groups, fresh_groups, strict=True):
                group.update(fresh)
            for factor, state in zip(self.scheduler.lr_lambdas, fresh_factors, strict=True):
                vars(factor).update(state)
            self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
            t = self.scheduler.last_epoch
            for group, base, factor in zip(
                self.optimizer.param_groups,
                self.scheduler.base_lrs,
                self.scheduler.lr_lambdas,
                strict=True,
            ):
                group["lr"] = base * factor(t)
        if ckpt["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_value = ckpt.get("best_value")
        self.best_epoch = ckpt.get("best_epoch")
        self.last_metrics = dict(ckpt.get("last_metrics", {}))
        self._elapsed = float(ckpt.get("elapsed", 0.0))
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        rng = ckpt["rng"]
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank], self.train_loader)
        else:
            warnings.warn(
                f"Trainer.fit: checkpoint {path} was written by {len(rng)} rank(s) but this run "
                f"has {self.world_size}; random streams are reseeded, so the run will not "
                "match an uninterrupted one bit for bit",
                UserWarning,
                stacklevel=3,
            )
            seed_everything(self.config.seed + self.rank + 1000 * self.epoch)


def _resolve_amp(amp: str, device: torch.device) -> Literal["none", "bf16", "fp16"]:
    if amp == "auto":
        if device.type != "cuda":
            return "none"
        # Native bfloat16 arithmetic starts with compute capability 8.0 (Ampere).
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    if amp == "bf16":
        return "bf16"
    return "fp16" if amp == "fp16" else "none"


def _unpack_output(out: object) -> tuple[Tensor, dict[str, Tensor]]:
    total = getattr(out, "total", None)
    if not isinstance(total, Tensor) or total.numel() != 1 or not total.is_floating_point():
        raise TypeError(
            "Trainer: method(batch) must return a LossOutput whose total is a floating scalar "
            f"tensor, got {type(out).__name__}"
        )
    terms = getattr(out, "terms", None) or {}
    return total.reshape(()), {
        k: v.detach().float().reshape(()) for k, v in terms.items() if isinstance(v, Tensor)
    }


def _validate_metrics(raw: object, select_metric: str) -> tuple[dict[str, float], str | None]:
    if not isinstance(raw, Mapping):
        return {}, f"Trainer: evaluate_fn must return a dict of floats, got {type(raw).__name__}"
    try:
        metrics = {str(k): float(v) for k, v in raw.items()}
    except (TypeError, ValueError) as e:
        return {}, f"Trainer: evaluate_fn returned a non-numeric metric ({e})"
    if select_metric not in metrics:
        return {}, (
            f"Trainer: evaluate_fn returned {sorted(metrics)} but select_metric is "
            f"{select_metric!r}"
        )
    return metrics, None


def _samplers(loader: object) -> list[object]:
    batch_sampler = getattr(loader, "batch_sampler", None)
    out: list[object] = []
    for s in (
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    ):
        if s is not None and all(s is not o for o in out):
            out.append(s)
    return out


def _has_set_epoch(loader: object) -> bool:
    return any(
        isinstance(s, DistributedSampler) or callable(getattr(s, "set_epoch", None))
        for s in _samplers(loader)
    )


def _set_sampler_epoch(loader: object, epoch: int) -> None:
    for s in _samplers(loader):
        set_epoch = getattr(s, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
