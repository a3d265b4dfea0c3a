"""Parameter-group rules: IRRA parity, rule semantics and optimizer construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from textreid.training import ParamRule, build_optimizer, build_param_groups, irra_param_rules

# (name, lr, weight_decay) from IRRA's solver/build.build_optimizer run with lr 1e-5,
# lr_factor 5, bias_lr_factor 2, weight_decay 4e-5, weight_decay_bias 0 on these names.
IRRA_GROUPS = [
    ("base_model.positional_embedding", 1e-05, 4e-05),
    ("base_model.visual.conv1.weight", 1e-05, 4e-05),
    ("base_model.visual.transformer.resblocks.0.attn.in_proj_weight", 1e-05, 4e-05),
    ("base_model.visual.transformer.resblocks.0.attn.in_proj_bias", 2e-05, 0.0),
    ("base_model.visual.transformer.resblocks.0.ln_1.weight", 1e-05, 4e-05),
    ("base_model.visual.transformer.resblocks.0.ln_1.bias", 2e-05, 0.0),
    ("base_model.token_embedding.weight", 1e-05, 4e-05),
    ("base_model.ln_final.bias", 2e-05, 0.0),
    ("cross_attn.in_proj_weight", 5e-05, 4e-05),
    ("cross_attn.in_proj_bias", 2e-05, 0.0),
    ("cross_attn.out_proj.weight", 5e-05, 4e-05),
    ("cross_modal_transformer.resblocks.0.mlp.c_fc.weight", 5e-05, 4e-05),
    ("cross_modal_transformer.resblocks.0.mlp.c_fc.bias", 2e-05, 0.0),
    ("ln_pre_t.weight", 1e-05, 4e-05),
    ("ln_pre_t.bias", 2e-05, 0.0),
    ("ln_pre_i.weight", 1e-05, 4e-05),
    ("ln_post.weight", 1e-05, 4e-05),
    ("classifier.weight", 5e-05, 4e-05),
    ("classifier.bias", 5e-05, 0.0),
    ("mlm_head.dense.weight", 5e-05, 4e-05),
    ("mlm_head.dense.bias", 5e-05, 0.0),
    ("mlm_head.ln.weight", 5e-05, 4e-05),
    ("mlm_head.fc.weight", 5e-05, 4e-05),
    ("mlm_head.fc.bias", 5e-05, 0.0),
]


def _module_with(names: list[str]) -> nn.Module:
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(torch.zeros(1)))
    return root


def _lr_wd_by_name(
    model: nn.Module, groups: list[dict[str, object]]
) -> dict[str, tuple[float, float]]:
    by_id = {}
    for g in groups:
        for p in g["params"]:  # type: ignore[attr-defined]
            by_id[id(p)] = (g["lr"], g["weight_decay"])
    return {n: by_id[id(p)] for n, p in model.named_parameters()}  # type: ignore[misc]


def test_irra_rules_match_reference_groups() -> None:
    model = _module_with([n for n, _, _ in IRRA_GROUPS])
    groups = build_param_groups(model, lr=1e-5, weight_decay=4e-5, rules=irra_param_rules())
    got = _lr_wd_by_name(model, groups)
    for name, lr, wd in IRRA_GROUPS:
        assert got[name] == (pytest.approx(lr, rel=1e-12), wd), name


def test_irra_rules_in_adam_optimizer() -> None:
    model = _module_with([n for n, _, _ in IRRA_GROUPS])
    opt = build_optimizer(
        model, name="adam", lr=1e-5, weight_decay=4e-5, eps=1e-3, rules=irra_param_rules()
    )
    assert isinstance(opt, torch.optim.Adam)
    assert {(g["lr"], g["weight_decay"]) for g in opt.param_groups} == {
        (lr, wd) for _, lr, wd in IRRA_GROUPS
    }
    assert all(g["eps"] == 1e-3 for g in opt.param_groups)


def test_rules_replace_multipliers_in_order() -> None:
    model = _module_with(["a.cross.bias", "a.cross.weight", "b.weight"])
    rules = [ParamRule("cross", 5.0), ParamRule("bias", 2.0, weight_decay=0.0)]
    got = _lr_wd_by_name(model, build_param_groups(model, lr=1.0, weight_decay=0.1, rules=rules))
    assert got == {"a.cross.bias": (2.0, 0.0), "a.cross.weight": (5.0, 0.1), "b.weight": (1.0, 0.1)}
    # Reversed order: the later "cross" rule wins the multiplier, the wd override stays.
    got = _lr_wd_by_name(
        model, build_param_groups(model, lr=1.0, weight_decay=0.1, rules=rules[::-1])
    )
    assert got["a.cross.bias"] == (5.0, 0.0)


def test_fnmatch_pattern_matches_whole_name() -> None:
    rule = ParamRule("*.bias", 2.0)
    assert rule.matches("encoder.layer.bias")
    assert not rule.matches("bias_scale.weight")
    assert ParamRule("bias").matches("bias_scale.weight")  # substring without wildcard
    assert ParamRule("enc.layer[0-9].weight").matches("enc.layer3.weight")


def test_frozen_parameters_are_left_out_and_groups_are_shared() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    groups = build_param_groups(model, lr=0.1, weight_decay=0.0, rules=[ParamRule("bias", 2.0)])
    # First appearance order: 0.bias (x2), 1.weight (x1), then 1.bias joins the x2 group.
    assert [len(g["params"]) for g in groups] == [2, 1]
    assert [g["lr_mult"] for g in groups] == [2.0, 1.0]
    assert [g["lr"] for g in groups] == [0.2, 0.1]
    assert sum(len(g["params"]) for g in groups) == 3


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])  # fmt: skip
def test_build_optimizer_kinds(name: str, cls: type) -> None:
    opt = build_optimizer(nn.Linear(2, 2), name=name, lr=0.1, momentum=0.5)  # type: ignore[arg-type]
    assert isinstance(opt, cls)


def test_build_optimizer_errors() -> None:
    with pytest.raises(ValueError, match="build_optimizer: name must be one of"):
        build_optimizer(nn.Linear(2, 2), name="lion", lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="build_optimizer: lr must be > 0"):
        build_optimizer(nn.Linear(2, 2), lr=0.0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="build_optimizer: model has no parameters"):
        build_optimizer(frozen, lr=0.1)


def test_param_rule_errors() -> None:
    with pytest.raises(ValueError, match="ParamRule: pattern must be a non-empty string"):
        ParamRule("")
    with pytest.raises(ValueError, match="ParamRule: lr_mult must be >= 0"):
        ParamRule("x", -1.0)
    with pytest.raises(ValueError, match="ParamRule: weight_decay must be >= 0"):
        ParamRule("x", 1.0, weight_decay=-0.1)
