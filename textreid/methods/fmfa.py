"""FMFA: IRRA with adaptive SDM and explicit fine-grained alignment.

Yin et al., "Cross-modal Full-mode Fine-grained Alignment for Text-to-Image Person Retrieval" (FMFA),
ACM TOMM, arXiv 2509.13754, 2025 (released code github.com/yinhao1102/FMFA). The objective is

.. math::
    \\mathcal{L} = \\mathcal{L}_{asdm} + \\mathcal{L}_{id} + \\mathcal{L}_{mlm} + \\mathcal{L}_{efa}

(weights 1 each): adaptive SDM on the global features, IRRA's identity classification and its
implicit relation reasoning (cross-modal MLM), and EFA between every text token of the caption
(padding included, as released) and the image's patch tokens (class token dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from textreid.heads.token_similarity import SparseTokenSimilarity
from textreid.losses.asdm import ASDMLoss
from textreid.losses.efa import EFALoss
from textreid.methods.base import register_method
from textreid.methods.irra import IRRA_MASK_TOKEN_ID, _IRRABase, _IRRAStep
from textreid.models.clip import CLIPDualEncoder
from textreid.retrieval.models import CLIPRetrievalModel

__all__ = ["FMFAMethod", "FMFAWeights"]


@dataclass(frozen=True)
class FMFAWeights:
    """Loss weights of FMFA's objective (the released code's are all 1)."""

    asdm: float = 1.0
    id: float = 1.0
    mlm: float = 1.0
    efa: float = 1.0


class FMFAMethod(_IRRABase):
    """FMFA's training objective around a CLIP dual encoder (IRRA's structure).

    Args:
        encoder: the CLIP dual encoder (ViT-B/16 at 384x128 in the paper).
        num_classes: size of the ID classifier (training identities).
        alpha: A-SDM weight slope (0.1 in the released HEAD code, 10 in its first release).
        temperature: A-SDM temperature (0.02, fixed).
        efa_temperature: EFA token-pooling temperature (1.0 HEAD, 0.1 first release).
        margin_text: EFA margin of the text-vs-aggregated term (0.1).
        margin_patch: EFA margin of the patch-vs-aggregated term (0.9 HEAD, 0.1 first release).
        efa_chunk_size: EFA scores sample pairs in blocks of this size (memory flat in B).
        weights: per-term weights.
        cmt_depth, mlm, mask_token_id, mlm_probability, global_text_from_masked_caption: as
            :class:`~textreid.methods.IRRAMethod`; with the masked-caption quirk, EFA also sees
            the masked caption's tokens, as in the released code.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``. Loss terms (each
    already weighted; ``total`` is their sum): ``asdm`` (:class:`~textreid.losses.ASDMLoss` on
    the global features), ``efa`` (:class:`~textreid.losses.EFALoss` on the image patch tokens
    ``[B, P - 1, D]`` and all caption tokens ``[B, L, D]``), ``id``, and ``mlm`` with ``mlm``.

    Differences from the reference code: the released HEAD code sizes the ID classifier by the
    number of training *captions* (labels are still identities, so the extra logits only add
    negatives); here it is the number of identities, as in IRRA.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        alpha: float = 0.1,
        temperature: float = 0.02,
        efa_temperature: float = 1.0,
        margin_text: float = 0.1,
        margin_patch: float = 0.9,
        efa_chunk_size: int | None = 16,
        weights: FMFAWeights = FMFAWeights(),
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
        self.asdm = ASDMLoss(alpha=alpha, temperature=temperature)
        self.efa = EFALoss(
            temperature=efa_temperature,
            margin_text=margin_text,
            margin_patch=margin_patch,
            chunk_size=efa_chunk_size,
        )

    def retrieval_model(self) -> CLIPRetrievalModel:
        """Cosine on the global features, as FMFA retrieves, plus the tokens its EFA loss
        trains (caption: every position; image: the patch tokens) and EFA's token similarity
        (temperature, threshold, padding rule) as the head that re-ranks with them
        (:meth:`textreid.Retriever.token_reranker`)."""
        efa = self.efa
        head = SparseTokenSimilarity(
            temperature=efa.temperature,
            threshold=efa.threshold,
            include_padding=efa.include_padding,
        )
        return CLIPRetrievalModel(self.encoder, token_features=True, token_head=head)

    def _terms(self, step: _IRRAStep, pids: Tensor) -> dict[str, Tensor]:
        w = self.weights
        terms = {} if step.mlm is None else {"mlm": w.mlm * step.mlm}
        terms["asdm"] = w.asdm * self.asdm(step.image_feats, step.text_feats, pids)
        terms["efa"] = w.efa * self.efa(step.image_tokens[:, 1:], step.text_tokens)
        terms["id"] = w.id * self.id_loss(step.image_feats, step.text_feats, pids)
        return terms


register_method("fmfa", FMFAMethod.from_context)
