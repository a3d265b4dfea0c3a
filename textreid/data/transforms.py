"""Image pipelines of the IRRA family (PIL image in, normalised ``FloatTensor[3, H, W]`` out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import Tensor

from textreid._checks import check_choice, check_positive

__all__ = ["CLIP_MEAN", "CLIP_STD", "EraseValue", "Interpolation", "build_transforms"]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel mean of OpenAI CLIP's preprocessing (RGB, in [0, 1])."""
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel standard deviation of OpenAI CLIP's preprocessing."""

Interpolation = Literal["bilinear", "bicubic", "nearest"]
EraseValue = Literal["mean", "irra", "random"]
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_ERASE_VALUES = ("mean", "irra", "random")


def build_transforms(
    image_size: tuple[int, int] = (384, 128),
    train: bool = False,
    img_aug: bool = True,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    interpolation: Interpolation = "bilinear",
    *,
    erase_value: EraseValue = "mean",
) -> Callable[[Any], Tensor]:
    """The train or test image pipeline of IRRA (Jiang & Ye, CVPR 2023, arXiv 2303.12501).

    * test: ``Resize((H, W))`` -> ``ToTensor`` -> ``Normalize(mean, std)``.
    * train, ``img_aug=False``: ``Resize`` -> ``RandomHorizontalFlip(0.5)`` -> ``ToTensor`` ->
      ``Normalize``.
    * train, ``img_aug=True`` (IRRA's released command): ``Resize`` ->
      ``RandomHorizontalFlip(0.5)`` -> ``Pad(10)`` (zeros) -> ``RandomCrop((H, W))`` ->
      ``ToTensor`` -> ``Normalize`` -> ``RandomErasing(p=0.5, scale=(0.02, 0.4),
      ratio=(0.3, 3.3))``.

    Args:
        image_size: output ``(H, W)``.
        train: build the training pipeline (random flip, and augmentation with ``img_aug``).
        img_aug: pad / random crop / random erasing in the training pipeline.
        mean: per-channel normalisation mean (default CLIP's).
        std: per-channel normalisation std (default CLIP's).
        interpolation: resize filter (PIL's; IRRA uses bilinear).
        erase_value: fill of the random-erasing box, which is applied after normalisation.
            ``"mean"`` (default) fills with 0, i.e. the mean colour; ``"irra"`` fills with the
            raw ``mean`` tuple as IRRA does (in normalised space that is the colour
            ``mean + mean * std``, a light grey, not the mean colour); ``"random"`` fills with
            standard normal noise.

    Returns:
        A callable mapping a PIL RGB image to ``FloatTensor[3, H, W]``.

    Raises:
        ValueError: a non-positive size, ``mean``/``std`` not of length 3, a non-positive std,
            or an unknown ``interpolation`` / ``erase_value``.

    Differences from the reference code:
        IRRA's erase value is the ``"irra"`` option here, not the default.
    """
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    fn = "build_transforms"
    check_choice(interpolation, "interpolation", fn, _INTERPOLATIONS)
    check_choice(erase_value, "erase_value", fn, _ERASE_VALUES)
    if len(image_size) != 2:
        raise ValueError(f"{fn}: image_size must be (H, W), got {tuple(image_size)}")
    height, width = int(image_size[0]), int(image_size[1])
    check_positive(height, "image_size[0] (H)", fn)
    check_positive(width, "image_size[1] (W)", fn)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(
            f"{fn}: mean and std need 3 channel values, got {len(mean)} and {len(std)}"
        )
    for s in std:
        check_positive(float(s), "std", fn)
    mean_l, std_l = [float(m) for m in mean], [float(s) for s in std]

    resize = T.Resize((height, width), interpolation=InterpolationMode(interpolation))
    to_tensor = [T.ToTensor(), T.Normalize(mean=mean_l, std=std_l)]
    if not train:
        return T.Compose([resize, *to_tensor])  # type: ignore[no-any-return]
    if not img_aug:
        return T.Compose([resize, T.RandomHorizontalFlip(0.5), *to_tensor])  # type: ignore[no-any-return]
    fill: float | list[float] | str = (
        mean_l if erase_value == "irra" else ("random" if erase_value == "random" else 0.0)
    )
    return T.Compose(  # type: ignore[no-any-return]
        [
            resize,
            T.RandomHorizontalFlip(0.5),
            T.Pad(10),
            T.RandomCrop((height, width)),
            *to_tensor,
            T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=fill),
        ]
    )
