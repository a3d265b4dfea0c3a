"""Loading CLIP weights from files, folders, state dicts or the Hugging Face Hub.

A local file or folder never touches the network. Weights are read with ``safetensors``,
with ``torch.load(weights_only=True)`` for legacy ``.pt`` / ``.bin`` / ``.pth`` files, or as
a TorchScript archive (OpenAI's original ``ViT-B-16.pt``), whose tensors are read as data
without running any of its code (:mod:`textreid.models.torchscript`). Every load is strict:
a missing, unexpected, mis-shaped, wrongly typed or non-finite tensor is an error listing them.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from textreid._io import MAX_CONFIG_BYTES, read_json_object, resolve_in_folder
from textreid._sources import HubRepo, hub_options, resolve_source
from textreid._untrusted import torch_load_weights_only
from textreid.config import CLIPConfig
from textreid.models.clip import CLIPDualEncoder
from textreid.models.convert import (
    clip_config_from_hf_dict,
    clip_config_from_open_clip_dict,
    config_from_state_dict,
    export_hf,
    to_openai_layout,
)
from textreid.models.pos_embed import resample_pos_embed
from textreid.models.registry import override_config
from textreid.models.torchscript import read_torchscript_state_dict

__all__ = ["load_clip", "load_state_dict_strict", "read_weights", "save_hf"]

_FN = "load_clip"
_WEIGHTS_ONLY_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, assign: bool = False
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with one readable error.

    Args:
        model: The module to fill.
        state_dict: Tensors keyed like ``model.state_dict()``.
        assign: Passed to :meth:`torch.nn.Module.load_state_dict` (use the given tensors
            instead of copying, e.g. into a module built on the ``meta`` device).

    Raises:
        ValueError: Listing every missing key, unexpected key, shape mismatch, integer or
            boolean tensor given for a floating-point one (or the reverse), and tensor holding
            NaN or infinity.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    kinds = [
        f"{k}: checkpoint {state_dict[k].dtype} vs model {expected[k].dtype}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].is_floating_point() != expected[k].is_floating_point()
        or state_dict[k].is_complex() != expected[k].is_complex()
    ]
    # One pass at load time: a NaN weight would otherwise surface as NaN features later.
    non_finite = sorted(
        k
        for k, v in state_dict.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {shapes}")
    if kinds:
        problems.append(f"dtype kind mismatches ({len(kinds)}): {kinds}")
    if non_finite:
        problems.append(f"NaN or infinite values ({len(non_finite)}): {non_finite}")
    if problems:
        raise ValueError(
            f"load_state_dict_strict: the state dict does not fit {type(model).__name__}; "
            + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True, assign=assign)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
    raise ValueError(
        f"{_FN}: {path} holds a {type(obj).__name__} that is neither a state dict nor a "
        "checkpoint with a 'state_dict' or 'model' state dict"
    )


def read_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors``, a TorchScript archive, or a torch pickle.

    Nothing in the file runs: pickles are read with ``torch.load(weights_only=True)`` (a
    checkpoint dict with a ``"state_dict"`` or ``"model"`` entry is unwrapped), and a
    TorchScript archive is read for its parameters and buffers only, without running its
    code (:func:`~textreid.models.torchscript.read_torchscript_state_dict`). Tensors land on
    the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is corrupt, truncated, holds no state dict, or needs code to
            load (a pickle with other globals, a TorchScript module restored by its own
            ``__setstate__``); the message names the safe formats.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{_FN}: weights file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as err:
            raise ValueError(
                f"{_FN}: cannot read {p} as safetensors ({err}); the file is corrupt or "
                "truncated (an interrupted download?): delete it and download it again"
            ) from err
    try:
        is_torchscript = _is_torchscript(p)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"{_FN}: cannot read {p} as a zip archive ({err}); the file is corrupt or truncated"
        ) from err
    if is_torchscript:
        return read_torchscript_state_dict(p, fn=_FN)
    return _unwrap(torch_load_weights_only(p, _FN), p)


def _hf_config(data: Mapping[str, Any]) -> CLIPConfig | None:
    return clip_config_from_hf_dict(data) if "vision_config" in data else None


def _open_clip_config(data: Mapping[str, Any]) -> CLIPConfig | None:
    return clip_config_from_open_clip_dict(data)


_LAYOUTS: tuple[
    tuple[str, Callable[[Mapping[str, Any]], CLIPConfig | None], tuple[str, ...]], ...
] = (
    ("config.json", _hf_config, ("model.safetensors", "pytorch_model.bin")),
    (
        "open_clip_config.json",
        _open_clip_config,
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    ),
)


def _resolve(
    get: Callable[[str], Path | None], where: str, remedy: str
) -> tuple[dict[str, Tensor], CLIPConfig | None]:
    """Find a config and weights through ``get`` (file name -> local path or None)."""
    looked: list[str] = []
    for config_name, parse, weight_names in _LAYOUTS:
        looked.append(config_name)
        config_path = get(config_name)
        if config_path is None:
            continue
        config = parse(read_json_object(config_path, max_bytes=MAX_CONFIG_BYTES, fn=_FN))
        if config is None:
            continue
        for name in weight_names:
            weights = get(name)
            if weights is not None:
                return read_weights(weights), config
        raise FileNotFoundError(
            f"{_FN}: {where} has {config_name} but none of its weight files "
            f"{list(weight_names)}; {remedy}"
        )
    for name in _WEIGHTS_ONLY_FILES:
        looked.append(name)
        weights = get(name)
        if weights is not None:
            return read_weights(weights), None
    raise FileNotFoundError(f"{_FN}: no CLIP weights in {where}; looked for {looked}; {remedy}")


def _from_folder(folder: Path) -> tuple[dict[str, Tensor], CLIPConfig | None]:
    def get(name: str) -> Path | None:
        return folder / name if resolve_in_folder(folder, name, _FN) is not None else None

    present = sorted(p.name for p in folder.iterdir())
    remedy = (
        f"the folder holds {present}; save the model there with model.safetensors (and "
        "config.json), or pass the weights file itself"
    )
    return _resolve(get, f"folder {folder}", remedy)


def _from_hub(repo_id: str, hub: dict[str, Any]) -> tuple[dict[str, Tensor], CLIPConfig | None]:
    repo = HubRepo(repo_id, hub, _FN)

    def get(name: str) -> Path | None:
        return repo.get(name, required=False)

    where = f"hub repo {repo_id!r} (revision {hub['revision'] or 'main'}"
    where += f", cache_dir {hub['cache_dir']})" if hub["cache_dir"] else ")"
    if hub["local_files_only"]:
        remedy = (
            "the files are not in the local cache: download them once with network access "
            "(local_files_only=False), check cache_dir, or pass a local folder"
        )
    else:
        remedy = "check the repo id and revision, your network access and token"
    return _resolve(get, where, remedy)


def _read_source(
    source: str | os.PathLike[str] | Mapping[str, Tensor], hub: dict[str, Any]
) -> tuple[dict[str, Tensor], CLIPConfig | None]:
    if isinstance(source, Mapping):
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in source.items()}, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"{_FN}: source must be a path, a hub repo id or a state dict, got "
            f"{type(source).__name__}"
        )
    resolved = resolve_source(source, _FN, files=True)
    if resolved.folder is not None:
        return _from_folder(resolved.folder)
    if resolved.file is not None:
        return read_weights(resolved.file), None
    assert resolved.repo_id is not None
    return _from_hub(resolved.repo_id, hub)


def load_clip(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    image_size: tuple[int, int] | None = None,
    stride: int | None = None,
    checkpoint_grid: tuple[int, int] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
    token: str | bool | None = None,
    **overrides: Any,
) -> CLIPDualEncoder:
    """Build a :class:`CLIPDualEncoder` holding pretrained CLIP weights.

    ``source`` may be:

    - a folder in the HF layout (``config.json`` + ``model.safetensors`` or
      ``pytorch_model.bin``) or the open_clip layout (``open_clip_config.json`` +
      ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``), or holding only
      weights (the config is then inferred);
    - a weights file: ``.safetensors``, ``.pt`` / ``.bin`` / ``.pth`` (weights-only torch
      pickle), or an OpenAI TorchScript archive;
    - a state dict (OpenAI/open_clip, IRRA ``base_model.*`` or HF layout; copied);
    - a hub repo, ``"org/name"`` or ``"hf-hub:org/name"``, fetched with
      ``huggingface_hub.hf_hub_download`` (``revision``, ``cache_dir``,
      ``local_files_only``, ``endpoint``, ``token`` are passed through; with
      ``local_files_only=True`` a cached repo loads without any network access).

    Without a config file the architecture is inferred by
    :func:`~textreid.models.convert.config_from_state_dict` (QuickGELU, ``heads =
    width // 64``, square grid unless ``checkpoint_grid``). The position embedding is then
    resampled from the checkpoint's grid to the grid of ``image_size`` / ``stride`` with the
    target config's ``pos_embed_resample_mode`` and ``pos_embed_antialias``.

    Args:
        source: See above.
        image_size: Model input ``(H, W)``; default the checkpoint's.
        stride: Patch stride (smaller than the patch size gives overlapping patches).
        checkpoint_grid: The checkpoint's patch grid when it is not square and no config file
            says so (e.g. ``(24, 8)`` for an IRRA checkpoint).
        revision, cache_dir, local_files_only, endpoint, token: Hub download options.
        **overrides: Further config overrides as in :func:`~textreid.models.create_model`,
            e.g. ``vision={"pos_embed_resample_mode": "bilinear",
            "pos_embed_antialias": False}`` (IRRA), ``act="gelu"``,
            ``vision={"heads": 4}``.

    Returns:
        The model in float32 on the CPU, in training mode like any new module.

    Raises:
        FileNotFoundError: If the source or a needed file is missing (the message names the
            file, where it was looked for, and what to do).
        ValueError: For a corrupt file, a config file over 1 MiB or with sizes above
            textreid's limits, a symbolic link out of a local folder, an unknown layout, or
            weights that do not fit.
    """
    hub = hub_options(
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        endpoint=endpoint,
        token=token,
    )
    raw, config = _read_source(source, hub)
    sd = to_openai_layout(raw)
    if config is None:
        vision_over = overrides.get("vision") or {}
        text_over = overrides.get("text") or {}
        config = config_from_state_dict(
            sd,
            grid=checkpoint_grid,
            vision_heads=vision_over.get("heads"),
            text_heads=text_over.get("heads"),
            act=overrides.get("act", "quick_gelu"),
        )
    shortcuts: dict[str, Any] = {}
    if image_size is not None:
        shortcuts["image_size"] = image_size
    if stride is not None:
        shortcuts["stride"] = stride
    target = override_config(config, **shortcuts, **overrides)
    old_grid, new_grid = config.vision.grid_size, target.vision.grid_size
    key = "visual.positional_embedding"
    if key in sd and old_grid != new_grid:
        sd[key] = resample_pos_embed(
            sd[key],
            old_grid,
            new_grid,
            mode=target.vision.pos_embed_resample_mode,
            antialias=target.vision.pos_embed_antialias,
        )
    with torch.device("meta"):
        model = CLIPDualEncoder(target)
    load_state_dict_strict(model, sd, assign=True)
    return model


def save_hf(model: CLIPDualEncoder, folder: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a HF ``CLIPModel`` folder (``config.json`` + ``model.safetensors``)
    that ``transformers.CLIPModel.from_pretrained`` and :func:`load_clip` read.

    Raises:
        ValueError: If the model cannot be expressed in HF's CLIP (non-square or strided).
    """
    from safetensors.torch import save_file

    state_dict, config = export_hf(model)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state_dict, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
