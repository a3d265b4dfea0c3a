"""Configs: validation, derived grid sizes and strict JSON round trips."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textreid.config import CLIPConfig, PreprocessConfig, TextConfig, VisionConfig


def _vision(**kw: object) -> VisionConfig:
    args: dict[str, object] = dict(
        image_size=(384, 128), patch_size=16, width=64, layers=2, heads=4, act="quick_gelu"
    )
    args.update(kw)
    return VisionConfig(**args)  # type: ignore[arg-type]


def _text() -> TextConfig:
    return TextConfig(context_length=77, vocab_size=49408, width=64, layers=2, heads=4, act="gelu")


def test_grid_sizes() -> None:
    assert _vision().grid_size == (24, 8)
    assert _vision().num_tokens == 193
    assert _vision(stride=12).grid_size == (31, 10)
    assert _vision(stride=12).effective_stride == 12
    assert _vision(image_size=(224, 224)).grid_size == (14, 14)


def test_act_is_required() -> None:
    with pytest.raises(TypeError, match="act"):
        VisionConfig(image_size=(32, 32), patch_size=8, width=8, layers=1, heads=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="act must be one of"):
        _vision(act="relu")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"width": 30}, "not divisible by heads"),
        ({"patch_size": 200}, "larger than image_size"),
        ({"image_size": (32,)}, "image_size must be a"),
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"layers": -1}, "layers must be >= 0, got -1"),
        ({"pos_embed_resample_mode": "area"}, "pos_embed_resample_mode"),
        ({"mlp_ratio": 0.0}, "mlp_ratio must be > 0"),
    ],
)
def test_vision_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _vision(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"patch_size": 16.0}, "patch_size must be an int, got float"),
        ({"heads": True}, "heads must be an int, got bool"),
        ({"image_size": (384, "128")}, "image_size must be an int, got str"),
        ({"pos_embed_antialias": 1}, "pos_embed_antialias must be a bool, got int"),
    ],
)
def test_vision_type_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        _vision(**kw)


def test_text_errors() -> None:
    with pytest.raises(ValueError, match="context_length"):
        TextConfig(context_length=0, vocab_size=10, width=8, layers=1, heads=1, act="gelu")
    with pytest.raises(TypeError, match="vision must be a VisionConfig"):
        CLIPConfig(embed_dim=8, vision=_text(), text=_text())  # type: ignore[arg-type]


def test_round_trip_through_json() -> None:
    cfg = CLIPConfig(embed_dim=32, vision=_vision(stride=12), text=_text())
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["vision"]["image_size"] == [384, 128]
    assert CLIPConfig.from_dict(data) == cfg
    assert cfg.logit_scale_init == pytest.approx(math.log(1 / 0.07))
    pre = PreprocessConfig(image_size=(384, 128), interpolation="bicubic")
    assert PreprocessConfig.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_unknown_and_missing_keys() -> None:
    data = CLIPConfig(embed_dim=32, vision=_vision(), text=_text()).to_dict()
    data["vision"]["depth"] = 3
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        CLIPConfig.from_dict(data)
    del data["vision"]["depth"]
    data["extra"] = 1
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        CLIPConfig.from_dict(data)
    with pytest.raises(ValueError, match=r"missing required keys \['act'\]"):
        TextConfig.from_dict({k: v for k, v in _text().to_dict().items() if k != "act"})


def test_preprocess_defaults_and_errors() -> None:
    pre = PreprocessConfig(image_size=(384, 128))
    assert pre.mean == (0.48145466, 0.4578275, 0.40821073)
    assert pre.std == (0.26862954, 0.26130258, 0.27577711)
    assert pre.resize_mode == "squash"
    with pytest.raises(ValueError, match="std must be > 0"):
        PreprocessConfig(image_size=(8, 8), std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(image_size=(8, 8), interpolation="nearest")  # type: ignore[arg-type]


@given(
    h=st.integers(16, 400),
    w=st.integers(16, 400),
    patch=st.integers(1, 16),
    stride=st.one_of(st.none(), st.integers(1, 16)),
    heads=st.sampled_from([1, 2, 4]),
    act=st.sampled_from(["quick_gelu", "gelu"]),
)
def test_vision_round_trip_property(
    h: int, w: int, patch: int, stride: int | None, heads: int, act: str
) -> None:
    cfg = VisionConfig(
        image_size=(h, w),
        patch_size=patch,
        stride=stride,
        width=8 * heads,
        layers=1,
        heads=heads,
        act=act,  # type: ignore[arg-type]
    )
    assert VisionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    s = stride or patch
    n_h, n_w = cfg.grid_size
    # The grid covers the image: one more patch would not fit.
    assert (n_h - 1) * s + patch <= h < n_h * s + patch
    assert (n_w - 1) * s + patch <= w < n_w * s + patch
