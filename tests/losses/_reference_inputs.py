"""Input recipes of the reference-code fixture (fixtures/reference_losses.json)."""

from __future__ import annotations

from typing import Any

import torch


def b64_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The B=64, D=512, 16-identity case; float32 inputs are the float64 draws cast."""
    g = torch.Generator().manual_seed(20230)
    f64 = torch.float64
    out = {
        "image": torch.randn(64, 512, generator=g, dtype=f64),
        "text": torch.randn(64, 512, generator=g, dtype=f64),
        "pids": torch.randint(0, 16, (64,), generator=g),
        "weight": torch.randn(16, 512, generator=g, dtype=f64) * 0.05,
        "bias": torch.randn(16, generator=g, dtype=f64) * 0.1,
        "probe_image": torch.randn(64, 512, generator=g, dtype=f64),
        "probe_text": torch.randn(64, 512, generator=g, dtype=f64),
    }
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}


def tiny_inputs(reference: dict[str, Any]) -> dict[str, torch.Tensor]:
    raw = reference["tiny"]["inputs"]
    f64 = torch.float64
    return {
        "image": torch.tensor(raw["image"], dtype=f64),
        "text": torch.tensor(raw["text"], dtype=f64),
        "pids": torch.tensor(raw["pids"]),
        "weight": torch.tensor(raw["weight"], dtype=f64),
        "bias": torch.tensor(raw["bias"], dtype=f64),
    }
