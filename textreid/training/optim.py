"""Optimizers with per-module learning-rate and weight-decay rules.

A :class:`ParamRule` matches parameter names (the unwrapped module's ``named_parameters``)
by substring, or by :func:`fnmatch.fnmatchcase` when the pattern holds a wildcard
(``*``, ``?`` or ``[``). Rules apply in order: every matching rule *replaces* the learning-rate
multiplier (multipliers never compound) and, when it gives one, the weight decay. Parameters
sharing a multiplier and a weight decay share one optimizer group.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from textreid._checks import check_choice, check_positive

__all__ = ["OPTIMIZERS", "ParamRule", "build_optimizer", "build_param_groups", "irra_param_rules"]

OptimizerName = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[OptimizerName, ...] = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class ParamRule:
    """One per-module rule for learning rate and weight decay.

    Attributes:
        pattern: a substring of the parameter name, or an ``fnmatch`` pattern on the whole
            name when it contains ``*``, ``?`` or ``[`` (e.g. ``"*.bias"``).
        lr_mult: the parameter's learning rate is ``lr_mult * base_lr`` (replaces, does not
            multiply, the multiplier of earlier matching rules).
        weight_decay: when not ``None``, replaces the weight decay of matching parameters.
    """

    pattern: str
    lr_mult: float = 1.0
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"ParamRule: pattern must be a non-empty string, got {self.pattern!r}")
        check_positive(self.lr_mult, "lr_mult", "ParamRule", allow_zero=True)
        if self.weight_decay is not None:
            check_positive(self.weight_decay, "weight_decay", "ParamRule", allow_zero=True)

    def matches(self, name: str) -> bool:
        """Whether the rule applies to the parameter called ``name``."""
        if any(c in self.pattern for c in "*?["):
            return fnmatch.fnmatchcase(name, self.pattern)
        return self.pattern in name


def irra_param_rules(lr_factor: float = 5.0, bias_lr_factor: float = 2.0) -> list[ParamRule]:
    """IRRA's per-module rules (Jiang and Ye, CVPR 2023, arXiv:2303.12501, ``solver/build.py``).

    In order: names containing ``cross`` get ``lr_factor`` x; then names containing ``bias`` get
    ``bias_lr_factor`` x and weight decay 0 (overriding the ``cross`` multiplier); then names
    containing ``classifier`` or ``mlm_head`` get ``lr_factor`` x (their biases keep weight
    decay 0). With base lr 1e-5 and weight decay 4e-5: backbone weights, LayerNorm weights and
    embeddings 1e-5 (wd 4e-5); every bias 2e-5 (wd 0) except those of ``classifier`` /
    ``mlm_head`` at 5e-5 (wd 0); ``cross*`` weights, ``classifier`` and ``mlm_head`` weights
    5e-5 (wd 4e-5).
    """
    return [
        ParamRule("cross", lr_factor),
        ParamRule("bias", bias_lr_factor, weight_decay=0.0),
        ParamRule("classifier", lr_factor),
        ParamRule("mlm_head", lr_factor),
    ]


def build_param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, rules: Sequence[ParamRule] = ()
) -> list[dict[str, Any]]:
    """Optimizer parameter groups after applying ``rules`` to ``model``'s trainable parameters.

    Groups come in order of first appearance and carry ``lr``, ``weight_decay`` and
    ``lr_mult`` (the multiplier of ``lr``; schedules scale each group's rate).
    Parameters with ``requires_grad=False`` are left out.
    """
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult, wd = 1.0, weight_decay
        for rule in rules:
            if rule.matches(name):
                mult = rule.lr_mult
                if rule.weight_decay is not None:
                    wd = rule.weight_decay
        group = groups.setdefault(
            (mult, wd), {"params": [], "lr": lr * mult, "weight_decay": wd, "lr_mult": mult}
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    *,
    name: OptimizerName = "adamw",
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    rules: Sequence[ParamRule] = (),
) -> torch.optim.Optimizer:
    """Build ``name`` ("adam" = coupled L2 decay, "adamw" = decoupled, "sgd" with momentum).

    Raises:
        ValueError: on an unknown ``name``, a non-positive ``lr`` or ``eps``, or a model
            without trainable parameters.
    """
    fn = "build_optimizer"
    check_choice(name, "name", fn, OPTIMIZERS)
    check_positive(lr, "lr", fn)
    check_positive(weight_decay, "weight_decay", fn, allow_zero=True)
    check_positive(eps, "eps", fn)
    groups = build_param_groups(model, lr=lr, weight_decay=weight_decay, rules=rules)
    if not groups:
        raise ValueError(f"{fn}: model has no parameters with requires_grad=True")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)
