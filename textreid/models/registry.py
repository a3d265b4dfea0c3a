"""Named model configurations and the factory that builds them.

Overrides use one scheme everywhere (:func:`create_model`, :func:`get_model_config`,
:func:`override_config` and ``load_clip``):

- shortcuts for what is changed most: ``image_size=(H, W)`` and ``stride=`` (vision),
  ``context_length=`` (text), ``act=`` (both towers);
- top-level :class:`~textreid.config.CLIPConfig` fields: ``embed_dim=``,
  ``logit_scale_init=``;
- any other tower field through a dict: ``vision={"layers": 6}``, ``text={"heads": 4}``.

A shortcut and the same key inside its tower dict must not both be given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from textreid._registry import Registry
from textreid.config import CLIPConfig, TextConfig, VisionConfig
from textreid.models.clip import CLIPDualEncoder

__all__ = [
    "create_model",
    "get_model_config",
    "list_models",
    "override_config",
    "register_model",
]

_MODELS: Registry[Callable[[], CLIPConfig]] = Registry("model", arg="config_factory")

_VISION_SHORTCUTS = ("image_size", "stride")
_TEXT_SHORTCUTS = ("context_length",)
_TOP_FIELDS = ("embed_dim", "logit_scale_init")


def register_model(
    name: str, config_factory: Callable[[], CLIPConfig], *, overwrite: bool = False
) -> None:
    """Register ``config_factory`` (a zero-argument callable returning a ``CLIPConfig``)
    under ``name``.

    Raises:
        ValueError: If ``name`` is empty or already registered and ``overwrite`` is False.
        TypeError: If ``name`` is not a str or ``config_factory`` is not callable.
    """
    _MODELS.register(name, config_factory, overwrite=overwrite, fn="register_model")


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return _MODELS.names()


def _tower(config: Any, updates: Mapping[str, Any], fn: str, what: str) -> Any:
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(updates) - names)
    if unknown:
        raise ValueError(f"{fn}: unknown {what} fields {unknown}; allowed: {sorted(names)}")
    return dataclasses.replace(config, **updates)


def override_config(config: CLIPConfig, **overrides: Any) -> CLIPConfig:
    """Return ``config`` with ``overrides`` applied (scheme in the module docstring).

    Example:
        ``override_config(cfg, image_size=(384, 128), stride=12, vision={"layers": 6})``

    Raises:
        ValueError: For an unknown key, a key given twice, or an invalid resulting config.
    """
    fn = "override_config"
    vision: dict[str, Any] = dict(overrides.pop("vision", None) or {})
    text: dict[str, Any] = dict(overrides.pop("text", None) or {})
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _VISION_SHORTCUTS:
            targets = [vision]
        elif key in _TEXT_SHORTCUTS:
            targets = [text]
        elif key == "act":
            targets = [vision, text]
        elif key in _TOP_FIELDS:
            top[key] = value
            continue
        else:
            allowed = sorted(
                [*_VISION_SHORTCUTS, *_TEXT_SHORTCUTS, *_TOP_FIELDS, "act", "vision", "text"]
            )
            raise ValueError(f"{fn}: unknown override {key!r}; allowed: {allowed}")
        for target in targets:
            if key in target:
                raise ValueError(f"{fn}: {key!r} given both as a shortcut and in a tower dict")
            target[key] = value
    new_vision: VisionConfig = _tower(config.vision, vision, fn, "vision")
    new_text: TextConfig = _tower(config.text, text, fn, "text")
    return dataclasses.replace(config, vision=new_vision, text=new_text, **top)


def get_model_config(name: str, **overrides: Any) -> CLIPConfig:
    """The registered config ``name`` with ``overrides`` applied.

    Raises:
        ValueError: If ``name`` is not registered (the message lists the names and suggests
            the closest) or an override is invalid.
    """
    return _lookup(name, "get_model_config", overrides)


def _lookup(name: str, fn: str, overrides: dict[str, Any]) -> CLIPConfig:
    return override_config(_MODELS.get(name, fn=fn)(), **overrides)


def create_model(
    name: str, *, device: torch.device | str | None = None, **overrides: Any
) -> CLIPDualEncoder:
    """Build a randomly initialised :class:`CLIPDualEncoder` from a registered config.

    Args:
        name: A name from :func:`list_models`, e.g. ``"ViT-B/16"`` or ``"tiny"``.
        device: Where to allocate; ``"meta"`` builds the module without memory (useful to
            count parameters).
        **overrides: See the module docstring, e.g. ``image_size=(384, 128), stride=12``.

    Raises:
        ValueError: If ``name`` is unknown or an override is invalid.
    """
    config = _lookup(name, "create_model", overrides)
    with torch.device(device if device is not None else "cpu"):
        return CLIPDualEncoder(config)


def _openai_vit(patch: int, width: int, layers: int, embed_dim: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(
            image_size=(224, 224),
            patch_size=patch,
            width=width,
            layers=layers,
            heads=width // 64,
            act="quick_gelu",
        ),
        text=TextConfig(
            context_length=77,
            vocab_size=49408,
            width=text_width,
            layers=12,
            heads=text_width // 64,
            act="quick_gelu",
        ),
    )


def _tiny() -> CLIPConfig:
    return CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(
            image_size=(64, 32), patch_size=16, width=64, layers=2, heads=4, act="quick_gelu"
        ),
        text=TextConfig(
            context_length=77, vocab_size=49408, width=64, layers=2, heads=4, act="quick_gelu"
        ),
    )


register_model("ViT-B/16", lambda: _openai_vit(16, 768, 12, 512, 512))
register_model("ViT-B/32", lambda: _openai_vit(32, 768, 12, 512, 512))
register_model("ViT-L/14", lambda: _openai_vit(14, 1024, 24, 768, 768))
register_model("tiny", _tiny)
