"""Every registered method trains under float16 and bfloat16 CPU autocast from random init.

CPU autocast applies the same kind of op lists as CUDA autocast (matrix products in the half
dtype, the rest in float32), so a method whose float16 step overflows here overflows on a GPU.
Three optimizer steps with a GradScaler (float16) or without (bfloat16) must keep the loss
finite, skip no step (the scale never backs off) and move the weights.

The scaler starts at 2**4, not its default 2**16: the unscaled gradients of these tiny
random-init models are O(1) to O(10) at the encoders' outputs (measured: ~2 for IRRA, whose
SDM scales cosines by 50 over a batch of 4; ~23 for UCA, whose distribution contrast starts
near 330), so 2**16, and for UCA even 2**8, overflows float16 by construction. The scaler's
designed response, skipping steps and halving until the gradients fit, would then hide
whether anything in the step itself overflows, which is what this test is about.
"""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import make_batch
from textreid.methods import list_methods
from textreid.pipeline import build_method
from textreid.recipes import get_recipe, list_recipes
from textreid.tokenization import CLIPTokenizer

SIZE = (48, 24)
STEPS = 3
SCALE = 2.0**4


def _tiny_recipe(method: str) -> str:
    names = [n for n in list_recipes() if n.startswith("tiny-") and get_recipe(n).method == method]
    assert names, f"method {method!r} has no tiny recipe to test it with"
    return names[0]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("method_name", list_methods())
def test_training_steps_under_autocast_move_the_weights(
    method_name: str, dtype: torch.dtype, tokenizer: CLIPTokenizer
) -> None:
    base = get_recipe(_tiny_recipe(method_name))
    recipe = base.replace(model_overrides={**base.model_overrides, "image_size": SIZE})
    torch.manual_seed(0)
    method = build_method(recipe, 3, tokenizer=tokenizer)
    params = {n: p for n, p in method.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4, weight_decay=0.0)
    fp16 = dtype == torch.float16
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, enabled=fp16)
    batch = make_batch(tokenizer, size=SIZE)
    moved: set[str] = set()
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            out = method(batch)
        assert out.total.dtype == torch.float32
        terms = {k: float(v) for k, v in out.terms.items()}
        assert torch.isfinite(out.total), f"step {step}: loss terms {terms}"
        scaler.scale(out.total).backward()
        bad = [n for n, p in params.items() if p.grad is not None and not p.grad.isfinite().all()]
        assert not bad, f"step {step}: non-finite gradients in {len(bad)} parameters: {bad[:5]}"
        moved |= {n for n, p in params.items() if p.grad is not None and bool(p.grad.any())}
        scaler.step(optimizer)
        scaler.update()
        if fp16:
            assert scaler.get_scale() == SCALE, f"step {step} was skipped (found inf)"
    assert moved, "no parameter got a gradient"
    unchanged = [n for n in moved if torch.equal(params[n].detach(), before[n])]
    assert not unchanged, f"weights with gradients did not move: {unchanged[:5]}"
