"""Recipes: the published methods' settings as plain, readable data (no new math).

A :class:`Recipe` names a method, a model, the data pipeline and the trainer settings, each
with the value the paper (or its released code) used and a citation. ``tiny-*`` variants
keep the objective and shrink the model and schedule so they train on a CPU in minutes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from textreid.training.trainer import TrainerConfig

__all__ = ["DataSettings", "Recipe", "get_recipe", "list_recipes", "register_recipe"]


@dataclass(frozen=True)
class DataSettings:
    """How a recipe feeds data to its method.

    Attributes:
        image_size: model input ``(H, W)`` (TIPR: 384x128).
        batch_size: training batch size.
        sampler: ``"random"`` (IRRA) or ``"identity"`` (P x K, IVT).
        num_instances: K of the identity sampler.
        img_aug: IRRA's pad / crop / erasing augmentation.
        erase_value: see :func:`textreid.data.build_transforms`.
        interpolation: resize filter.
        eval_batch_size: batch size of feature extraction at evaluation.
        num_workers: DataLoader workers.
    """

    image_size: tuple[int, int] = (384, 128)
    batch_size: int = 64
    sampler: Literal["random", "identity"] = "random"
    num_instances: int = 4
    img_aug: bool = True
    erase_value: Literal["mean", "irra", "random"] = "mean"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass(frozen=True)
class Recipe:
    """A method's complete training setting.

    Attributes:
        name: registry name (``"irra"``, ``"tiny-irra"``...).
        method: method builder name in :data:`textreid.pipeline.METHODS`.
        model: registered model config (see :func:`textreid.models.list_models`).
        model_overrides: keyword overrides for :func:`textreid.models.create_model`.
        pretrained: CLIP weights to start from (hub name, folder or file; ``None`` = random
            init). Loaded with :func:`textreid.models.load_clip`.
        method_kwargs: keyword arguments of the method's constructor.
        mask_token: caption tokenizer mask token (``"<|mask|>"`` for MLM-based methods).
        context_length: caption length in tokens (the model's text context).
        data: the data pipeline.
        trainer: the optimizer / schedule / precision settings.
        citation: the paper, as the recipe's docs print it.
        notes: what differs from the paper's released code and why.
    """

    name: str
    method: str
    model: str
    trainer: TrainerConfig
    data: DataSettings = DataSettings()
    model_overrides: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    mask_token: str | None = None
    context_length: int = 77
    citation: str = ""
    notes: str = ""

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (``trainer=`` / ``data=`` take whole objects)."""
        return dataclasses.replace(self, **changes)


_RECIPES: dict[str, Callable[[], Recipe]] = {}


def register_recipe(name: str, factory: Callable[[], Recipe]) -> None:
    """Add a recipe under ``name`` (a zero-argument factory returning a :class:`Recipe`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_recipe: name must be a non-empty str, got {name!r}")
    if name in _RECIPES:
        raise ValueError(f"register_recipe: a recipe named {name!r} already exists")
    _RECIPES[name] = factory


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    _load_builtin()
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    _load_builtin()
    if name not in _RECIPES:
        raise ValueError(f"get_recipe: unknown recipe {name!r}; available: {sorted(_RECIPES)}")
    recipe = _RECIPES[name]()
    if recipe.name != name:
        raise ValueError(f"get_recipe: factory for {name!r} returned recipe {recipe.name!r}")
    return recipe


def _load_builtin() -> None:
    # Importing the modules registers their recipes; done lazily to keep import light.
    from textreid.recipes import cmr, fmfa, irra, ivt, uca  # noqa: F401
