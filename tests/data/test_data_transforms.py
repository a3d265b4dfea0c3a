"""IRRA image pipelines: shapes, exact normalisation, the random-erasing fill options."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from textreid.data import CLIP_MEAN, CLIP_STD, build_transforms


def _expected(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, CLIP_MEAN, CLIP_STD)])


def test_test_pipeline_shape_and_normalisation() -> None:
    img = Image.new("RGB", (20, 50), (200, 100, 30))
    out = build_transforms((24, 8))(img)
    assert out.shape == (3, 24, 8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _expected((200, 100, 30))[:, None, None].expand(3, 24, 8))


def test_custom_mean_std_and_interpolation() -> None:
    img = Image.new("RGB", (3, 5), (255, 0, 51))
    out = build_transforms(
        (6, 4), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="nearest"
    )(img)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, -1.0, -0.6]))


@pytest.mark.parametrize("img_aug", [True, False])
def test_train_pipeline_shape(img_aug: bool) -> None:
    img = Image.new("RGB", (30, 70), (5, 6, 7))
    out = build_transforms((32, 16), train=True, img_aug=img_aug)(img)
    assert out.shape == (3, 32, 16)


def test_train_flip_without_aug_keeps_pixels() -> None:
    img = Image.new("RGB", (2, 4), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    tf = build_transforms((4, 2), train=True, img_aug=False, interpolation="nearest")
    hi, lo = _expected((255, 255, 255))[0].item(), _expected((0, 0, 0))[0].item()
    seen = {tuple(round(v, 4) for v in tf(img)[0, 0].tolist()) for _ in range(30)}
    assert seen == {(round(hi, 4), round(lo, 4)), (round(lo, 4), round(hi, 4))}


@pytest.mark.parametrize(
    ("erase_value", "fill"),
    [("mean", torch.zeros(3)), ("irra", torch.tensor(CLIP_MEAN))],
)
def test_random_erasing_fill(erase_value: str, fill: torch.Tensor) -> None:
    # a black image stays at -mean/std after pad + crop, so any other value was erased
    img = Image.new("RGB", (16, 32), (0, 0, 0))
    tf = build_transforms((32, 16), train=True, erase_value=erase_value)  # type: ignore[arg-type]
    black = _expected((0, 0, 0))
    erased_any = False
    for seed in range(20):
        torch.manual_seed(seed)
        out = tf(img)
        mask = (out - black[:, None, None]).abs().sum(0) > 1e-5
        if mask.any():
            erased_any = True
            torch.testing.assert_close(out[:, mask], fill[:, None].expand(3, int(mask.sum())))
    assert erased_any


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"interpolation": "area"}, "interpolation must be one of"),
        ({"erase_value": "zero"}, "erase_value must be one of"),
        ({"image_size": (0, 8)}, r"image_size\[0\] \(H\) must be > 0"),
        ({"image_size": (8,)}, r"image_size must be \(H, W\)"),
        ({"mean": (0.5, 0.5)}, "mean and std need 3 channel values"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be > 0"),
    ],
)
def test_errors(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_transforms(**kwargs)  # type: ignore[arg-type]
