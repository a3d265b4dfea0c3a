"""Dual encoder and registry: OpenAI key layout, parameter counts, overrides."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textreid.config import CLIPConfig
from textreid.models import (
    CLIPDualEncoder,
    create_model,
    get_model_config,
    list_models,
    override_config,
    register_model,
)


def test_vit_b16_parameter_count_on_meta() -> None:
    model = create_model("ViT-B/16", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 149_620_737
    assert sum(p.numel() for p in model.visual.parameters()) == 86_192_640
    assert model.visual.positional_embedding.is_meta
    assert len(model.state_dict()) == 302
    irra = create_model("ViT-B/16", device="meta", image_size=(384, 128))
    assert irra.visual.positional_embedding.shape == (193, 768)


def test_registered_openai_configs() -> None:
    assert {"ViT-B/16", "ViT-B/32", "ViT-L/14", "tiny"} <= set(list_models())
    l14 = get_model_config("ViT-L/14")
    assert (l14.embed_dim, l14.vision.width, l14.vision.layers, l14.vision.heads) == (
        768,
        1024,
        24,
        16,
    )
    assert (l14.text.width, l14.text.heads, l14.vision.patch_size) == (768, 12, 14)
    assert get_model_config("ViT-B/32").vision.grid_size == (7, 7)
    assert l14.vision.act == l14.text.act == "quick_gelu"


def test_state_dict_has_openai_names() -> None:
    model = create_model("tiny")
    keys = set(model.state_dict())
    top = {k.split(".")[0] for k in keys}
    assert top == {
        "visual",
        "token_embedding",
        "positional_embedding",
        "transformer",
        "ln_final",
        "text_projection",
        "logit_scale",
    }
    for name in [
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.ln_pre.bias",
        "visual.proj",
        "visual.transformer.resblocks.1.attn.in_proj_weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
        "transformer.resblocks.1.attn.out_proj.bias",
        "ln_final.weight",
    ]:
        assert name in keys
    assert "visual.conv1.bias" not in keys
    assert model.state_dict()["logit_scale"].item() == pytest.approx(math.log(1 / 0.07))


def test_forward_is_normalised_encode() -> None:
    model = create_model("tiny").eval()
    images = torch.randn(3, 3, 64, 32)
    ids = torch.randint(1, 49000, (2, 10))
    ids[:, 6] = 49407
    img, txt = model(images, ids)
    assert img.shape == (3, 64)
    assert txt.shape == (2, 64)
    torch.testing.assert_close(img, F.normalize(model.encode_image(images), dim=-1))
    torch.testing.assert_close(txt, F.normalize(model.encode_text(ids), dim=-1))
    _, tokens = model.encode_image(images, return_tokens=True)
    assert tokens.shape == (3, 9, 64)
    _, text_tokens = model.encode_text(ids, return_tokens=True)
    assert text_tokens.shape == (2, 10, 64)


def test_overrides() -> None:
    model = create_model("tiny", image_size=(384, 128), stride=12, act="gelu", text={"layers": 1})
    assert model.visual.grid_size == (31, 10)
    assert model.config.vision.act == model.config.text.act == "gelu"
    assert len(model.transformer.resblocks) == 1
    cfg = override_config(
        get_model_config("tiny"), embed_dim=32, vision={"layers": 3}, context_length=20
    )
    assert (cfg.embed_dim, cfg.vision.layers, cfg.text.context_length) == (32, 3, 20)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"depth": 3}, "unknown override 'depth'"),
        ({"vision": {"depth": 3}}, r"unknown vision fields \['depth'\]"),
        ({"stride": 8, "vision": {"stride": 8}}, "given both as a shortcut and in a tower dict"),
        ({"image_size": (8, 8)}, "larger than image_size"),
    ],
)
def test_override_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("tiny", device="meta", **kw)


def test_unknown_name_lists_models() -> None:
    with pytest.raises(ValueError, match=r"create_model: unknown model 'ViT-X'.*'ViT-B/16'"):
        create_model("ViT-X")


def test_register_model() -> None:
    def factory() -> CLIPConfig:
        return get_model_config("tiny", embed_dim=16)

    register_model("test-registry-tiny16", factory)
    assert "test-registry-tiny16" in list_models()
    assert isinstance(create_model("test-registry-tiny16"), CLIPDualEncoder)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-registry-tiny16", factory)
    register_model("test-registry-tiny16", factory, overwrite=True)
