"""``torch.utils.data.Dataset`` views of a :class:`~textreid.data.PedesDataset`.

Every item is a dict of tensors so the default ``DataLoader`` collate stacks a batch into a
dict of batched tensors (``images`` [B, 3, H, W], ``text_ids`` [B, L], ``pids`` [B], ...).
Captions are tokenised by any callable ``tokenizer(list[str]) -> LongTensor[B, L]`` (for
example ``textreid.tokenization.CLIPTokenizer``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from textreid.data.pedes import PedesSplit, TrainSample

__all__ = [
    "ImageDataset",
    "ImageTextDataset",
    "TextDataset",
    "Tokenizer",
    "collate_trimmed",
    "load_image",
]

Tokenizer = Callable[[list[str]], Tensor]
"""A callable mapping a list of B captions to token ids ``LongTensor[B, L]``."""
ImageTransform = Callable[[Any], Tensor]


def load_image(path: str | os.PathLike[str]) -> Any:
    """Open an image file as a PIL RGB image (``Image.open(path).convert("RGB")``).

    Raises:
        FileNotFoundError: the file does not exist (the message names the path).
        ValueError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"load_image: image file {os.fspath(path)} does not exist") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(
            f"load_image: cannot read {os.fspath(path)} as an image ({err}); "
            "the file is corrupt or not an image"
        ) from err


def _tokenize_one(tokenizer: Tokenizer, caption: str, where: str) -> Tensor:
    ids = tokenizer([caption])
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
        got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(
            f"{where}: tokenizer(list of 1 caption) must return a LongTensor of shape (1, L), "
            f"got {got}"
        )
    if ids.dtype != torch.long:
        raise TypeError(f"{where}: tokenizer must return int64 token ids, got {ids.dtype}")
    return ids[0]


def _image_tensor(transform: ImageTransform, path: str, where: str) -> Tensor:
    out = transform(load_image(path))
    if not isinstance(out, Tensor) or out.dim() != 3:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"{where}: transform must turn a PIL image into a tensor (3, H, W), got {got}; "
            "use textreid.data.build_transforms"
        )
    return out


def _scalar(value: int) -> Tensor:
    return torch.tensor(value, dtype=torch.int64)


class ImageTextDataset(Dataset[dict[str, Tensor]]):
    """Training pairs: one item per caption.

    Item: ``{"images": FloatTensor[3, H, W], "text_ids": LongTensor[L], "pids": int64 [],
    "image_ids": int64 [], "index": int64 []}``.

    Args:
        samples: the train list of a :class:`~textreid.data.PedesDataset`.
        tokenizer: ``tokenizer(list[str]) -> LongTensor[B, L]``.
        transform: PIL image -> ``FloatTensor[3, H, W]`` (see
            :func:`~textreid.data.build_transforms`).
    """

    def __init__(
        self, samples: Sequence[TrainSample], tokenizer: Tokenizer, transform: ImageTransform
    ) -> None:
        self.samples = samples
        self.tokenizer = tokenizer
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        s = self.samples[index]
        where = "ImageTextDataset"
        return {
            "images": _image_tensor(self.transform, s.img_path, where),
            "text_ids": _tokenize_one(self.tokenizer, s.caption, where),
            "pids": _scalar(s.pid),
            "image_ids": _scalar(s.image_id),
            "index": _scalar(index),
        }


def collate_trimmed(items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """``default_collate`` of a training batch, then ``text_ids`` cut after the batch's last
    non-padding column.

    Captions are padded with 0 after their end-of-text token, whose id is never 0, so every
    column after the last one holding a non-zero id is padding in every row (token 0 is also
    a real symbol, ``!``, but only before the end token). A causal text encoder (CLIP's) or
    one that masks padding computes the same features without those columns, up to float
    rounding, at the cost of the columns kept: SynthPEDES captions average 34 of the 77
    positions, and a ``tiny-irra`` training step costs about a fifth less on batches cut to
    48-61 columns (``benchmarks/text_trim.py``). Pass it as a ``DataLoader``'s
    ``collate_fn``; the recipes' ``data.trim_text`` does.
    """
    batch: dict[str, Tensor] = default_collate(list(items))
    ids = batch["text_ids"]
    used = ids.ne(0).any(0).nonzero()
    if used.numel():
        batch["text_ids"] = ids[:, : int(used[-1]) + 1].contiguous()
    return batch


class ImageDataset(Dataset[dict[str, Tensor]]):
    """Gallery images of an evaluation split: one item per image.

    Item: ``{"images": FloatTensor[3, H, W], "pids": int64 [], "index": int64 []}``.

    Args:
        split: the evaluation split (its ``image_pids`` and ``img_paths``).
        transform: PIL image -> ``FloatTensor[3, H, W]``.
    """

    def __init__(self, split: PedesSplit, transform: ImageTransform) -> None:
        self.image_pids = split.image_pids
        self.img_paths = split.img_paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.img_paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "images": _image_tensor(self.transform, self.img_paths[index], "ImageDataset"),
            "pids": _scalar(self.image_pids[index]),
            "index": _scalar(index),
        }


class TextDataset(Dataset[dict[str, Tensor]]):
    """Text queries of an evaluation split: one item per caption.

    Item: ``{"text_ids": LongTensor[L], "pids": int64 [], "index": int64 []}``.

    Args:
        split: the evaluation split (its ``caption_pids`` and ``captions``).
        tokenizer: ``tokenizer(list[str]) -> LongTensor[B, L]``.
    """

    def __init__(self, split: PedesSplit, tokenizer: Tokenizer) -> None:
        self.caption_pids = split.caption_pids
        self.captions = split.captions
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "text_ids": _tokenize_one(self.tokenizer, self.captions[index], "TextDataset"),
            "pids": _scalar(self.caption_pids[index]),
            "index": _scalar(index),
        }
