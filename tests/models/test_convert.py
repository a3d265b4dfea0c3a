"""Layout conversion and parity with transformers' CLIPModel and open_clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textreid.models import (
    clean_state_dict,
    clip_config_from_hf_dict,
    clip_config_from_open_clip_dict,
    clip_config_to_hf_dict,
    config_from_state_dict,
    create_model,
    detect_layout,
    export_hf,
    hf_to_openai,
    load_clip,
    openai_to_hf,
    save_hf,
)

EOT = 999


def _ids(batch: int = 3, length: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, EOT - 1, (batch, length), generator=g)
    for row, pos in enumerate([3, 9, 5][:batch]):
        ids[row, pos] = EOT
        ids[row, pos + 1 :] = 0
    return ids


@pytest.fixture(scope="module")
def hf_model() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            eos_token_id=EOT,
            bos_token_id=EOT - 1,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = transformers.CLIPModel(cfg).eval()
    # HF initialises LayerNorms to identity and biases to zero: randomise so they are checked.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_features(
    model: torch.nn.Module, images: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        img = model.get_image_features(pixel_values=images)
        txt = model.get_text_features(input_ids=ids)
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return img, txt


def _assert_same_features(model: torch.nn.Module, hf: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 32, 32)
    ids = _ids()
    ref_img, ref_txt = _hf_features(hf, images, ids)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), ref_img, atol=1e-5, rtol=0)  # type: ignore[operator]
        torch.testing.assert_close(model.encode_text(ids), ref_txt, atol=1e-5, rtol=0)  # type: ignore[operator]


@pytest.mark.parity
def test_hf_folder_matches_transformers(hf_model: torch.nn.Module, tmp_path: Path) -> None:
    hf_model.save_pretrained(tmp_path)  # type: ignore[operator]
    model = load_clip(tmp_path).eval()
    assert model.config.vision.heads == 2
    assert model.config.text.mlp_ratio == 1.5
    _assert_same_features(model, hf_model)


@pytest.mark.parity
def test_openai_layout_matches_transformers(hf_model: torch.nn.Module) -> None:
    sd = hf_to_openai(hf_model.state_dict())
    assert detect_layout(sd) == "openai"
    model = load_clip(sd, vision={"heads": 2}, text={"heads": 2}).eval()
    _assert_same_features(model, hf_model)


@pytest.mark.parity
def test_save_hf_loads_in_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model = create_model(
        "tiny", image_size=(32, 32), vision={"patch_size": 8}, text={"vocab_size": 1000}
    ).eval()
    save_hf(model, tmp_path)
    hf = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    _assert_same_features(model, hf)


def test_round_trip_textreid_hf_textreid_is_exact() -> None:
    model = create_model("tiny", image_size=(32, 32))
    sd = model.state_dict()
    hf_sd, hf_cfg = export_hf(model)
    assert detect_layout(hf_sd) == "hf"
    assert len(hf_sd) == len(sd) + 2 * 2 * 4  # qkv weight and bias split, 2+2 layers
    back = hf_to_openai(hf_sd)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    again = load_clip(hf_sd)
    assert all(torch.equal(again.state_dict()[k], sd[k]) for k in sd)
    assert clip_config_from_hf_dict(hf_cfg) == model.config
    assert openai_to_hf(back).keys() == hf_sd.keys()


def test_hf_split_order_is_q_k_v() -> None:
    w = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(12, 4)
    hf = openai_to_hf({"transformer.resblocks.0.attn.in_proj_weight": w})
    torch.testing.assert_close(hf["text_model.encoder.layers.0.self_attn.q_proj.weight"], w[:4])
    torch.testing.assert_close(hf["text_model.encoder.layers.0.self_attn.v_proj.weight"], w[8:])
    proj = torch.randn(6, 3)
    hf = openai_to_hf({"visual.proj": proj})
    assert torch.equal(hf["visual_projection.weight"], proj.t())


@pytest.mark.parity
@pytest.mark.parametrize("quick_gelu", [True, False])
def test_open_clip_parity(tmp_path: Path, quick_gelu: bool) -> None:
    open_clip = pytest.importorskip("open_clip")
    cfg = {
        "embed_dim": 16,
        "quick_gelu": quick_gelu,
        "vision_cfg": {
            "image_size": [48, 32],
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 1000,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    name = f"textreid-test-tiny-{int(quick_gelu)}"
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(0)
    ref = open_clip.create_model(name).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(2, 3, 48, 32)
    ids = torch.zeros(3, 16, dtype=torch.long)
    ids[:, :10] = _ids()
    # The open_clip folder layout, whose config carries the activation.
    folder = tmp_path / "oc"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {}})
    )
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    model = load_clip(folder).eval()
    assert model.config.vision.act == ("quick_gelu" if quick_gelu else "gelu")
    assert model.config.vision.grid_size == (3, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(images), ref.encode_image(images), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(model.encode_text(ids), ref.encode_text(ids), atol=1e-5, rtol=0)
    # The bare state dict needs the grid and the activation, which weights cannot tell.
    act = "quick_gelu" if quick_gelu else "gelu"
    bare = load_clip(
        ref.state_dict(), checkpoint_grid=(3, 2), act=act, vision={"heads": 2}, text={"heads": 2}
    )
    assert all(torch.equal(bare.state_dict()[k], v) for k, v in model.state_dict().items())


def test_clean_state_dict() -> None:
    sd = create_model("tiny").state_dict()
    half = {f"module.base_model.{k}": v.half() for k, v in sd.items()}
    half["module.classifier.weight"] = torch.zeros(3, 3)
    half["module.base_model.input_resolution"] = torch.tensor(224)
    clean = clean_state_dict(half)
    assert clean.keys() == sd.keys()
    assert all(v.dtype == torch.float32 for v in clean.values())
    hf = {
        "text_model.embeddings.position_ids": torch.arange(4)[None],
        "logit_scale": torch.tensor(1.0),
    }
    assert list(clean_state_dict(hf)) == ["logit_scale"]
    custom = clean_state_dict(
        {"text.token_embedding.weight": torch.zeros(2, 2), "visual.proj": torch.zeros(2, 2)}
    )
    assert set(custom) == {"token_embedding.weight", "visual.proj"}
    with pytest.raises(TypeError, match="'epoch' holds a int, not a tensor"):
        clean_state_dict({"epoch": 3})


def test_config_from_state_dict() -> None:
    model = create_model(
        "tiny", vision={"width": 128, "heads": 2, "mlp_ratio": 2.0}, text={"width": 128, "heads": 2}
    )
    cfg = config_from_state_dict(model.state_dict(), grid=(4, 2))
    assert cfg == model.config
    assert config_from_state_dict(model.state_dict(), grid=(4, 2), stride=12).vision.image_size == (
        52,
        28,
    )
    with pytest.raises(ValueError, match="8 patch positions, not a square grid; pass grid="):
        config_from_state_dict(model.state_dict())
    with pytest.raises(ValueError, match=r"grid \(3, 2\) has 6 cells, expected 8"):
        config_from_state_dict(model.state_dict(), grid=(3, 2))
    tiny = create_model("tiny", image_size=(32, 32)).state_dict()
    with pytest.raises(ValueError, match="pass vision_heads="):
        config_from_state_dict({**tiny, "visual.conv1.weight": torch.zeros(48, 3, 16, 16)})
    assert config_from_state_dict(tiny).vision.heads == 1


def test_detect_layout_and_conversion_errors() -> None:
    with pytest.raises(ValueError, match="detect_layout: not a CLIP ViT state dict"):
        detect_layout({"fc.weight": torch.zeros(1)})
    with pytest.raises(
        ValueError, match=r"hf_to_openai: keys without an OpenAI counterpart: \['pooler.weight'\]"
    ):
        hf_to_openai({"pooler.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"has weights for \['k', 'q'\] but needs q, k and v"):
        hf_to_openai(
            {
                "text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2),
                "text_model.encoder.layers.0.self_attn.k_proj.weight": torch.zeros(2, 2),
            }
        )
    with pytest.raises(ValueError, match="openai_to_hf: keys without an HF counterpart"):
        openai_to_hf({"visual.attnpool.weight": torch.zeros(1)})


def test_hf_config_conversion() -> None:
    cfg = create_model("tiny", image_size=(32, 32), device="meta").config
    data = json.loads(json.dumps(clip_config_to_hf_dict(cfg)))
    assert data["text_config"]["eos_token_id"] == 49407
    assert clip_config_from_hf_dict(data) == cfg
    defaults = clip_config_from_hf_dict({"vision_config": {"patch_size": 16}, "text_config": {}})
    assert defaults.vision.grid_size == (14, 14)
    assert defaults.text.heads == 8
    with pytest.raises(ValueError, match="HF CLIP needs a square image and stride == patch_size"):
        clip_config_to_hf_dict(create_model("tiny", device="meta").config)
    with pytest.raises(ValueError, match="hidden_act 'gelu_new' is not supported"):
        clip_config_from_hf_dict({"vision_config": {"hidden_act": "gelu_new"}})
    with pytest.raises(ValueError, match="not a HF CLIPModel config"):
        clip_config_from_hf_dict({"architectures": ["ViT"]})


def test_open_clip_config_errors() -> None:
    base = {"embed_dim": 8, "vision_cfg": {"width": 64}, "text_cfg": {}}
    assert clip_config_from_open_clip_dict(base).vision.act == "gelu"
    with pytest.raises(ValueError, match=r"unsupported vision_cfg options \['ls_init_value=0.1'\]"):
        clip_config_from_open_clip_dict({**base, "vision_cfg": {"ls_init_value": 0.1}})
    with pytest.raises(ValueError, match=r"unsupported model_cfg keys \['init_logit_bias'\]"):
        clip_config_from_open_clip_dict({**base, "init_logit_bias": -10})
