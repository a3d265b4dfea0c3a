"""Training engine: :class:`Trainer`, schedules, optimizer rules, checkpoints, DDP helpers."""

from __future__ import annotations

from textreid.training.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    load_latest_checkpoint,
)
from textreid.training.distributed import (
    DistInfo,
    barrier,
    cleanup,
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from textreid.training.optim import ParamRule, build_optimizer, build_param_groups, irra_param_rules
from textreid.training.schedule import build_scheduler, lr_at
from textreid.training.trainer import (
    Callback,
    EvaluateFn,
    FitResult,
    Trainer,
    TrainerConfig,
    TrainingInterrupted,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "Callback",
    "DistInfo",
    "EvaluateFn",
    "FitResult",
    "ParamRule",
    "Trainer",
    "TrainerConfig",
    "TrainingInterrupted",
    "barrier",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "cleanup",
    "distributed_sampler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "irra_param_rules",
    "is_main_process",
    "load_checkpoint",
    "load_latest_checkpoint",
    "lr_at",
    "seed_everything",
]
