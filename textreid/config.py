"""Plain dataclass configs for the encoders and the image preprocessing.

Every config validates itself on construction, round-trips through a JSON-serialisable dict
(:meth:`to_dict` / :meth:`from_dict`) and refuses unknown keys, so a typo in a saved
``config.json`` is an error instead of a silently ignored setting. The MLP activation
(``act``) has no default: OpenAI CLIP uses QuickGELU, most other ViTs exact GELU, and
guessing wrong changes every output without raising.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from textreid._checks import check_choice, check_int, check_positive

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "CLIPConfig",
    "PreprocessConfig",
    "TextConfig",
    "VisionConfig",
]

OPENAI_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean OpenAI CLIP was trained with (images scaled to [0, 1])."""
OPENAI_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation OpenAI CLIP was trained with."""

# Sane maxima for every size a config (and so a config.json file) can ask for: far above
# any published CLIP (ViT-bigG/14: width 1664, 48 layers, 16 heads, mlp_ratio 4.92), far
# below what would ask for terabytes before a single weight has been read.
_MAX_WIDTH = 8192
_MAX_LAYERS = 256
_MAX_HEADS = 256
_MAX_MLP_RATIO = 16.0
_MAX_IMAGE_SIDE = 4096
_MAX_PATCHES = 262_144  # a 4096 x 4096 image in patches of 8
_MAX_CONTEXT_LENGTH = 4096
_MAX_VOCAB_SIZE = 1_000_000

_ACTS = ("quick_gelu", "gelu")
_STEMS = ("patch", "conv")
_TEXT_POOLS = ("eot", "mean", "max")
_IMAGE_POOLS = ("cls", "max")
_RESAMPLE_MODES = ("bicubic", "bilinear")
_INTERPOLATIONS = ("bilinear", "bicubic")
_RESIZE_MODES = ("squash",)

_C = TypeVar("_C")


def _check_size(value: object, name: str, fn: str, *, min_value: int, limit: int) -> int:
    """An int in ``[min_value, limit]``; ``limit`` is one of the sane maxima above."""
    size = check_int(value, name, fn, min_value=min_value)
    if size > limit:
        raise ValueError(f"{fn}: {name} must be <= {limit} (textreid's limit), got {size}")
    return size


def _check_mlp_ratio(value: float, fn: str) -> None:
    check_positive(value, "mlp_ratio", fn)
    if not value <= _MAX_MLP_RATIO:
        raise ValueError(
            f"{fn}: mlp_ratio must be finite and <= {_MAX_MLP_RATIO} (textreid's limit), "
            f"got {value}"
        )


def _check_pair(value: object, name: str, fn: str) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{fn}: {name} must be a (height, width) pair, got {value!r}")
    return (
        _check_size(value[0], name, fn, min_value=1, limit=_MAX_IMAGE_SIDE),
        _check_size(value[1], name, fn, min_value=1, limit=_MAX_IMAGE_SIDE),
    )


def _check_triple(value: object, name: str, fn: str) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{fn}: {name} must have 3 entries (R, G, B), got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    return (out[0], out[1], out[2])


def _from_dict(cls: type[_C], data: Mapping[str, Any], fn: str) -> _C:
    """Strict constructor: unknown keys and missing required keys are errors."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{fn}: expected a mapping, got {type(data).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{fn}: unknown keys {unknown}; allowed keys are {sorted(names)}")
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{fn}: missing required keys {missing}")
    return cls(**data)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class VisionConfig:
    """Vision tower (ViT) hyper-parameters.

    Args:
        image_size: Input ``(H, W)`` in pixels; non-square sizes are first-class (person
            images are usually 384x128).
        patch_size: Side of the square patches (the ``conv1`` kernel).
        width: Transformer width.
        layers: Number of residual blocks.
        heads: Attention heads (``width`` must be divisible by ``heads``).
        act: MLP activation, ``"quick_gelu"`` (OpenAI CLIP) or ``"gelu"``. Required.
        stride: Patch stride; ``None`` means ``patch_size``. A smaller stride gives
            overlapping patches (IRRA's ``stride_size``).
        mlp_ratio: MLP hidden width over ``width``.
        pos_embed_resample_mode: Interpolation used when position embeddings are resampled
            to another grid at load time, ``"bicubic"`` or ``"bilinear"`` (IRRA).
        pos_embed_antialias: Antialias when resampling (IRRA uses ``False``).
        stem: How the image becomes patch tokens. ``"patch"`` (CLIP's): one convolution of
            kernel ``patch_size``. ``"conv"``: a convolutional stem (Xiao et al., "Early
            Convolutions Help Transformers See Better", NeurIPS 2021, arXiv:2106.14881):
            3x3 stride-2 convolutions with BatchNorm and ReLU for each factor 2 of
            ``patch_size``, then one convolution of kernel and stride the remaining factor,
            giving the same grid. For towers trained from scratch on little data (the tiny
            recipes), where it learns colours and shapes far sooner; pretrained CLIP weights
            need ``"patch"``. Needs ``stride`` unset and image sides divisible by
            ``patch_size``.
        pool: How the image becomes one feature. ``"cls"`` (CLIP's): the projected class
            token. ``"max"``: the per-channel maximum of all projected tokens, class token and
            patches, so a small region that matches a channel (a shoe, a bag) sets it without
            having to pass through the class token. Trained from random weights on the demo's
            SynthPEDES together with max-pooled text (``tiny-irra``) it raised the mean test
            R@1 / mAP over 3 seeds from 30.8 / 37.6 to 33.9 / 40.7. Pretrained CLIP weights
            expect ``"cls"``.

    Raises:
        ValueError: For non-positive sizes, a patch larger than the image, a width not
            divisible by ``heads``, an unknown ``act`` / resample mode, or a size above
            textreid's limits: ``width`` 8192, ``layers`` 256, ``heads`` 256, image sides,
            ``patch_size`` and ``stride`` 4096, 262,144 patches, ``mlp_ratio`` 16 (finite).
        TypeError: For a size that is not an ``int``.
    """

    image_size: tuple[int, int]
    patch_size: int
    width: int
    layers: int
    heads: int
    act: Literal["quick_gelu", "gelu"]
    stride: int | None = None
    mlp_ratio: float = 4.0
    pos_embed_resample_mode: Literal["bicubic", "bilinear"] = "bicubic"
    pos_embed_antialias: bool = True
    stem: Literal["patch", "conv"] = "patch"
    pool: Literal["cls", "max"] = "cls"

    def __post_init__(self) -> None:
        fn = "VisionConfig"
        object.__setattr__(self, "image_size", _check_pair(self.image_size, "image_size", fn))
        _check_size(self.patch_size, "patch_size", fn, min_value=1, limit=_MAX_IMAGE_SIDE)
        _check_size(self.width, "width", fn, min_value=1, limit=_MAX_WIDTH)
        _check_size(self.layers, "layers", fn, min_value=0, limit=_MAX_LAYERS)
        _check_size(self.heads, "heads", fn, min_value=1, limit=_MAX_HEADS)
        if self.stride is not None:
            _check_size(self.stride, "stride", fn, min_value=1, limit=_MAX_IMAGE_SIDE)
        _check_mlp_ratio(self.mlp_ratio, fn)
        check_choice(self.act, "act", fn, _ACTS)
        check_choice(self.pos_embed_resample_mode, "pos_embed_resample_mode", fn, _RESAMPLE_MODES)
        if not isinstance(self.pos_embed_antialias, bool):
            raise TypeError(
                f"{fn}: pos_embed_antialias must be a bool, "
                f"got {type(self.pos_embed_antialias).__name__}"
            )
        if self.width % self.heads != 0:
            raise ValueError(f"{fn}: width {self.width} is not divisible by heads {self.heads}")
        h, w = self.image_size
        if self.patch_size > min(h, w):
            raise ValueError(
                f"{fn}: patch_size {self.patch_size} is larger than image_size {self.image_size}"
            )
        check_choice(self.stem, "stem", fn, _STEMS)
        check_choice(self.pool, "pool", fn, _IMAGE_POOLS)
        if self.stem == "conv" and (
            self.effective_stride != self.patch_size or h % self.patch_size or w % self.patch_size
        ):
            raise ValueError(
                f"{fn}: stem='conv' needs stride unset (got {self.stride}) and image sides "
                f"divisible by patch_size {self.patch_size} (got image_size {self.image_size})"
            )
        n_h, n_w = self.grid_size
        if n_h * n_w > _MAX_PATCHES:
            raise ValueError(
                f"{fn}: image_size {self.image_size} with patch_size {self.patch_size} and "
                f"stride {self.effective_stride} gives {n_h} x {n_w} patches; at most "
                f"{_MAX_PATCHES} are allowed (textreid's limit)"
            )

    @property
    def effective_stride(self) -> int:
        """The stride actually used: ``stride`` or, when ``None``, ``patch_size``."""
        return self.patch_size if self.stride is None else self.stride

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(n_h, n_w)`` with ``n = (size - patch) // stride + 1``."""
        s, p = self.effective_stride, self.patch_size
        h, w = self.image_size
        return ((h - p) // s + 1, (w - p) // s + 1)

    @property
    def num_tokens(self) -> int:
        """P: the class token plus ``n_h * n_w`` patch tokens."""
        n_h, n_w = self.grid_size
        return 1 + n_h * n_w

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {k: _to_jsonable(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VisionConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        return _from_dict(cls, data, "VisionConfig.from_dict")


@dataclass(frozen=True)
class TextConfig:
    """Text tower (causal transformer) hyper-parameters.

    Args:
        context_length: Maximum number of tokens L (rows of the position embedding).
        vocab_size: Token embedding rows; text pooling takes the position of the largest id,
            so the end-of-text token must be the largest id in use.
        width: Transformer width.
        layers: Number of residual blocks.
        heads: Attention heads.
        act: MLP activation, ``"quick_gelu"`` or ``"gelu"``. Required.
        mlp_ratio: MLP hidden width over ``width``.
        pool: How the caption becomes one feature. ``"eot"`` (CLIP's): the projected token at
            the end-of-text position. ``"mean"`` / ``"max"``: the mean / the per-channel
            maximum of the projected tokens from the start token to the end-of-text token
            (padding after it is left out, so a trimmed batch pools the same tokens). Each
            output token of the causal tower has read only the words before it; pooling all
            of them keeps every word's own evidence instead of relying on one position to
            gather it all. Trained from random weights on the demo's SynthPEDES
            (``tiny-irra``, 3 seeds) the mean test R@1 / mAP was 26.7 / 33.5 with ``"eot"``,
            29.0 / 35.9 with ``"mean"`` and 30.8 / 37.6 with ``"max"``. OpenAI and HF CLIP
            weights expect ``"eot"``.

    Raises:
        ValueError: For non-positive sizes, a width not divisible by ``heads``, an unknown
            ``act`` or ``pool``, or a size above textreid's limits: ``context_length`` 4096,
            ``vocab_size`` 1,000,000, ``width`` 8192, ``layers`` 256, ``heads`` 256,
            ``mlp_ratio`` 16 (finite).
        TypeError: For a size that is not an ``int``.
    """

    context_length: int
    vocab_size: int
    width: int
    layers: int
    heads: int
    act: Literal["quick_gelu", "gelu"]
    mlp_ratio: float = 4.0
    pool: Literal["eot", "mean", "max"] = "eot"

    def __post_init__(self) -> None:
        fn = "TextConfig"
        _check_size(
            self.context_length, "context_length", fn, min_value=1, limit=_MAX_CONTEXT_LENGTH
        )
        _check_size(self.vocab_size, "vocab_size", fn, min_value=1, limit=_MAX_VOCAB_SIZE)
        _check_size(self.width, "width", fn, min_value=1, limit=_MAX_WIDTH)
        _check_size(self.layers, "layers", fn, min_value=0, limit=_MAX_LAYERS)
        _check_size(self.heads, "heads", fn, min_value=1, limit=_MAX_HEADS)
        _check_mlp_ratio(self.mlp_ratio, fn)
        check_choice(self.act, "act", fn, _ACTS)
        check_choice(self.pool, "pool", fn, _TEXT_POOLS)
        if self.width % self.heads != 0:
            raise ValueError(f"{fn}: width {self.width} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        return _from_dict(cls, data, "TextConfig.from_dict")


@dataclass(frozen=True)
class CLIPConfig:
    """A CLIP dual encoder: both towers and the shared embedding width D.

    Args:
        embed_dim: D, the width of both projections.
        vision: The vision tower.
        text: The text tower.
        logit_scale_init: Initial value of the learnable log inverse temperature,
            ``log(1 / 0.07)`` as in CLIP.

    Raises:
        ValueError: ``embed_dim`` outside ``[1, 8192]`` or a non-finite ``logit_scale_init``.
        TypeError: ``vision`` or ``text`` of the wrong type.
    """

    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    logit_scale_init: float = math.log(1 / 0.07)

    def __post_init__(self) -> None:
        fn = "CLIPConfig"
        _check_size(self.embed_dim, "embed_dim", fn, min_value=1, limit=_MAX_WIDTH)
        if not isinstance(self.vision, VisionConfig):
            raise TypeError(f"{fn}: vision must be a VisionConfig, got {type(self.vision)}")
        if not isinstance(self.text, TextConfig):
            raise TypeError(f"{fn}: text must be a TextConfig, got {type(self.text)}")
        if not math.isfinite(self.logit_scale_init):
            raise ValueError(f"{fn}: logit_scale_init must be finite, got {self.logit_scale_init}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable nested dict."""
        return {
            "embed_dim": self.embed_dim,
            "vision": self.vision.to_dict(),
            "text": self.text.to_dict(),
            "logit_scale_init": self.logit_scale_init,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CLIPConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        fn = "CLIPConfig.from_dict"
        checked = _from_dict(_CLIPConfigDict, data, fn)
        return cls(
            embed_dim=checked.embed_dim,
            vision=VisionConfig.from_dict(checked.vision),
            text=TextConfig.from_dict(checked.text),
            logit_scale_init=checked.logit_scale_init,
        )


@dataclass(frozen=True)
class _CLIPConfigDict:
    """The key set of :meth:`CLIPConfig.to_dict`, before the towers are parsed."""

    embed_dim: int
    vision: Mapping[str, Any]
    text: Mapping[str, Any]
    logit_scale_init: float = math.log(1 / 0.07)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into model inputs.

    Args:
        image_size: Output ``(H, W)``; must equal the model's ``VisionConfig.image_size``.
        mean: Per-channel RGB mean (OpenAI CLIP's by default).
        std: Per-channel RGB standard deviation (OpenAI CLIP's by default).
        interpolation: Resize interpolation, ``"bilinear"`` (IRRA, torchvision default) or
            ``"bicubic"`` (OpenAI CLIP).
        resize_mode: ``"squash"``: resize straight to ``image_size`` without keeping the
            aspect ratio (the TIPR convention).

    Raises:
        ValueError: Image sides outside ``[1, 4096]``, a non-finite mean or std, a std
            that is not positive, or an unknown ``interpolation`` / ``resize_mode``.
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float] = field(default=OPENAI_MEAN)
    std: tuple[float, float, float] = field(default=OPENAI_STD)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    resize_mode: Literal["squash"] = "squash"

    def __post_init__(self) -> None:
        fn = "PreprocessConfig"
        object.__setattr__(self, "image_size", _check_pair(self.image_size, "image_size", fn))
        object.__setattr__(self, "mean", _check_triple(self.mean, "mean", fn))
        std = _check_triple(self.std, "std", fn)
        for s in std:
            check_positive(s, "std", fn)
        object.__setattr__(self, "std", std)
        check_choice(self.interpolation, "interpolation", fn, _INTERPOLATIONS)
        check_choice(self.resize_mode, "resize_mode", fn, _RESIZE_MODES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {k: _to_jsonable(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        return _from_dict(cls, data, "PreprocessConfig.from_dict")
