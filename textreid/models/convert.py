"""Pure functions between CLIP state-dict layouts and configs.

Two layouts are read:

- ``"openai"``: OpenAI CLIP / open_clip / IRRA names (``visual.conv1.weight``,
  ``transformer.resblocks.{i}.attn.in_proj_weight``...). textreid's
  :class:`~textreid.models.clip.CLIPDualEncoder` uses exactly these names.
- ``"hf"``: Hugging Face ``transformers.CLIPModel`` names (``vision_model.*``,
  ``text_model.*``), with q, k, v split and both projections stored transposed.

:func:`irra_to_textreid` maps a whole IRRA-family method (CLIP towers plus training heads)
to textreid's names; :func:`textreid.convert.convert_irra_checkpoint` builds on it.
:func:`ivt_to_textreid` does the same for IVT's single-stream encoder and
:func:`single_stream_config_from_state_dict` reads its sizes back from the tensors
(:func:`textreid.convert.load_ivt_checkpoint`).

Nothing here imports ``transformers``; the HF config is handled as a plain dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from textreid.config import CLIPConfig, TextConfig, VisionConfig

__all__ = [
    "Layout",
    "clean_state_dict",
    "clip_config_from_hf_dict",
    "clip_config_from_open_clip_dict",
    "clip_config_to_hf_dict",
    "config_from_state_dict",
    "detect_layout",
    "export_hf",
    "hf_to_openai",
    "irra_to_textreid",
    "ivt_to_textreid",
    "openai_to_hf",
    "single_stream_config_from_state_dict",
    "to_openai_layout",
]

Layout = Literal["openai", "hf"]

_TORCHSCRIPT_EXTRAS = frozenset({"input_resolution", "context_length", "vocab_size"})

_FIXED = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    # "layrnorm" is HF's own spelling of this key.
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_FIXED_INV = {v: k for k, v in _FIXED.items()}
_TRANSPOSED = {
    "visual.proj": "visual_projection.weight",
    "text_projection": "text_projection.weight",
}
_TRANSPOSED_INV = {v: k for k, v in _TRANSPOSED.items()}
_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_BLOCK_INV = {v: k for k, v in _BLOCK.items()}
_TOWERS = {"visual.transformer.": "vision_model.encoder.", "transformer.": "text_model.encoder."}
_OPENAI_BLOCK_RE = re.compile(r"^(visual\.transformer\.|transformer\.)resblocks\.(\d+)\.(.+)$")
_HF_BLOCK_RE = re.compile(r"^(vision_model\.encoder\.|text_model\.encoder\.)layers\.(\d+)\.(.+)$")

_HF_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_HF_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


def _sorted_keys(keys: Any, limit: int = 20) -> str:
    ks = sorted(keys)
    more = f" ... (+{len(ks) - limit} more)" if len(ks) > limit else ""
    return str(ks[:limit]) + more


def detect_layout(state_dict: Mapping[str, Any]) -> Layout:
    """``"openai"`` or ``"hf"``, from the patch-embedding key (any prefix is ignored).

    Raises:
        ValueError: If neither layout's patch-embedding key is present.
    """
    keys = list(state_dict)
    if any(k.endswith("visual.conv1.weight") for k in keys):
        return "openai"
    if any(k.endswith("vision_model.embeddings.patch_embedding.weight") for k in keys):
        return "hf"
    raise ValueError(
        "detect_layout: not a CLIP ViT state dict (neither 'visual.conv1.weight' nor "
        f"'vision_model.embeddings.patch_embedding.weight' found); keys: {_sorted_keys(keys)}"
    )


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Normalise a checkpoint's state dict before conversion (returns a new dict).

    - strips the ``module.`` prefix (``DistributedDataParallel``);
    - when keys start with ``base_model.`` (IRRA checkpoints), keeps only those, without the
      prefix: the CLIP towers; IRRA's heads (``classifier``, ``cross_attn``, ``mlm_head``...)
      are dropped;
    - moves open_clip ``CustomTextCLIP`` text keys (``text.*``) to the top level;
    - drops the ``input_resolution``, ``context_length`` and ``vocab_size`` entries of OpenAI
      TorchScript archives and HF's ``position_ids`` buffers;
    - casts floating tensors to float32 (OpenAI archives store fp16).

    Raises:
        TypeError: If a value is not a tensor.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise TypeError(
                f"clean_state_dict: {key!r} holds a {type(value).__name__}, not a tensor"
            )
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    if any(k.startswith("base_model.") for k in out):
        out = {k[len("base_model.") :]: v for k, v in out.items() if k.startswith("base_model.")}
    if "text.token_embedding.weight" in out:
        out = {(k[len("text.") :] if k.startswith("text.") else k): v for k, v in out.items()}
    return {
        k: (v.float() if v.is_floating_point() else v)
        for k, v in out.items()
        if k not in _TORCHSCRIPT_EXTRAS and not k.endswith("position_ids")
    }


def hf_to_openai(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HF ``CLIPModel`` state dict → OpenAI/textreid layout.

    q, k, v projections are fused into ``in_proj_weight`` / ``in_proj_bias`` in that order;
    ``visual_projection`` and ``text_projection`` are transposed; ``position_ids`` buffers are
    dropped.

    Raises:
        ValueError: On a key with no OpenAI counterpart or an incomplete q/k/v triple.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in _FIXED_INV:
            out[_FIXED_INV[key]] = value
            continue
        if key in _TRANSPOSED_INV:
            out[_TRANSPOSED_INV[key]] = value.t().contiguous()
            continue
        m = _HF_BLOCK_RE.match(key)
        if m is None:
            unknown.append(key)
            continue
        tower = "visual.transformer." if m.group(1).startswith("vision") else "transformer."
        base = f"{tower}resblocks.{m.group(2)}."
        rest = m.group(3)
        qm = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
        if qm is not None:
            qkv.setdefault((base, qm.group(2)), {})[qm.group(1)] = value
            continue
        module, _, param = rest.rpartition(".")
        if module not in _BLOCK_INV:
            unknown.append(key)
            continue
        out[f"{base}{_BLOCK_INV[module]}.{param}"] = value
    if unknown:
        raise ValueError(
            f"hf_to_openai: keys without an OpenAI counterpart: {_sorted_keys(unknown)}"
        )
    for (base, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(
                f"hf_to_openai: {base} has {param}s for {sorted(parts)} but needs q, k and v"
            )
        name = "in_proj_weight" if param == "weight" else "in_proj_bias"
        out[f"{base}attn.{name}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def openai_to_hf(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI/textreid layout → HF ``CLIPModel`` state dict (inverse of :func:`hf_to_openai`).

    Raises:
        ValueError: On a key with no HF counterpart.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key in _FIXED:
            out[_FIXED[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        m = _OPENAI_BLOCK_RE.match(key)
        if m is None:
            unknown.append(key)
            continue
        base = f"{_TOWERS[m.group(1)]}layers.{m.group(2)}."
        rest = m.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            param = "weight" if rest.endswith("weight") else "bias"
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}_proj.{param}"] = part.contiguous()
            continue
        module, _, param = rest.rpartition(".")
        if module not in _BLOCK:
            unknown.append(key)
            continue
        out[f"{base}{_BLOCK[module]}.{param}"] = value
    if unknown:
        raise ValueError(f"openai_to_hf: keys without an HF counterpart: {_sorted_keys(unknown)}")
    return out


def to_openai_layout(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """:func:`clean_state_dict`, then :func:`hf_to_openai` when the layout is HF."""
    sd = clean_state_dict(state_dict)
    return hf_to_openai(sd) if detect_layout(sd) == "hf" else sd


def _num_layers(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in state_dict if (m := pat.match(k)) is not None}
    return max(found) + 1 if found else 0


def _heads(width: int, given: int | None, what: str) -> int:
    if given is not None:
        return given
    if width % 64 != 0:
        raise ValueError(
            f"config_from_state_dict: {what} width {width} is not a multiple of 64, so the "
            f"OpenAI convention heads = width // 64 does not apply; pass {what}_heads="
        )
    return width // 64


def _mlp_ratio(state_dict: Mapping[str, Tensor], prefix: str, width: int) -> float:
    key = f"{prefix}resblocks.0.mlp.c_fc.weight"
    return state_dict[key].shape[0] / width if key in state_dict else 4.0


def _require(state_dict: Mapping[str, Tensor], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise ValueError(f"config_from_state_dict: the state dict has no {missing}")


def config_from_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    grid: tuple[int, int] | None = None,
    stride: int | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    act: Literal["quick_gelu", "gelu"] = "quick_gelu",
) -> CLIPConfig:
    """Infer a :class:`~textreid.config.CLIPConfig` from CLIP weights (either layout).

    Widths, depths, patch size, context length, vocabulary and D come from tensor shapes.
    What the shapes cannot tell is taken from the arguments:

    - the patch grid: ``grid=(n_h, n_w)``, else the square root of the number of patch
      positions (an error when that is not a square);
    - the stride (``None`` = patch size); ``image_size`` is the smallest size giving ``grid``;
    - the heads: OpenAI's convention ``width // 64`` unless ``vision_heads`` / ``text_heads``;
    - ``act``: ``"quick_gelu"`` by default, because every OpenAI CLIP checkpoint (and every
      HF ``openai/clip-*`` port and IRRA fine-tune of one) was trained with QuickGELU, and
      weights carry no trace of their activation. Pass ``act="gelu"`` for open_clip models
      trained from scratch without ``quick_gelu``.

    Raises:
        ValueError: If a needed key is missing, the grid cannot be inferred or does not match
            the position embedding, or a width is not a multiple of 64 without heads given.
    """
    sd = to_openai_layout(state_dict)
    fn = "config_from_state_dict"
    _require(sd, ("visual.conv1.weight", "visual.positional_embedding", "visual.proj"))
    _require(sd, ("token_embedding.weight", "positional_embedding", "text_projection"))
    conv = sd["visual.conv1.weight"]
    v_width, patch = conv.shape[0], conv.shape[-1]
    n_patches = sd["visual.positional_embedding"].shape[0] - 1
    if grid is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(
                f"{fn}: the position embedding holds {n_patches} patch positions, not a square "
                "grid; pass grid=(n_h, n_w)"
            )
        grid = (side, side)
    if grid[0] * grid[1] != n_patches:
        raise ValueError(f"{fn}: grid {grid} has {grid[0] * grid[1]} cells, expected {n_patches}")
    s = patch if stride is None else stride
    image_size = ((grid[0] - 1) * s + patch, (grid[1] - 1) * s + patch)
    t_width = sd["token_embedding.weight"].shape[1]
    embed_dim = sd["visual.proj"].shape[1]
    if sd["text_projection"].shape[1] != embed_dim:
        raise ValueError(
            f"{fn}: visual.proj projects to {embed_dim} but text_projection to "
            f"{sd['text_projection'].shape[1]}"
        )
    vision = VisionConfig(
        image_size=image_size,
        patch_size=patch,
        stride=stride,
        width=v_width,
        layers=_num_layers(sd, "visual.transformer."),
        heads=_heads(v_width, vision_heads, "vision"),
        mlp_ratio=_mlp_ratio(sd, "visual.transformer.", v_width),
        act=act,
    )
    text = TextConfig(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=t_width,
        layers=_num_layers(sd, "transformer."),
        heads=_heads(t_width, text_heads, "text"),
        mlp_ratio=_mlp_ratio(sd, "transformer.", t_width),
        act=act,
    )
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text)


def _hf_act(value: Any, fn: str) -> Literal["quick_gelu", "gelu"]:
    if value == "quick_gelu":
        return "quick_gelu"
    if value == "gelu":
        return "gelu"
    raise ValueError(f"{fn}: hidden_act {value!r} is not supported (quick_gelu or gelu)")


def _hf_tower(data: Mapping[str, Any] | None, defaults: dict[str, Any], fn: str) -> dict[str, Any]:
    merged = {**defaults, **(data or {})}
    if merged["layer_norm_eps"] != 1e-5:
        raise ValueError(f"{fn}: layer_norm_eps {merged['layer_norm_eps']} is not supported (1e-5)")
    return merged


def clip_config_from_hf_dict(data: Mapping[str, Any]) -> CLIPConfig:
    """A HF ``CLIPModel`` ``config.json`` (as a dict) → :class:`~textreid.config.CLIPConfig`.

    Missing entries take ``transformers``' ``CLIPConfig`` defaults, as ``transformers`` does.
    Text pooling in textreid is ``argmax(ids)``, which matches HF for configs whose
    ``eos_token_id`` is 2 (legacy) or the largest id in use.

    Raises:
        ValueError: For a non-CLIP config, an activation other than quick_gelu/gelu, a
            LayerNorm epsilon other than 1e-5, or non-RGB input.
    """
    fn = "clip_config_from_hf_dict"
    if "vision_config" not in data and "text_config" not in data:
        raise ValueError(f"{fn}: not a HF CLIPModel config (no vision_config / text_config)")
    v = _hf_tower(data.get("vision_config"), _HF_VISION_DEFAULTS, fn)
    t = _hf_tower(data.get("text_config"), _HF_TEXT_DEFAULTS, fn)
    if v["num_channels"] != 3:
        raise ValueError(f"{fn}: num_channels {v['num_channels']} is not supported (3, RGB)")
    size = v["image_size"]
    image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return CLIPConfig(
        embed_dim=int(data.get("projection_dim", 512)),
        vision=VisionConfig(
            image_size=image_size,
            patch_size=int(v["patch_size"]),
            width=int(v["hidden_size"]),
            layers=int(v["num_hidden_layers"]),
            heads=int(v["num_attention_heads"]),
            mlp_ratio=v["intermediate_size"] / v["hidden_size"],
            act=_hf_act(v["hidden_act"], fn),
        ),
        text=TextConfig(
            context_length=int(t["max_position_embeddings"]),
            vocab_size=int(t["vocab_size"]),
            width=int(t["hidden_size"]),
            layers=int(t["num_hidden_layers"]),
            heads=int(t["num_attention_heads"]),
            mlp_ratio=t["intermediate_size"] / t["hidden_size"],
            act=_hf_act(t["hidden_act"], fn),
        ),
        logit_scale_init=float(data.get("logit_scale_init_value", 2.6592)),
    )


def clip_config_to_hf_dict(config: CLIPConfig) -> dict[str, Any]:
    """:class:`~textreid.config.CLIPConfig` → a HF ``CLIPModel`` ``config.json`` dict.

    ``eos_token_id`` is written as ``vocab_size - 1`` (``bos_token_id`` one less), so HF's
    "first end-of-text position" pooling equals textreid's ``argmax(ids)``.

    Raises:
        ValueError: If the image is not square, the stride differs from the patch size, the
            vision tower has a convolutional stem or pools other than at the class token, or
            the text tower pools other than at the end-of-text token (HF ``CLIPModel``
            supports none of these).
    """
    fn = "clip_config_to_hf_dict"
    v, t = config.vision, config.text
    if v.image_size[0] != v.image_size[1] or v.effective_stride != v.patch_size:
        raise ValueError(
            f"{fn}: HF CLIP needs a square image and stride == patch_size, got image_size "
            f"{v.image_size}, patch_size {v.patch_size}, stride {v.effective_stride}"
        )
    if v.stem != "patch" or v.pool != "cls" or t.pool != "eot":
        raise ValueError(
            f"{fn}: HF CLIP needs vision stem 'patch', vision pool 'cls' and text pool 'eot', "
            f"got {v.stem!r}, {v.pool!r} and {t.pool!r}"
        )
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.logit_scale_init,
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": round(v.width * v.mlp_ratio),
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "num_channels": 3,
            "image_size": v.image_size[0],
            "patch_size": v.patch_size,
            "hidden_act": v.act,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
        },
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": round(t.width * t.mlp_ratio),
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": t.act,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": t.vocab_size - 1,
            "pad_token_id": 1,
        },
    }


_OPEN_CLIP_VISION_KEYS = frozenset(
    {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "output_tokens"}
)
_OPEN_CLIP_TEXT_KEYS = frozenset(
    {
        "context_length",
        "vocab_size",
        "width",
        "heads",
        "layers",
        "mlp_ratio",
        "output_tokens",
        "hf_tokenizer_name",
        "tokenizer_mode",
        "tokenizer_kwargs",
        "pad_id",
        "eos_id",
    }
)
# Options that change the architecture: accepted only at open_clip's default value.
_OPEN_CLIP_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None,
    "patch_dropout": 0.0,
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "final_ln_after_pool": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "timm_model_name": None,
    "hf_model_name": None,
    "embed_cls": False,
    "no_causal_mask": False,
    "proj_bias": False,
    "proj_type": "linear",
}
_OPEN_CLIP_POOL = {"vision": "tok", "text": "argmax"}


def _open_clip_check(cfg: Mapping[str, Any], allowed: frozenset[str], tower: str) -> None:
    fn = "clip_config_from_open_clip_dict"
    bad = []
    for key, value in cfg.items():
        if key in allowed:
            continue
        if key == "pool_type" and value == _OPEN_CLIP_POOL[tower]:
            continue
        if key in _OPEN_CLIP_DEFAULTS and value == _OPEN_CLIP_DEFAULTS[key]:
            continue
        bad.append(f"{key}={value!r}")
    if bad:
        raise ValueError(f"{fn}: unsupported {tower}_cfg options {bad}")


def clip_config_from_open_clip_dict(data: Mapping[str, Any]) -> CLIPConfig:
    """An open_clip model config (``open_clip_config.json``'s ``model_cfg``, or the whole
    file) → :class:`~textreid.config.CLIPConfig`.

    The activation follows open_clip's own rule: QuickGELU only when ``quick_gelu`` is true,
    exact GELU otherwise (open_clip's ``ViT-B-16`` config without ``quick_gelu`` is GELU).

    Raises:
        ValueError: For options textreid's towers do not implement (layer scale,
            attentional pooling, timm or HF towers...) or a missing section.
    """
    fn = "clip_config_from_open_clip_dict"
    cfg = data.get("model_cfg", data)
    unknown = sorted(
        set(cfg) - {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text"}
    )
    if unknown:
        raise ValueError(f"{fn}: unsupported model_cfg keys {unknown}")
    if "vision_cfg" not in cfg or "text_cfg" not in cfg or "embed_dim" not in cfg:
        raise ValueError(f"{fn}: model_cfg needs embed_dim, vision_cfg and text_cfg")
    vc: Mapping[str, Any] = cfg["vision_cfg"]
    tc: Mapping[str, Any] = cfg["text_cfg"]
    _open_clip_check(vc, _OPEN_CLIP_VISION_KEYS, "vision")
    _open_clip_check(tc, _OPEN_CLIP_TEXT_KEYS, "text")
    act: Literal["quick_gelu", "gelu"] = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    size = vc.get("image_size", 224)
    image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    patch = vc.get("patch_size", 16)
    if not isinstance(patch, int):
        raise ValueError(f"{fn}: only square patches are supported, got patch_size {patch}")
    v_width = int(vc.get("width", 768))
    return CLIPConfig(
        embed_dim=int(cfg["embed_dim"]),
        vision=VisionConfig(
            image_size=image_size,
            patch_size=patch,
            width=v_width,
            layers=int(vc.get("layers", 12)),
            heads=v_width // int(vc.get("head_width", 64)),
            mlp_ratio=float(vc.get("mlp_ratio", 4.0)),
            act=act,
        ),
        text=TextConfig(
            context_length=int(tc.get("context_length", 77)),
            vocab_size=int(tc.get("vocab_size", 49408)),
            width=int(tc.get("width", 512)),
            layers=int(tc.get("layers", 12)),
            heads=int(tc.get("heads", 8)),
            mlp_ratio=float(tc.get("mlp_ratio", 4.0)),
            act=act,
        ),
    )


def export_hf(model: torch.nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A :class:`~textreid.models.clip.CLIPDualEncoder` as a HF ``CLIPModel`` state dict and
    ``config.json`` dict (load them with ``CLIPModel(CLIPConfig(**cfg))`` /
    ``load_state_dict``, or save both with :func:`textreid.models.save_hf`).

    Raises:
        TypeError: If ``model`` has no CLIP ``config``.
        ValueError: If the model cannot be expressed in HF's CLIP (non-square or strided).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, CLIPConfig):
        raise TypeError("export_hf: model must be a CLIPDualEncoder (with a CLIPConfig .config)")
    hf_config = clip_config_to_hf_dict(config)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return openai_to_hf(sd), hf_config


def irra_to_textreid(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an IRRA-layout state dict (also FMFA, RDE) to the names of
    :class:`~textreid.methods.IRRAMethod`.

    ``base_model.*`` (OpenAI CLIP names) -> ``encoder.*``; ``classifier.*`` ->
    ``id_loss.classifier.*``; ``cross_attn.*``, ``cross_modal_transformer.*``, ``ln_pre_t``,
    ``ln_pre_i``, ``ln_post`` -> ``irr.*``; ``mlm_head.*`` stays. A DataParallel ``module.``
    prefix is stripped; CLIP bookkeeping entries (``input_resolution``, ``context_length``,
    ``vocab_size``) are dropped; fp16 tensors become float32.

    Raises:
        ValueError: a key of no known IRRA module (listed).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    irr_prefixes = ("cross_attn.", "cross_modal_transformer.", "ln_pre_t.", "ln_pre_i.", "ln_post.")
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        tensor = value.float() if value.is_floating_point() else value
        if k.startswith("base_model."):
            name = k[len("base_model.") :]
            if name in _TORCHSCRIPT_EXTRAS:
                continue
            out["encoder." + name] = tensor
        elif k.startswith("classifier."):
            out["id_loss." + k] = tensor
        elif k.startswith(irr_prefixes):
            out["irr." + k] = tensor
        elif k.startswith("mlm_head."):
            out[k] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"irra_to_textreid: {len(unknown)} keys belong to no IRRA module: {sorted(unknown)[:10]}"
        )
    return out


# IVT's fine-tuned model (``build_transformer_uvt_img_txt_mask`` of the released code) keeps its
# single-stream encoder under ``encoder_vl.``; the source -> target tables below are the ones
# documented in ivt_to_textreid and docs/migrating-from-irra.md.
_IVT_PREFIX = "encoder_vl."
_IVT_FIXED = {
    "patch_embed.proj.weight": "patch_embed.weight",
    "patch_embed.proj.bias": "patch_embed.bias",
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "type_embed": "type_embed",
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.LayerNorm.weight": "ln_text.weight",
    "embeddings.LayerNorm.bias": "ln_text.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_IVT_TOKEN_TYPE = "embeddings.token_type_embeddings.weight"
_IVT_BLOCK = {
    "norm1.weight": "ln_1.weight",
    "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.weight": "attn.out_proj.weight",
    "attn.proj.bias": "attn.out_proj.bias",
    "norm2.weight": "ln_2.weight",
    "norm2.bias": "ln_2.bias",
    "mlp_vis.fc1.weight": "mlp_vis.c_fc.weight",
    "mlp_vis.fc1.bias": "mlp_vis.c_fc.bias",
    "mlp_vis.fc2.weight": "mlp_vis.c_proj.weight",
    "mlp_vis.fc2.bias": "mlp_vis.c_proj.bias",
    "mlp_txt.fc1.weight": "mlp_txt.c_fc.weight",
    "mlp_txt.fc1.bias": "mlp_txt.c_fc.bias",
    "mlp_txt.fc2.weight": "mlp_txt.c_proj.weight",
    "mlp_txt.fc2.bias": "mlp_txt.c_proj.bias",
}
_IVT_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
# Entries no retrieval embedding depends on: BERT's position-id buffer, the fine-tuning
# leftovers (temperature, ID classifier and BN neck, unused at test time) and the pre-training
# heads (fusion BERT for ITM / MLM, ITM classifier) of IVT's own pre-training checkpoint.
_IVT_DROPPED = (_IVT_PREFIX + "embeddings.position_ids", "temp")
_IVT_DROPPED_PREFIXES = ("classifier_img.", "bottleneck_img.", "encoder_fusion.", "itm.")


def ivt_to_textreid(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a state dict of IVT's released code (Shu et al., ECCV 2022 Workshops, arXiv
    2208.08608; TencentYoutuResearch/PersonRetrieval-IVT) to the names of
    :class:`~textreid.methods.IVTMethod` (its :class:`~textreid.models.SingleStreamEncoder`
    under ``encoder.``).

    A DistributedDataParallel ``module.`` prefix is stripped and floating tensors become
    float32. Source keys (under ``encoder_vl.``) and their targets (under ``encoder.``):

    | IVT | textreid |
    | --- | --- |
    | ``patch_embed.proj.{weight,bias}`` | ``patch_embed.{weight,bias}`` |
    | ``cls_token``, ``pos_embed``, ``type_embed`` | same names |
    | ``embeddings.word_embeddings.weight`` | ``word_embeddings.weight`` |
    | ``embeddings.position_embeddings.weight`` + ``embeddings.token_type_embeddings.weight[0]`` | ``position_embeddings.weight`` |
    | ``embeddings.LayerNorm.{weight,bias}`` | ``ln_text.{weight,bias}`` |
    | ``blocks.{i}.norm1``, ``blocks.{i}.norm2`` | ``blocks.{i}.ln_1``, ``blocks.{i}.ln_2`` |
    | ``blocks.{i}.attn.qkv.{weight,bias}`` | ``blocks.{i}.attn.in_proj_{weight,bias}`` |
    | ``blocks.{i}.attn.proj`` | ``blocks.{i}.attn.out_proj`` |
    | ``blocks.{i}.mlp_{vis,txt}.fc1``, ``fc2`` | ``blocks.{i}.mlp_{vis,txt}.c_fc``, ``c_proj`` |
    | ``norm.{weight,bias}`` | ``norm.{weight,bias}`` |

    IVT's text embedding always uses token type 0 (its model passes no token-type ids), so
    that row is folded into the position table, which textreid's encoder has no token types
    for. The type-1 row is unused and dropped, like the entries no embedding depends on:
    ``encoder_vl.embeddings.position_ids``, ``temp``, ``classifier_img.*`` and
    ``bottleneck_img.*`` (fine-tuning leftovers), ``encoder_fusion.*`` and ``itm.*`` (the
    pre-training checkpoint's fusion and matching heads).

    Args:
        state_dict: ``checkpoint["state_dict"]`` of a released IVT checkpoint.

    Returns:
        A new dict keyed like ``IVTMethod.state_dict()``.

    Raises:
        ValueError: Listing the keys of no IVT module and the encoder keys that are missing
            (a block without all of its tensors included), or a token-type table that does
            not fit the position table.
    """
    fn = "ivt_to_textreid"
    src: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        k = key
        while k.startswith("module."):
            k = k[len("module.") :]
        if k in _IVT_DROPPED or k.startswith(_IVT_DROPPED_PREFIXES):
            continue
        if not k.startswith(_IVT_PREFIX):
            unknown.append(key)
            continue
        src[k[len(_IVT_PREFIX) :]] = value.float() if value.is_floating_point() else value
    out: dict[str, Tensor] = {}
    blocks: set[str] = set()
    for name, value in src.items():
        if name in _IVT_FIXED:
            out["encoder." + _IVT_FIXED[name]] = value
            continue
        m = _IVT_BLOCK_RE.match(name)
        if m is not None and m.group(2) in _IVT_BLOCK:
            blocks.add(m.group(1))
            out[f"encoder.blocks.{m.group(1)}.{_IVT_BLOCK[m.group(2)]}"] = value
        elif name != _IVT_TOKEN_TYPE:
            unknown.append(_IVT_PREFIX + name)
    missing = [_IVT_PREFIX + k for k in (*_IVT_FIXED, _IVT_TOKEN_TYPE) if k not in src]
    missing += [
        f"{_IVT_PREFIX}blocks.{i}.{k}"
        for i in sorted(blocks, key=int)
        for k in _IVT_BLOCK
        if f"blocks.{i}.{k}" not in src
    ]
    if unknown or missing:
        raise ValueError(
            f"{fn}: not an IVT state dict; keys of no IVT module: {_sorted_keys(unknown)}; "
            f"missing keys: {_sorted_keys(missing)}"
        )
    pos, types = out["encoder.position_embeddings.weight"], src[_IVT_TOKEN_TYPE]
    if types.ndim != 2 or pos.ndim != 2 or types.shape[1] != pos.shape[1]:
        raise ValueError(
            f"{fn}: {_IVT_PREFIX}{_IVT_TOKEN_TYPE} {tuple(types.shape)} does not fit "
            f"{_IVT_PREFIX}embeddings.position_embeddings.weight {tuple(pos.shape)}"
        )
    out["encoder.position_embeddings.weight"] = pos + types[0]
    return out


def single_stream_config_from_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    image_size: tuple[int, int] = (384, 128),
    stride: int | None = None,
    heads: int | None = None,
) -> dict[str, Any]:
    """The :class:`~textreid.models.SingleStreamEncoder` arguments that fit its weights.

    Width, depth, patch size, vocabulary, text positions and the feed-forward ratio come from
    tensor shapes (the ``encoder.`` prefix of :class:`~textreid.methods.IVTMethod` names is
    accepted). What the shapes cannot tell is taken from the arguments:

    - ``image_size``: the ``(H, W)`` the weights were trained at (IVT: 384x128);
    - ``stride``: the patch stride; by default the one stride at most the patch size whose
      grid over ``image_size`` has as many cells as the position embedding (IVT: 12 on
      CUHK-PEDES and ICFG-PEDES, 16 on RSTPReid);
    - ``heads``: by default ``width // 64`` (IVT: 12 for width 768).

    ``drop_ratio`` is IVT's 0.2 (token dropping acts in training only).

    Returns:
        Keyword arguments for ``SingleStreamEncoder(**kwargs)`` (also the config of the
        ``ivt-single-stream`` retrieval model).

    Raises:
        ValueError: If a needed key is missing, no stride (or several) fits, the given stride
            does not fit, or the heads cannot be inferred or do not divide the width.
    """
    fn = "single_stream_config_from_state_dict"
    sd = {k[len("encoder.") :]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    sd = sd or dict(state_dict)
    needed = (
        "patch_embed.weight",
        "pos_embed",
        "word_embeddings.weight",
        "position_embeddings.weight",
        "blocks.0.mlp_vis.c_fc.weight",
    )
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"{fn}: the state dict has no {missing}")
    conv = sd["patch_embed.weight"]
    if conv.ndim != 4 or conv.shape[-1] != conv.shape[-2]:
        raise ValueError(f"{fn}: patch_embed.weight {tuple(conv.shape)} is no square kernel")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    cells = int(sd["pos_embed"].shape[1]) - 1
    h, w = int(image_size[0]), int(image_size[1])

    def grid(s: int) -> int:
        return ((h - patch) // s + 1) * ((w - patch) // s + 1) if min(h, w) >= patch else 0

    if stride is None:
        fits = [s for s in range(1, patch + 1) if grid(s) == cells]
        if len(fits) != 1:
            found = "no stride" if not fits else f"strides {fits}"
            raise ValueError(
                f"{fn}: {found} up to the patch size {patch} give(s) {cells} patches at "
                f"image_size {(h, w)}; pass the image_size the weights were trained at, or stride="
            )
        stride = fits[0]
    elif grid(stride) != cells:
        raise ValueError(
            f"{fn}: stride {stride} gives {grid(stride)} patches at image_size {(h, w)}, but "
            f"pos_embed holds {cells}"
        )
    if heads is None:
        if width % 64 != 0:
            raise ValueError(
                f"{fn}: width {width} is not a multiple of 64, so heads = width // 64 does not "
                "apply; pass heads="
            )
        heads = width // 64
    if heads < 1 or width % heads != 0:
        raise ValueError(f"{fn}: heads {heads} does not divide the width {width}")
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    return {
        "image_size": (h, w),
        "patch_size": patch,
        "stride": stride,
        "vocab_size": int(sd["word_embeddings.weight"].shape[0]),
        "max_text_len": int(sd["position_embeddings.weight"].shape[0]),
        "width": width,
        "depth": depth,
        "heads": heads,
        "mlp_ratio": sd["blocks.0.mlp_vis.c_fc.weight"].shape[0] / width,
        "drop_ratio": 0.2,
    }
