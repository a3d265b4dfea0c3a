"""Every registered recipe builds; the published settings are the papers'; tiny ones train."""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import make_batch, recipe_tokenizer
from textreid.methods import (
    CMRMethod,
    DualEncoderMethod,
    FMFAMethod,
    IRRAMethod,
    IVTMethod,
    UCAMethod,
)
from textreid.models.single_stream import SingleStreamEncoder
from textreid.pipeline import METHODS, build_method
from textreid.recipes import get_recipe, list_recipes
from textreid.training.optim import ParamRule, irra_param_rules

TINY = {
    "tiny-irra": IRRAMethod,
    "tiny-fmfa": FMFAMethod,
    "tiny-ivt": IVTMethod,
    "tiny-uca": UCAMethod,
    "tiny-cmr": CMRMethod,
}


def test_every_recipe_builds_and_names_a_known_method() -> None:
    names = list_recipes()
    assert set(TINY) | {"irra", "fmfa", "fmfa-v1", "ivt", "uca", "cmr"} <= set(names)
    for name in names:
        recipe = get_recipe(name)
        assert recipe.name == name
        assert recipe.method in METHODS
        assert recipe.citation
        assert recipe.notes


def test_fmfa_recipes_use_the_released_values() -> None:
    head, v1 = get_recipe("fmfa"), get_recipe("fmfa-v1")
    # HEAD (run.sh / build_finetune.py): alpha 0.1, EFA temperature 1, margins 0.1 / 0.9,
    # flat lr 5e-6 and weight decay 4e-5 on every parameter.
    assert head.method_kwargs["alpha"] == 0.1
    assert head.method_kwargs["efa_temperature"] == 1.0
    assert (head.method_kwargs["margin_text"], head.method_kwargs["margin_patch"]) == (0.1, 0.9)
    assert (head.trainer.lr, head.trainer.weight_decay, head.trainer.param_rules) == (
        5e-6,
        4e-5,
        (),
    )
    assert (head.trainer.epochs, head.data.batch_size, head.trainer.eps) == (60, 64, 1e-3)
    # First release (run_fmfa.sh): alpha 10, temperature 0.1, margins 0.1 / 0.1, IRRA's rules.
    assert (v1.method_kwargs["alpha"], v1.method_kwargs["efa_temperature"]) == (10.0, 0.1)
    assert v1.method_kwargs["margin_patch"] == 0.1
    assert v1.trainer.lr == 1e-5
    assert v1.trainer.param_rules == tuple(irra_param_rules())


def test_ivt_recipe_uses_the_released_fine_tuning_values() -> None:
    r = get_recipe("ivt")
    assert r.model_overrides["image_size"] == (384, 128)
    assert (r.model_overrides["patch_size"], r.model_overrides["stride"]) == (16, 12)
    assert (r.model_overrides["width"], r.model_overrides["depth"]) == (768, 12)
    assert r.model_overrides["drop_ratio"] == 0.2
    assert (r.data.batch_size, r.data.sampler, r.data.num_instances) == (28, "identity", 4)
    t = r.trainer
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.epochs) == (
        "sgd",
        5e-3,
        0.9,
        1e-4,
        120,
    )
    assert (t.warmup_epochs, t.warmup_start_factor, t.seed) == (5, 0.01, 1234)
    assert t.param_rules == (ParamRule("bias", 2.0),)


def test_uca_and_cmr_recipes_state_their_choices_as_ours() -> None:
    for name in ("uca", "cmr"):
        r = get_recipe(name)
        assert "ours" in r.notes
        assert r.model == "ViT-B/16"
        assert r.trainer == get_recipe("irra").trainer
    assert get_recipe("uca").mask_token == "<|mask|>"


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_recipe_builds_on_the_tiny_model_and_trains_a_step(name: str) -> None:
    recipe = get_recipe(name)
    assert recipe.data.image_size == (96, 48)
    tokenizer = recipe_tokenizer(recipe)
    torch.manual_seed(0)
    method = build_method(recipe, 3, tokenizer=tokenizer)
    assert isinstance(method, TINY[name])
    if isinstance(method, DualEncoderMethod):
        cfg = method.encoder.config
        assert recipe.model == "tiny"
        assert cfg.embed_dim == (128 if name == "tiny-irra" else 64)
        assert (cfg.vision.image_size, cfg.vision.patch_size) == ((96, 48), 12)
    else:
        assert isinstance(method.encoder, SingleStreamEncoder)
        assert method.encoder.image_size == (96, 48)
        assert method.encoder.width == 64
    out = method(make_batch(tokenizer, size=(96, 48)))
    out.total.backward()
    assert torch.isfinite(out.total)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in method.parameters())


def test_full_size_recipes_train_in_mixed_precision_and_tiny_ones_in_float32() -> None:
    # "auto" is bf16 (fp16 + GradScaler on older GPUs) on CUDA and float32 on a CPU.
    for name in list_recipes():
        want = "none" if name.startswith("tiny-") else "auto"
        assert get_recipe(name).trainer.amp == want, name
