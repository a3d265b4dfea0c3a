"""Importing checkpoints of IVT's released code (TencentYoutuResearch/PersonRetrieval-IVT).

The source state dicts are built here from the key list of the released fine-tuning model
(``build_transformer_uvt_img_txt_mask`` around ``UVT_Bert_IMG_TXT_MASK``), saved the way its
training loop saves them, and the embeddings of the converted encoder are compared with a
straight-line float64 computation of the reference forward written with plain torch ops
over the *source* tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from textreid.convert import load_ivt_checkpoint
from textreid.models import SingleStreamEncoder
from textreid.models.convert import ivt_to_textreid, single_stream_config_from_state_dict

# Tiny IVT: width 128 (so IVT's heads = width // 64 = 2 applies), 2 blocks, patch 8 at stride
# 6 over 40x24 images (a 6x3 grid), a 50-token vocabulary with 16 positions.
D, DEPTH, HIDDEN, VOCAB, POSITIONS = 128, 2, 512, 50, 16
SIZE, PATCH, STRIDE, GRID = (40, 24), 8, 6, (6, 3)
CLS, SEP, PAD = 1, 2, 0

_BLOCK_SHAPES = {
    "norm1.weight": (D,),
    "norm1.bias": (D,),
    "attn.qkv.weight": (3 * D, D),
    "attn.qkv.bias": (3 * D,),
    "attn.proj.weight": (D, D),
    "attn.proj.bias": (D,),
    "norm2.weight": (D,),
    "norm2.bias": (D,),
    "mlp_vis.fc1.weight": (HIDDEN, D),
    "mlp_vis.fc1.bias": (HIDDEN,),
    "mlp_vis.fc2.weight": (D, HIDDEN),
    "mlp_vis.fc2.bias": (D,),
    "mlp_txt.fc1.weight": (HIDDEN, D),
    "mlp_txt.fc1.bias": (HIDDEN,),
    "mlp_txt.fc2.weight": (D, HIDDEN),
    "mlp_txt.fc2.bias": (D,),
}


def _shapes() -> dict[str, tuple[int, ...]]:
    """Every float entry of the released fine-tuned model's ``state_dict()``."""
    n = GRID[0] * GRID[1] + 1
    shapes: dict[str, tuple[int, ...]] = {
        "encoder_vl.embeddings.word_embeddings.weight": (VOCAB, D),
        "encoder_vl.embeddings.position_embeddings.weight": (POSITIONS, D),
        "encoder_vl.embeddings.token_type_embeddings.weight": (2, D),
        "encoder_vl.embeddings.LayerNorm.weight": (D,),
        "encoder_vl.embeddings.LayerNorm.bias": (D,),
        "encoder_vl.patch_embed.proj.weight": (D, 3, PATCH, PATCH),
        "encoder_vl.patch_embed.proj.bias": (D,),
        "encoder_vl.cls_token": (1, 1, D),
        "encoder_vl.pos_embed": (1, n, D),
        "encoder_vl.type_embed": (1, n, D),
        "encoder_vl.norm.weight": (D,),
        "encoder_vl.norm.bias": (D,),
        # Training leftovers: the temperature, the ID classifier and its BN neck.
        "temp": (),
        "classifier_img.weight": (7, D),
        "bottleneck_img.weight": (D,),
        "bottleneck_img.bias": (D,),
        "bottleneck_img.running_mean": (D,),
        "bottleneck_img.running_var": (D,),
    }
    for i in range(DEPTH):
        shapes.update({f"encoder_vl.blocks.{i}.{k}": s for k, s in _BLOCK_SHAPES.items()})
    return shapes


def _ivt_state_dict(prefix: str = "module.", seed: int = 0) -> dict[str, Tensor]:
    """Random float32 weights in the released layout (DDP's ``module.`` prefix included).

    Values are multiples of 1/256, so float32 sums of them are exact and the float64
    reference below sees the very numbers the conversion sees.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    for key, shape in _shapes().items():
        value = torch.randint(-40, 41, shape, generator=g).float() / 256
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "LayerNorm.weight")):
            value = value + 1
        sd[prefix + key] = value
    sd[prefix + "encoder_vl.embeddings.position_ids"] = torch.arange(POSITIONS)[None]
    sd[prefix + "bottleneck_img.num_batches_tracked"] = torch.tensor(12)
    return sd


def _save_released(sd: dict[str, Tensor], path: Path) -> Path:
    """What IVT's ``save_checkpoint`` writes: legacy serialisation, numpy ``best_acc``."""
    optimizer = {
        "state": {0: {"momentum_buffer": torch.zeros(3)}},
        "param_groups": [{"lr": 5e-3, "momentum": 0.9, "nesterov": False, "params": [0]}],
    }
    r1, m_ap = np.float32(0.6559), np.float64(0.5812)
    state = {"state_dict": sd, "optimizer": optimizer, "epoch": 31, "best_acc": 0.5 * (r1 + m_ap)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


# -- the reference forward, straight from the released code, over the source tensors ---------


def _ref_blocks(x: Tensor, sd: dict[str, Tensor], mode: str, mask: Tensor | None) -> Tensor:
    heads = 2
    b, n, c = x.shape
    for i in range(DEPTH):
        p = f"encoder_vl.blocks.{i}."
        h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1)) * (c // heads) ** -0.5
        if mask is not None:  # AttentionMask.get_extended_attention_mask
            attn = attn + (1.0 - mask[:, None, None, :]) * -10000.0
        attn = attn.softmax(dim=-1)
        out = (attn @ qkv[2]).transpose(1, 2).reshape(b, n, c)
        x = x + out @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        m = p + ("mlp_vis." if mode == "vis" else "mlp_txt.")
        h = F.gelu(h @ sd[m + "fc1.weight"].T + sd[m + "fc1.bias"])
        x = x + h @ sd[m + "fc2.weight"].T + sd[m + "fc2.bias"]
    x = F.layer_norm(x, (c,), sd["encoder_vl.norm.weight"], sd["encoder_vl.norm.bias"], eps=1e-6)
    return x[:, 0]


def _ref_image(sd: dict[str, Tensor], images: Tensor) -> Tensor:
    p = "encoder_vl."
    x = F.conv2d(
        images, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=STRIDE
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    return _ref_blocks(x + sd[p + "pos_embed"] + sd[p + "type_embed"], sd, "vis", None)


def _ref_text(sd: dict[str, Tensor], ids: Tensor, mask: Tensor) -> Tensor:
    e = "encoder_vl.embeddings."
    x = sd[e + "word_embeddings.weight"][ids] + sd[e + "token_type_embeddings.weight"][0]
    x = x + sd[e + "position_embeddings.weight"][: ids.shape[1]]
    x = F.layer_norm(x, (D,), sd[e + "LayerNorm.weight"], sd[e + "LayerNorm.bias"], eps=1e-12)
    return _ref_blocks(x, sd, "txt", mask.double())


def _bert_ids() -> Tensor:
    """``[CLS] words [SEP]`` padded with 0, of different lengths (one fills every position)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.full((3, POSITIONS), PAD)
    for row, n in enumerate((4, 9, POSITIONS - 2)):
        ids[row, 0] = CLS
        ids[row, 1 : n + 1] = torch.randint(3, VOCAB, (n,), generator=g)
        ids[row, n + 1] = SEP
    return ids


def _inputs() -> tuple[Tensor, Tensor, Tensor]:
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    ids = _bert_ids()
    return images, ids, ids != PAD


def test_embeddings_equal_the_reference_forward(tmp_path: Path) -> None:
    raw = _ivt_state_dict()
    encoder = load_ivt_checkpoint(
        _save_released(raw, tmp_path / "checkpoint_best.pth"), image_size=SIZE
    )
    assert not encoder.training
    assert (encoder.grid, encoder.vocab_size, len(encoder.blocks)) == (GRID, VOCAB, DEPTH)
    src = {k[len("module.") :]: v.double() for k, v in raw.items()}
    images, ids, mask = _inputs()
    enc = encoder.double()
    with torch.no_grad():
        got_img = enc.encode_image(images.double())
        got_txt = enc.encode_text(ids, mask)
    torch.testing.assert_close(got_img, _ref_image(src, images.double()), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(got_txt, _ref_text(src, ids, mask), rtol=1e-9, atol=1e-11)
    # Padding matters (the mask is honoured): unmasked, the short captions change.
    with torch.no_grad():
        assert not torch.allclose(enc.encode_text(ids)[0], got_txt[0], atol=1e-3)


def test_float32_embeddings_agree_too(tmp_path: Path) -> None:
    raw = _ivt_state_dict(prefix="", seed=1)
    encoder = load_ivt_checkpoint(_save_released(raw, tmp_path / "ivt.pth"), image_size=SIZE)
    src = {k: v.double() for k, v in raw.items()}
    images, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.encode_image(images).double(),
            _ref_image(src, images.double()),
            rtol=1e-4,
            atol=1e-5,
        )
        torch.testing.assert_close(
            encoder.encode_text(ids, mask).double(), _ref_text(src, ids, mask), rtol=1e-4, atol=1e-5
        )


def test_key_map_fills_the_encoder_exactly() -> None:
    raw = _ivt_state_dict()
    raw["module.encoder_vl.blocks.0.attn.proj.weight"] = raw[
        "module.encoder_vl.blocks.0.attn.proj.weight"
    ].half()
    state = ivt_to_textreid(raw)
    kwargs = single_stream_config_from_state_dict(state, image_size=SIZE)
    assert kwargs == {
        "image_size": SIZE,
        "patch_size": PATCH,
        "stride": STRIDE,
        "vocab_size": VOCAB,
        "max_text_len": POSITIONS,
        "width": D,
        "depth": DEPTH,
        "heads": 2,
        "mlp_ratio": 4.0,
        "drop_ratio": 0.2,
    }
    expected = SingleStreamEncoder(**kwargs).state_dict()
    assert set(state) == {"encoder." + k for k in expected}
    assert all(v.dtype == torch.float32 for v in state.values())
    # Type-0 row folded into every position; the rest of the table copied as is.
    pos = raw["module.encoder_vl.embeddings.position_embeddings.weight"]
    types = raw["module.encoder_vl.embeddings.token_type_embeddings.weight"]
    assert torch.equal(state["encoder.position_embeddings.weight"], pos + types[0])
    assert torch.equal(
        state["encoder.blocks.1.attn.in_proj_weight"],
        raw["module.encoder_vl.blocks.1.attn.qkv.weight"],
    )
    assert torch.equal(
        state["encoder.blocks.0.mlp_txt.c_proj.bias"],
        raw["module.encoder_vl.blocks.0.mlp_txt.fc2.bias"],
    )


def test_pretraining_heads_are_dropped() -> None:
    raw = _ivt_state_dict(prefix="")
    raw["encoder_fusion.bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(D, D)
    raw["itm.weight"] = torch.zeros(2, D)
    assert set(ivt_to_textreid(raw)) == set(ivt_to_textreid(_ivt_state_dict(prefix="")))


def test_unknown_and_missing_keys_are_listed() -> None:
    raw = _ivt_state_dict()
    raw["module.head.weight"] = torch.zeros(3)
    raw["module.encoder_vl.blocks.0.mlp_img.fc1.weight"] = torch.zeros(3)
    del raw["module.encoder_vl.blocks.1.attn.qkv.bias"]
    del raw["module.encoder_vl.embeddings.token_type_embeddings.weight"]
    with pytest.raises(ValueError, match="ivt_to_textreid: not an IVT state dict") as err:
        ivt_to_textreid(raw)
    msg = str(err.value)
    for key in (
        "module.head.weight",
        "encoder_vl.blocks.0.mlp_img.fc1.weight",
        "encoder_vl.blocks.1.attn.qkv.bias",
        "encoder_vl.embeddings.token_type_embeddings.weight",
    ):
        assert key in msg
    with pytest.raises(ValueError, match=r"missing keys.*encoder_vl\.cls_token"):
        ivt_to_textreid({"encoder_vl.pos_embed": torch.zeros(1, 2, 4)})


def test_a_stray_block_index_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    raw = _ivt_state_dict()
    for k in [k for k in raw if ".blocks.1." in k]:
        raw[k.replace(".blocks.1.", ".blocks.100000000.")] = raw.pop(k)
    path = _save_released(raw, tmp_path / "stray.pth")
    with pytest.raises(ValueError, match=r"stray.pth.*unexpected keys.*blocks\.100000000\."):
        load_ivt_checkpoint(path, image_size=SIZE)


def test_sizes_the_shapes_cannot_tell() -> None:
    state = ivt_to_textreid(_ivt_state_dict())
    config = single_stream_config_from_state_dict
    assert config(state, image_size=SIZE, stride=STRIDE, heads=4)["heads"] == 4
    with pytest.raises(ValueError, match=r"stride 8 gives 15 patches.*pos_embed holds 18"):
        config(state, image_size=SIZE, stride=8)
    with pytest.raises(ValueError, match=r"no stride up to the patch size 8.*image_size"):
        config(state, image_size=(384, 128))
    with pytest.raises(ValueError, match="heads 3 does not divide the width 128"):
        config(state, image_size=SIZE, heads=3)
    narrow = {**state, "encoder.patch_embed.weight": torch.zeros(96, 3, PATCH, PATCH)}
    with pytest.raises(ValueError, match=r"width 96 is not a multiple of 64.*heads="):
        config(narrow, image_size=SIZE)


def test_released_numpy_metrics_load_under_either_numpy_path(tmp_path: Path) -> None:
    path = _save_released(_ivt_state_dict(), tmp_path / "np2.pth")
    data = path.read_bytes()
    # numpy 1 (the released environment) pickles scalars as numpy.core.multiarray.scalar,
    # numpy 2 as numpy._core.multiarray.scalar; whichever wrote this file, both must load.
    np1, np2 = b"numpy.core.multiarray\nscalar", b"numpy._core.multiarray\nscalar"
    assert (np1 in data) != (np2 in data)
    old = tmp_path / "np1.pth"
    old.write_bytes(data.replace(np2, np1))
    assert np1 in old.read_bytes()
    assert load_ivt_checkpoint(old, image_size=SIZE).vocab_size == VOCAB
    assert load_ivt_checkpoint(path, image_size=SIZE).vocab_size == VOCAB


class _Reduce:
    """Unpickling this creates the file at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("extra", ["payload", "array"])
def test_code_and_arrays_in_the_file_are_refused(tmp_path: Path, extra: str) -> None:
    marker = tmp_path / "marker"
    value: object = _Reduce(str(marker)) if extra == "payload" else np.zeros(3)
    path = tmp_path / "evil.pth"
    torch.save(
        {"state_dict": _ivt_state_dict(), "x": value}, path, _use_new_zipfile_serialization=False
    )
    with pytest.raises(
        ValueError, match=r"load_ivt_checkpoint: .*evil.pth is not a weights-only"
    ) as err:
        load_ivt_checkpoint(path, image_size=SIZE)
    assert "Safe formats: safetensors" in str(err.value)
    assert not marker.exists()


def test_missing_file_and_no_state_dict(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"load_ivt_checkpoint: checkpoint .* does not exist"
    ):
        load_ivt_checkpoint(tmp_path / "none.pth")
    path = tmp_path / "meta.pth"
    torch.save({"state_dict": {"epoch": 3}}, path)
    with pytest.raises(ValueError, match="holds no state dict"):
        load_ivt_checkpoint(path)
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\)"):
        load_ivt_checkpoint(path, image_size=(1, 2, 3))
