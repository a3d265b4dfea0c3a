"""IRRA: implicit relation reasoning and similarity distribution matching.

Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person
Retrieval", CVPR 2023, arXiv 2303.12501. The objective is
``L = L_sdm + L_id + L_mlm`` (weights 1 each): SDM on the global features, identity
classification of both global features, and masked language modelling through a
cross-modal transformer whose masked text tokens attend to the image tokens.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from textreid._checks import check_positive, reads_are_free
from textreid._deprecation import moved
from textreid.losses.combine import LossOutput
from textreid.losses.id import IDLoss
from textreid.losses.mlm import MLMLoss
from textreid.losses.sdm import SDMLoss
from textreid.methods.base import (
    DualEncoderMethod,
    MethodContext,
    register_method,
    require_batch_keys,
)
from textreid.models.clip import CLIPDualEncoder
from textreid.models.cross_modal import CrossModalTransformer, MLMHead
from textreid.text import mask_for_mlm

__all__ = ["IRRAMethod", "IRRAWeights"]

__getattr__ = moved(
    __name__,
    {
        "convert_irra_checkpoint": "textreid.convert.convert_irra_checkpoint",
        "irra_to_textreid": "textreid.models.convert.irra_to_textreid",
    },
    since="0.1",
    removed_in="1.0",
)

IRRA_MASK_TOKEN_ID = 49405


@dataclass(frozen=True)
class IRRAWeights:
    """Loss weights of IRRA's objective (the paper's are all 1)."""

    sdm: float = 1.0
    id: float = 1.0
    mlm: float = 1.0


class _IRRAStep(NamedTuple):
    """What one IRRA-family forward computes before the method-specific losses.

    ``image_feats [B, D]`` and ``text_feats [B, D]`` are float32 global features,
    ``image_tokens [B, P, D]`` (class token first) and ``text_tokens [B, L, D]`` every projected
    token of the caption behind ``text_feats``; ``mlm`` is the unweighted MLM loss (None without
    the MLM branch).
    """

    image_feats: Tensor
    image_tokens: Tensor
    text_feats: Tensor
    text_tokens: Tensor
    mlm: Tensor | None


_M = TypeVar("_M", bound="_IRRABase")


class _IRRABase(DualEncoderMethod):
    """IRRA's encoder step shared by IRRA and FMFA: CLIP towers, ID classifier and the
    implicit relation reasoning (cross-modal MLM) branch. Subclasses add the losses on the
    global (and token) features in :meth:`_terms`."""

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        temperature: float,
        cmt_depth: int,
        mlm: bool,
        mask_token_id: int,
        mlm_probability: float,
        global_text_from_masked_caption: bool,
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        check_positive(temperature, "temperature", fn)
        dim = encoder.config.embed_dim
        vocab = encoder.config.text.vocab_size
        if mlm and not 0 < mask_token_id < vocab:
            raise ValueError(f"{fn}: mask_token_id must lie in (0, {vocab}), got {mask_token_id}")
        if global_text_from_masked_caption and not mlm:
            raise ValueError(f"{fn}: global_text_from_masked_caption needs mlm=True")
        self.temperature = temperature
        self.use_mlm = mlm
        self.mask_token_id = mask_token_id
        self.mlm_probability = mlm_probability
        self.global_text_from_masked_caption = global_text_from_masked_caption
        self.id_loss = IDLoss(num_classes, dim)
        if mlm:
            heads = max(1, dim // 64)
            # Named "irr" so IRRA's per-module rules (substring "cross") hit the same tensors
            # as in the reference: cross_attn and cross_modal_transformer, not the LayerNorms.
            self.irr = CrossModalTransformer(dim, depth=cmt_depth, heads=heads)
            self.mlm_head = MLMHead(dim, vocab, depth=cmt_depth)
            self.mlm_loss = MLMLoss(vocab)

    @classmethod
    def from_context(cls: type[_M], context: MethodContext, **kwargs: Any) -> _M:
        """Build the method for a recipe; the recipe tokenizer's mask token (when it has
        one) is the default ``mask_token_id``, so a restricted vocabulary masks right."""
        if context.tokenizer.mask_token_id is not None:
            kwargs.setdefault("mask_token_id", context.tokenizer.mask_token_id)
        return super().from_context(context, **kwargs)

    def _encode(self, batch: dict[str, Tensor]) -> _IRRAStep:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        images, ids = batch["images"], batch["text_ids"]
        image_feats, image_tokens = self.encoder.encode_image(images, return_tokens=True)
        mlm: Tensor | None = None
        if self.use_mlm:
            masked, labels = mask_for_mlm(
                ids,
                self.mask_token_id,
                self.encoder.config.text.vocab_size,
                probability=self.mlm_probability,
            )
            masked_feats, masked_tokens = self.encoder.encode_text(masked, return_tokens=True)
            hidden = self.irr(masked_tokens, image_tokens)
            if reads_are_free(hidden.device):
                # The vocabulary projection dominates the cost; only masked positions have a
                # label, so project those alone (same loss as IRRA's full [B, L, V] logits).
                # Their number is a host value here, so the gather costs no sync.
                picked = labels != 0
                logits = self.mlm_head(hidden[picked][None])
                mlm = self.mlm_loss(logits.float(), labels[picked][None])
            else:
                # On an accelerator that number lives on the device and a gather would wait
                # for it every step: project every position, as IRRA does, and let the
                # loss's ignore_index drop the unmasked ones (same value, fixed shapes).
                mlm = self.mlm_loss(self.mlm_head(hidden).float(), labels)
        if self.global_text_from_masked_caption:
            text_feats, text_tokens = masked_feats, masked_tokens
        else:
            text_feats, text_tokens = self.encoder.encode_text(ids, return_tokens=True)
        return _IRRAStep(
            image_feats.float(), image_tokens.float(), text_feats.float(), text_tokens.float(), mlm
        )

    @abstractmethod
    def _terms(self, step: _IRRAStep, pids: Tensor) -> dict[str, Tensor]:
        """The weighted loss terms of one batch."""

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        terms = self._terms(self._encode(batch), batch["pids"])
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


class IRRAMethod(_IRRABase):
    """IRRA's training objective around a CLIP dual encoder.

    Args:
        encoder: the CLIP dual encoder (ViT-B/16 at 384x128 in the paper).
        num_classes: training identities (size of the shared ID classifier).
        temperature: SDM temperature (0.02; fixed, not learned, as in IRRA).
        weights: per-term weights.
        cmt_depth: layers of the cross-modal transformer (4).
        mlm: train the implicit relation reasoning branch (MLM); off gives SDM + ID only.
        mask_token_id: id of the MLM mask token (IRRA replaces the last BPE merge, 49405).
        mlm_probability: fraction of caption tokens masked (0.15, 80/10/10 rule).
        global_text_from_masked_caption: reproduce IRRA's released code, where an in-place
            bug makes SDM and ID see the *masked* caption (research notes: IRRA issues #13,
            #21, #29). Off by default: SDM and ID use the clean caption.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]`` (training labels
    ``0..num_classes-1``). Loss terms: ``sdm``, ``id`` and (with ``mlm``) ``mlm``, each
    already multiplied by its weight; ``total`` is their sum.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        temperature: float = 0.02,
        weights: IRRAWeights = IRRAWeights(),
        cmt_depth: int = 4,
        mlm: bool = True,
        mask_token_id: int = IRRA_MASK_TOKEN_ID,
        mlm_probability: float = 0.15,
        global_text_from_masked_caption: bool = False,
    ) -> None:
        super().__init__(
            encoder,
            num_classes,
            temperature=temperature,
            cmt_depth=cmt_depth,
            mlm=mlm,
            mask_token_id=mask_token_id,
            mlm_probability=mlm_probability,
            global_text_from_masked_caption=global_text_from_masked_caption,
        )
        self.weights = weights
        self.sdm = SDMLoss(temperature=temperature)

    def _terms(self, step: _IRRAStep, pids: Tensor) -> dict[str, Tensor]:
        w = self.weights
        terms = {} if step.mlm is None else {"mlm": w.mlm * step.mlm}
        terms["sdm"] = w.sdm * self.sdm(step.image_feats, step.text_feats, pids)
        terms["id"] = w.id * self.id_loss(step.image_feats, step.text_feats, pids)
        return terms


register_method("irra", IRRAMethod.from_context)
