"""Text preparation for training: MLM masking, IVT's text levels, attribute words.

These turn captions (strings or token ids) into the inputs and targets that losses consume;
they compute no loss themselves. The layer sits below :mod:`textreid.losses` (losses may
import it) and imports nothing from losses, methods or the data readers.
"""

from __future__ import annotations

from textreid.text.attributes import (
    PEDESTRIAN_ATTRIBUTE_WORDS,
    PEDESTRIAN_COLOR_WORDS,
    PEDESTRIAN_GARMENT_WORDS,
    AttributeMasking,
    attribute_positions,
    attribute_token_sequences,
    mask_attribute_tokens,
)
from textreid.text.levels import phrase_level_text, word_level_text
from textreid.text.masking import caption_key_mask, mask_for_mlm

__all__ = [
    "PEDESTRIAN_ATTRIBUTE_WORDS",
    "PEDESTRIAN_COLOR_WORDS",
    "PEDESTRIAN_GARMENT_WORDS",
    "AttributeMasking",
    "attribute_positions",
    "attribute_token_sequences",
    "caption_key_mask",
    "mask_attribute_tokens",
    "mask_for_mlm",
    "phrase_level_text",
    "word_level_text",
]
