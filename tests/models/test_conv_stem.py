"""VisionConfig(stem="conv"): Xiao et al.'s convolutional stem gives the patch grid, keeps
tokens local, runs BatchNorm on running statistics at inference, and saves and loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from textreid import Retriever
from textreid.config import VisionConfig
from textreid.models import ConvStem, VisionTransformer, create_model


def _vit(**kw: object) -> VisionTransformer:
    args: dict[str, object] = dict(
        image_size=(96, 48), patch_size=12, width=32, layers=1, heads=2, act="quick_gelu"
    )
    args.update(kw, stem="conv")
    return VisionTransformer(VisionConfig(**args), embed_dim=24)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("patch", "size", "layout"),
    [
        # (kernel, stride) of each convolution, hand-derived from the factors of the patch.
        (12, (96, 48), [(3, 2), (3, 2), (3, 3)]),
        (16, (64, 32), [(3, 2), (3, 2), (3, 2), (3, 2), (1, 1)]),
        (14, (56, 28), [(3, 2), (7, 7)]),
        (5, (20, 10), [(5, 5)]),
    ],
)
def test_stem_layout_and_grid_match_the_patch_convolution(
    patch: int, size: tuple[int, int], layout: list[tuple[int, int]]
) -> None:
    stem = ConvStem(patch, 32)
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0]) for c in convs] == layout
    assert convs[-1].out_channels == 32
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stem) == len(layout) - 1
    out = stem(torch.randn(2, 3, *size))
    patch_conv = nn.Conv2d(3, 32, patch, stride=patch)
    assert out.shape == patch_conv(torch.randn(2, 3, *size)).shape
    vit = _vit(image_size=size, patch_size=patch)
    assert vit.grid_size == (size[0] // patch, size[1] // patch)
    assert vit(torch.randn(2, 3, *size), return_tokens=True)[1].shape[1] == vit.config.num_tokens


def test_tokens_stay_local_to_their_patch() -> None:
    # Each output of a stride-2 3x3 stack sees a few pixels beyond its patch (receptive field
    # 3 + 2 + 4 * 2 = 13 for 12 = 2 * 2 * 3), never a patch two cells away.
    vit = _vit(layers=0).eval()
    images = torch.randn(1, 3, 96, 48)
    _, base = vit(images, return_tokens=True)
    changed = images.clone()
    changed[..., 36:48, 12:24] += 1.0  # the patch at row 3, column 1 (of 8 x 4)
    _, tokens = vit(changed, return_tokens=True)
    moved = (tokens - base).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert 1 + 3 * 4 + 1 in moved
    rows_cols = {((i - 1) // 4, (i - 1) % 4) for i in moved}
    assert all(abs(r - 3) <= 1 and abs(c - 1) <= 1 for r, c in rows_cols)


def test_inference_does_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    vit = _vit()
    vit.train()
    for _ in range(3):  # give BatchNorm running statistics of its own
        vit(torch.randn(8, 3, 96, 48) * 2 + 1)
    vit.eval()
    x = torch.randn(4, 3, 96, 48)
    alone = torch.cat([vit(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(vit(x), alone, rtol=1e-5, atol=1e-6)


def test_config_refuses_what_the_stem_cannot_tile() -> None:
    with pytest.raises(ValueError, match="stem='conv' needs stride unset"):
        VisionConfig((96, 48), 12, 32, 1, 2, "gelu", stride=6, stem="conv")
    with pytest.raises(
        ValueError, match=r"divisible by patch_size 12 \(got image_size \(100, 48\)"
    ):
        VisionConfig((100, 48), 12, 32, 1, 2, "gelu", stem="conv")
    with pytest.raises(ValueError, match="stem"):
        VisionConfig((96, 48), 12, 32, 1, 2, "gelu", stem="cnn")  # type: ignore[arg-type]


def test_a_conv_stem_retriever_saves_and_loads_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", image_size=(96, 48), vision={"patch_size": 12, "stem": "conv"})
    model.train()
    model.encode_image(torch.randn(6, 3, 96, 48))  # running statistics differ from the init
    folder = Retriever(model).save_pretrained(tmp_path / "saved")
    loaded = Retriever.from_pretrained(folder)
    assert loaded.model.config.vision.stem == "conv"
    images = torch.randn(3, 3, 96, 48)
    model.eval()
    assert torch.equal(loaded.model.encode_image(images), model.encode_image(images))
