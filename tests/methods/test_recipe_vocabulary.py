"""Recipe.vocabulary: a tokenizer restricted to the training captions sizes the model's text
tower, its MLM head and mask id, and is refused where it cannot work."""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import make_batch
from textreid.methods import DualEncoderMethod, IVTMethod
from textreid.pipeline import build_clip_encoder, build_method, build_tokenizer
from textreid.recipes import get_recipe

CAPTIONS = [
    "A woman in a red coat and black trousers carries a white bag.",
    "The man wears a blue t-shirt, khaki shorts and gray sneakers.",
]
TINY = ("tiny-irra", "tiny-fmfa", "tiny-cmr", "tiny-uca", "tiny-ivt")


@pytest.mark.parametrize("name", TINY)
def test_restricted_vocabulary_sizes_the_text_tower_and_trains(name: str) -> None:
    recipe = get_recipe(name).replace(vocabulary="train_captions")
    tok = build_tokenizer(recipe, recipe.context_length, train_captions=CAPTIONS)
    assert tok.vocab_size < 1000
    torch.manual_seed(0)
    method = build_method(recipe, 3, tokenizer=tok)
    if isinstance(method, DualEncoderMethod):
        assert method.encoder.token_embedding.num_embeddings == tok.vocab_size
    else:
        assert isinstance(method, IVTMethod)
        assert method.encoder.vocab_size == tok.vocab_size
    if recipe.mask_token is not None:
        # The mask id follows the tokenizer (CLIP's 49405 would lie outside the vocabulary).
        assert getattr(method, "mask_token_id", None) == tok.mask_token_id
    out = method(make_batch(tok, size=(96, 48)))
    out.total.backward()
    assert torch.isfinite(out.total)


def test_clip_vocabulary_is_unchanged() -> None:
    recipe = get_recipe("tiny-irra").replace(vocabulary="clip")
    tok = build_tokenizer(recipe, recipe.context_length, train_captions=CAPTIONS)
    assert tok.vocab_size == 49408
    assert build_method(recipe, 3, tokenizer=tok).encoder.config.text.vocab_size == 49408


def test_train_captions_vocabulary_needs_the_captions() -> None:
    recipe = get_recipe("tiny-irra").replace(vocabulary="train_captions")
    with pytest.raises(ValueError, match=r"vocabulary='train_captions'\); pass train_captions"):
        build_tokenizer(recipe, recipe.context_length)
    with pytest.raises(ValueError, match="pass train_captions"):
        build_method(recipe, 3)


def test_train_captions_vocabulary_is_refused_with_pretrained_weights() -> None:
    recipe = get_recipe("irra").replace(vocabulary="train_captions")
    with pytest.raises(ValueError, match="embedding rows follow CLIP's ids"):
        build_tokenizer(recipe, recipe.context_length, train_captions=CAPTIONS)


def test_unknown_vocabulary_is_named() -> None:
    recipe = get_recipe("tiny-irra").replace(vocabulary="words")
    with pytest.raises(ValueError, match=r"recipe\.vocabulary"):
        build_tokenizer(recipe, recipe.context_length, train_captions=CAPTIONS)


def test_clip_encoder_follows_the_vocab_size() -> None:
    recipe = get_recipe("tiny-irra")
    assert build_clip_encoder(recipe, vocab_size=700).config.text.vocab_size == 700
    assert build_clip_encoder(recipe).config.text.vocab_size == 49408
