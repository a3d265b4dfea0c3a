"""Train the toy method through the Trainer; launched by test_training_distributed.py.

Usage: ``torchrun --standalone --nproc_per_node 2 ddp_toy_run.py OUT_DIR`` (or plain python for
one process). Rank 0 writes ``OUT_DIR/final.pt``; every rank records what it saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _training_toy import ToyData, ToyMethod, make_loader

from textreid.losses.combine import LossOutput
from textreid.training import (
    Trainer,
    TrainerConfig,
    cleanup,
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
)

PER_RANK_BATCH = 4
EPOCHS = 2


class WorldAwareToy(ToyMethod):
    """Records the world size it sees at forward time (what a gathering loss would use)."""

    def __init__(self) -> None:
        super().__init__(loss="align")
        self.world_sizes: set[int] = set()

    def forward(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        self.world_sizes.add(get_world_size())
        return super().forward(batch)


def build() -> tuple[WorldAwareToy, ToyData]:
    torch.manual_seed(0)
    return WorldAwareToy(), ToyData(32)


def config(out: Path) -> TrainerConfig:
    return TrainerConfig(
        epochs=EPOCHS,
        lr=0.1,
        weight_decay=0.0,
        optimizer="sgd",
        momentum=0.9,
        warmup_epochs=1,
        output_dir=str(out),
        progress=False,
        log_every=2,
        tensorboard=False,
    )


def main(out: Path) -> None:
    torch.set_num_threads(1)
    init_distributed()
    method, data = build()
    sampler = distributed_sampler(data, shuffle=False)
    loader = make_loader(data, PER_RANK_BATCH, sampler=sampler)
    evaluated: list[int] = []

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        evaluated.append(get_rank())
        return {"R1": 1.0}

    result = Trainer(method, loader, config(out), evaluate).fit()
    report = {
        "rank": get_rank(),
        "world_sizes": sorted(method.world_sizes),
        "evaluated": evaluated,
        "best_epoch": result.best_epoch,
    }
    (out / f"rank{get_rank()}.json").write_text(json.dumps(report))
    if get_rank() == 0:
        torch.save(method.state_dict(), out / "final.pt")
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
