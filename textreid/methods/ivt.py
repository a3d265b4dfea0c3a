"""IVT: one single-stream transformer for both modalities, trained by multi-level alignment.

Shu et al., "See Finer, See More: Implicit Modality Alignment for Text-based Person
Retrieval", ECCV 2022 Workshops, arXiv 2208.08608 (released code
TencentYoutuResearch/PersonRetrieval-IVT). Fine-tuning minimises one CMPM over three image
views and three text levels stacked into one batch (multi-level alignment, MLA):

.. math::
    \\mathcal{L} = \\mathcal{L}_{cmpm}\\big([V^{(1)}; V^{(2)}; V^{(3)}],\\,
    [T^{word}; T^{phrase}; T^{sentence}],\\, [y; y; y]\\big)

while the encoder randomly drops tokens of both modalities (bidirectional mask modelling,
BMM, :class:`~textreid.models.TokenDropper`).
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import torch
from torch import Tensor

from textreid._checks import check_tensor
from textreid.losses.combine import LossOutput
from textreid.losses.mla import MultiLevelAlignmentLoss
from textreid.methods._text import caption_key_mask
from textreid.methods.base import (
    MethodContext,
    RetrievalMethod,
    register_method,
    require_batch_keys,
)
from textreid.models.single_stream import SingleStreamEncoder
from textreid.retrieval.models import IVTSingleStreamModel
from textreid.text import phrase_level_text, word_level_text
from textreid.tokenization import CLIPTokenizer

__all__ = ["IVT_LEVELS", "IVTMethod"]

IVT_LEVELS: tuple[str, str, str] = ("word", "phrase", "sentence")
"""The text levels of IVT's multi-level alignment, in the order of ``batch["text_levels"]``."""

# timm's RandomErasing as IVT configures it: p 0.5, area 2-40 %, aspect 0.3-3.3, one box.
_ERASE_P, _ERASE_AREA, _ERASE_ASPECT = 0.5, (0.02, 0.4), (0.3, 3.3)


def _reaugment(images: Tensor) -> Tensor:
    """A fresh random view of already-transformed images ``[B, 3, H, W]``.

    Per sample: a horizontal flip with probability 0.5, then one random-erasing box with
    probability 0.5 filled with 0 (the mean colour after normalisation). Draws from torch's
    global generator on the images' device.
    """
    b, _, h, w = images.shape
    dev = images.device
    flip = torch.rand(b, device=dev) < 0.5
    out = torch.where(flip[:, None, None, None], images.flip(-1), images)
    area = torch.empty(b, device=dev).uniform_(*_ERASE_AREA) * (h * w)
    log_lo, log_hi = math.log(_ERASE_ASPECT[0]), math.log(_ERASE_ASPECT[1])
    aspect = torch.empty(b, device=dev).uniform_(log_lo, log_hi).exp()
    eh = (area * aspect).sqrt().round()
    ew = (area / aspect).sqrt().round()
    top = (torch.rand(b, device=dev) * (h - eh + 1).clamp_min(1)).floor()
    left = (torch.rand(b, device=dev) * (w - ew + 1).clamp_min(1)).floor()
    erase = (torch.rand(b, device=dev) < _ERASE_P) & (eh < h) & (ew < w)
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    box = (
        (ys >= top[:, None, None])
        & (ys < (top + eh)[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + ew)[:, None, None])
        & erase[:, None, None]
    )
    return out.masked_fill(box[:, None], 0.0)


class IVTMethod(RetrievalMethod):
    """IVT's fine-tuning objective around a :class:`~textreid.models.SingleStreamEncoder`.

    Retrieval embeddings are the encoder's class tokens (768-d in the paper), compared by
    cosine, each modality encoded on its own (:meth:`retrieval_model`). This is not a dual
    CLIP encoder, so :meth:`retrieval_encoder` returns ``None``.

    Args:
        encoder: the single-stream encoder; its ``vocab_size`` must cover the tokenizer's ids.
            Its :class:`~textreid.models.TokenDropper` (BMM, ratio 0.2 in IVT) acts in
            training mode only.
        tokenizer: the caption tokenizer (CLIP BPE); used to derive the phrase- and
            word-level texts from ``text_ids`` when the batch does not bring them.
        epsilon: CMPM's :math:`\\epsilon` (1e-8).

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``; optionally
    ``image_views [B, 3, 3, H, W]`` (three augmentations of each image) and ``text_levels
    [B, 3, L]`` (word, phrase and sentence texts, :data:`IVT_LEVELS`), which are then used as
    given. Without them the method derives them from the generic batch (our choices):

    * views: ``images`` itself and two fresh views of it (random horizontal flip and one
      random-erasing box, timm's settings), drawn from torch's global generator;
    * levels: the caption decoded from ``text_ids``; phrase level by
      :func:`~textreid.text.phrase_level_text`; word level by
      :func:`~textreid.text.word_level_text` without attribute annotations (IVT's fallback:
      one clause of the caption); both re-tokenised to ``L``. Python draws use a
      :class:`random.Random` seeded from torch's global generator, so a seeded run repeats.

    Loss terms: ``mla`` (the weighted CMPM above); ``total`` equals it.

    Differences from the reference code:
        * Tokens are CLIP BPE ids (49,408-token vocabulary, context 77) instead of BERT's
          WordPiece; text padding is recognised after the end token (largest id).
        * IVT's word level uses an unreleased attribute parser's output; derived levels use
          its no-attribute fallback (pass ``text_levels`` to use real attributes).
        * The three views (and the three levels) go through the encoder in one call each, so
          BMM draws one drop pattern per modality and step (the reference draws one per view).
        * The two extra views are re-augmented from the loaded (already augmented) image
          instead of three independent loads with the full pipeline.
    """

    def __init__(
        self, encoder: SingleStreamEncoder, tokenizer: CLIPTokenizer, *, epsilon: float = 1e-8
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        if not isinstance(encoder, SingleStreamEncoder):
            raise TypeError(
                f"{fn}: encoder must be a SingleStreamEncoder, got {type(encoder).__name__}"
            )
        if not isinstance(tokenizer, CLIPTokenizer):
            raise TypeError(
                f"{fn}: tokenizer must be a CLIPTokenizer, got {type(tokenizer).__name__}"
            )
        if tokenizer.vocab_size > encoder.vocab_size:
            raise ValueError(
                f"{fn}: the tokenizer has {tokenizer.vocab_size} ids but the encoder's "
                f"vocab_size is {encoder.vocab_size}"
            )
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.mla = MultiLevelAlignmentLoss(epsilon=epsilon)

    @classmethod
    def from_context(cls, context: MethodContext, **kwargs: Any) -> IVTMethod:
        """Build IVT for a recipe: no identity classifier, and a single-stream encoder
        described by the recipe's ``model_overrides``, sized to its tokenizer."""
        tokenizer = context.tokenizer
        encoder = SingleStreamEncoder(
            **context.model_overrides,
            vocab_size=tokenizer.vocab_size,
            max_text_len=tokenizer.context_length,
        )
        return cls(encoder, tokenizer, **kwargs)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.encoder.encode_image(images)

    def encode_text(self, text_ids: Tensor) -> Tensor:
        mask = caption_key_mask(text_ids, f"{type(self).__name__}.encode_text")
        return self.encoder.encode_text(text_ids, mask)

    def retrieval_model(self) -> IVTSingleStreamModel:
        """The encoder as an ``ivt-single-stream`` retrieval model (shared, not copied)."""
        return IVTSingleStreamModel(self.encoder)

    # Decoding, rewriting and re-tokenising captions is host work: under torch.compile it runs
    # eagerly as one graph break instead of being traced string by string.
    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def derive_levels(self, text_ids: Tensor) -> Tensor:
        """Word-, phrase- and sentence-level ids ``[B, 3, L]`` of captions ``[B, L]``.

        See the class docstring for the rules; draws from torch's global generator.
        """
        fn = f"{type(self).__name__}.derive_levels"
        ids = check_tensor(text_ids, "text_ids", fn, ndim=2, kind="int", dims="(B, L)")
        rng = random.Random(int(torch.randint(0, 2**62, (1,))))
        captions = self.tokenizer.batch_decode(ids.cpu())
        words = [word_level_text({}, c, rng) for c in captions]
        phrases = [phrase_level_text(c, rng) for c in captions]
        length = ids.shape[1]
        word_ids = self.tokenizer(words, context_length=length).to(ids.device)
        phrase_ids = self.tokenizer(phrases, context_length=length).to(ids.device)
        return torch.stack([word_ids, phrase_ids, ids], dim=1)

    def _views_and_levels(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        images = batch["images"]
        views = self._given(batch, "image_views", "3, H, W", "float")
        if views is None:
            views = torch.stack([images, _reaugment(images), _reaugment(images)], dim=1)
        levels = self._given(batch, "text_levels", "L", "int", " (word, phrase, sentence)")
        if levels is None:
            levels = self.derive_levels(batch["text_ids"])
        return views, levels

    def _given(
        self,
        batch: dict[str, Tensor],
        key: str,
        tail: str,
        kind: Literal["float", "int"],
        note: str = "",
    ) -> Tensor | None:
        """``batch[key]`` checked as ``[B, 3, *tail]`` (one entry per IVT level), or None."""
        if key not in batch:
            return None
        fn = type(self).__name__
        ndim = 2 + len(tail.split(","))
        dims = f"(B, 3, {tail})"
        t = check_tensor(batch[key], f"batch[{key!r}]", fn, ndim=ndim, kind=kind, dims=dims)
        b, k = batch["images"].shape[0], len(IVT_LEVELS)
        if t.shape[:2] != (b, k):
            raise ValueError(
                f"{fn}: batch[{key!r}] must be ({b}, {k}, {tail}){note}, got {tuple(t.shape)}"
            )
        return t

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        views, levels = self._views_and_levels(batch)
        b, k = views.shape[:2]
        # Level-major stacking: row l * B + i is sample i at view / level l.
        image_feats = self.encode_image(views.transpose(0, 1).reshape(k * b, *views.shape[2:]))
        text_feats = self.encode_text(levels.transpose(0, 1).reshape(k * b, levels.shape[2]))
        mla = self.mla(
            list(image_feats.float().chunk(k)), list(text_feats.float().chunk(k)), batch["pids"]
        )
        return LossOutput(mla, {"mla": mla.detach()})


register_method("ivt", IVTMethod.from_context)
