"""Shared inputs of the method tests: captions with attribute words and a fake batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textreid.pipeline import build_tokenizer
from textreid.recipes import Recipe
from textreid.tokenization import CLIPTokenizer

SIZE = (64, 32)
CAPTIONS = [
    "a man in a red shirt, blue jeans and black shoes. he carries a bag.",
    "a woman with long hair, wearing a white dress and brown boots",
    "a person in a gray coat, holding an umbrella",
    "the man wears green shorts, a yellow cap and white sneakers",
]


def recipe_tokenizer(recipe: Recipe) -> CLIPTokenizer:
    """The recipe's caption tokenizer; a ``"train_captions"`` vocabulary comes from CAPTIONS
    (other text still encodes, in byte pieces)."""
    return build_tokenizer(recipe, recipe.context_length, train_captions=CAPTIONS)


def make_batch(
    tokenizer: CLIPTokenizer, size: tuple[int, int] = SIZE, seed: int = 0
) -> dict[str, Tensor]:
    """Four image-caption pairs of three identities (0, 0, 1, 2)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(4, 3, *size, generator=g),
        "text_ids": tokenizer(CAPTIONS),
        "pids": torch.tensor([0, 0, 1, 2]),
    }


def params_without_grad(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
