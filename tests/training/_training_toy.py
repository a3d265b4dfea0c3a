"""A toy retrieval method and data for the trainer tests (no dependency on real models/losses)."""

# The legacy global numpy stream is deliberate: it is what checkpoints must restore.
# ruff: noqa: NPY002

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from textreid.losses.combine import LossOutput
from textreid.training import TrainerConfig

DIM_IN, VOCAB, LEN = 6, 20, 5


class ToyMethod(nn.Module):
    """Linear image encoder, mean-of-embeddings text encoder, symmetric InfoNCE (or alignment)."""

    def __init__(self, dim: int = 4, dropout: float = 0.0, loss: str = "infonce") -> None:
        super().__init__()
        self.image_proj = nn.Linear(DIM_IN, dim)
        self.text_embed = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.text_proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.loss = loss

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_proj(self.drop(images)), dim=-1)

    def encode_text(self, text_ids: Tensor) -> Tensor:
        return F.normalize(self.text_proj(self.drop(self.text_embed(text_ids))), dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        img = self.encode_image(batch["images"])
        txt = self.encode_text(batch["text_ids"])
        if self.loss == "align":
            # Per-pair loss: its batch mean decomposes over shards and micro-batches.
            total = (1 - (img * txt).sum(-1)).mean()
            return LossOutput(total, {"align": total.detach()})
        logits = 10.0 * img.float() @ txt.float().T
        target = torch.arange(img.shape[0], device=img.device)
        i2t = F.cross_entropy(logits, target)
        t2i = F.cross_entropy(logits.T, target)
        return LossOutput(i2t + t2i, {"i2t": i2t.detach(), "t2i": t2i.detach()})


class ToyData(Dataset[dict[str, Tensor]]):
    """``n`` image/caption pairs of ``n // 4`` identities; optional random augmentation that
    draws from the global torch and numpy streams (so RNG restoration matters)."""

    def __init__(self, n: int = 32, seed: int = 0, augment: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.pids = torch.arange(n) // 4
        protos = torch.randn(n // 4 + 1, DIM_IN, generator=g)
        self.images = protos[self.pids] + 0.3 * torch.randn(n, DIM_IN, generator=g)
        base = (self.pids * 2) % VOCAB
        noise = torch.randint(0, VOCAB, (n, LEN), generator=g)
        keep = torch.rand(n, LEN, generator=g) < 0.6
        self.text_ids = torch.where(keep, base[:, None], noise)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        image = self.images[i]
        if self.augment:
            scale = float(np.random.uniform(0.9, 1.1))
            image = scale * image + 0.05 * torch.randn(DIM_IN)
        return {"images": image, "text_ids": self.text_ids[i], "pids": self.pids[i]}


def make_loader(
    data: Dataset[dict[str, Tensor]],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    sampler: Sampler[int] | None = None,
) -> DataLoader[dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, sampler=sampler)


def recall_at_1(method: nn.Module, data: ToyData) -> dict[str, float]:
    """Text-to-image R@1 (percent) over the whole toy set."""
    q = method.encode_text(data.text_ids)  # type: ignore[operator]
    g = method.encode_image(data.images)  # type: ignore[operator]
    top = (q @ g.T).argmax(dim=1)
    return {"R1": 100.0 * float((data.pids[top] == data.pids).float().mean())}


def toy_config(tmp_path: Path, **kw: Any) -> TrainerConfig:
    """Plain SGD at a constant rate, a metrics line per update, no bars, no TensorBoard."""
    base: dict[str, Any] = {
        "epochs": 2,
        "lr": 0.05,
        "weight_decay": 0.0,
        "optimizer": "sgd",
        "momentum": 0.0,
        "warmup_epochs": 0,
        "schedule": "constant",
        "output_dir": str(tmp_path),
        "progress": False,
        "log_every": 1,
        "tensorboard": False,
    }
    base.update(kw)
    return TrainerConfig(**base)
