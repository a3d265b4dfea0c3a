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

from textreid._registry import Registry, import_submodules
from textreid.training.trainer import TrainerConfig

__all__ = [
    "VOCABULARIES",
    "DataSettings",
    "Recipe",
    "Vocabulary",
    "get_recipe",
    "list_recipes",
    "register_recipe",
]

Vocabulary = Literal["clip", "train_captions"]
"""Where a recipe's caption tokenizer takes its ids from (:attr:`Recipe.vocabulary`)."""
VOCABULARIES: tuple[Vocabulary, ...] = ("clip", "train_captions")
"""The values :attr:`Recipe.vocabulary` accepts."""


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
        trim_text: cut each training batch's ``text_ids`` after its longest caption
            (:func:`textreid.data.collate_trimmed`): the same loss, up to float rounding, for
            text encoders that are causal or mask padding, for less compute.
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
    trim_text: bool = False


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
        vocabulary: the caption tokenizer's ids: ``"clip"`` (CLIP's 49,408) or
            ``"train_captions"`` (CLIP's tokenizer restricted to what the training captions
            use, see :meth:`~textreid.CLIPTokenizer.restricted_to`; random-init text towers
            only, whose embedding table and MLM head it shrinks about 60-fold on SynthPEDES).
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
    vocabulary: Vocabulary = "clip"

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (``trainer=`` / ``data=`` take whole objects)."""
        return dataclasses.replace(self, **changes)


def _discover() -> None:
    # Every public module of this package registers its recipes when imported; done on
    # first use to keep ``import textreid`` light.
    import_submodules(__name__)


_RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe", arg="factory", discover=_discover)


def register_recipe(name: str, factory: Callable[[], Recipe], *, overwrite: bool = False) -> None:
    """Add a recipe under ``name`` (a zero-argument factory returning a :class:`Recipe`).

    Raises:
        ValueError: ``name`` is empty, or taken (built-in recipes included) and ``overwrite``
            is False.
        TypeError: ``name`` is not a str or ``factory`` is not callable.
    """
    _RECIPES.register(name, factory, overwrite=overwrite, fn="register_recipe")


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    return _RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones and suggests the closest),
            or a factory that returns a recipe of another name.
    """
    recipe = _RECIPES.get(name, fn="get_recipe")()
    if recipe.name != name:
        raise ValueError(f"get_recipe: factory for {name!r} returned recipe {recipe.name!r}")
    return recipe
