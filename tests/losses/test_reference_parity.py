"""SDM, A-SDM, CMPM, ID and InfoNCE equal the authors' code (IRRA, FMFA) on seeded inputs.

The fixture holds the values and gradients the reference functions returned: IRRA's
``compute_sdm`` (logit scale 50), ``compute_cmpm``, ``compute_itc`` (scale 50), ``compute_id`` on
float32/64 linear logits, and FMFA's ``compute_sdm(use_weight=True)`` (HEAD, α 0.1) and
``compute_a_sdm`` (first release, α 10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from tests.losses._reference_inputs import b64_inputs, tiny_inputs
from textreid.losses.functional import asdm_loss, cmpm_loss, id_loss, infonce_loss, sdm_loss

Case = Callable[[Tensor, Tensor, dict[str, Tensor]], Tensor]

CASES: dict[str, Case] = {
    "sdm": lambda v, t, x: sdm_loss(v, t, x["pids"], logit_scale=50.0),
    "asdm_alpha0.1": lambda v, t, x: asdm_loss(v, t, x["pids"], alpha=0.1),
    "asdm_alpha10": lambda v, t, x: asdm_loss(v, t, x["pids"], alpha=10.0),
    "cmpm": lambda v, t, x: cmpm_loss(v, t, x["pids"]),
    "itc": lambda v, t, x: infonce_loss(v, t, logit_scale=50.0),
    "id": lambda v, t, x: id_loss(v, t, x["pids"], weight=x["weight"], bias=x["bias"]),
}


def _run(case: Case, x: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    v = x["image"].clone().requires_grad_(True)
    t = x["text"].clone().requires_grad_(True)
    loss = case(v, t, x)
    loss.backward()
    assert v.grad is not None
    assert t.grad is not None
    return loss.detach(), v.grad, t.grad


@pytest.mark.parametrize("name", list(CASES))
def test_tiny_case_values_and_gradients(reference: dict[str, Any], name: str) -> None:
    ref = reference["tiny"][name]
    loss, gv, gt = _run(CASES[name], tiny_inputs(reference))
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(
        gv, torch.tensor(ref["grad_image"], dtype=gv.dtype), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        gt, torch.tensor(ref["grad_text"], dtype=gt.dtype), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CASES))
def test_b64_values_and_gradients(reference: dict[str, Any], name: str, dtype: torch.dtype) -> None:
    key = "b64_float64" if dtype == torch.float64 else "b64_float32"
    ref = reference[key][name]
    x = b64_inputs(dtype)
    # A failure here with the checksum also failing means the RNG recipe drifted, not the loss.
    assert x["image"].double().sum().item() == pytest.approx(
        reference[key]["checksum"]["image_sum"]
    )
    assert x["pids"].tolist() == reference[key]["checksum"]["pids"]
    loss, gv, gt = _run(CASES[name], x)
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    atol = 1e-6 if dtype == torch.float32 else 1e-9
    corner_i = torch.tensor(ref["grad_image_corner"], dtype=dtype)
    corner_t = torch.tensor(ref["grad_text_corner"], dtype=dtype)
    torch.testing.assert_close(gv[:3, :6], corner_i, rtol=1e-5, atol=atol)
    torch.testing.assert_close(gt[:3, :6], corner_t, rtol=1e-5, atol=atol)
    assert gv.norm().item() == pytest.approx(ref["grad_image_norm"], rel=1e-5)
    assert gt.norm().item() == pytest.approx(ref["grad_text_norm"], rel=1e-5)
    probe = (gv * x["probe_image"]).sum() + (gt * x["probe_text"]).sum()
    # The probe sums 65k products; float32 accumulation alone moves it by ~2e-6.
    assert probe.item() == pytest.approx(ref["grad_probe"], rel=1e-5, abs=10 * atol)
