"""Part-level correspondence with a commonality-based margin ranking loss (experimental).

Park, Jeong, Kim and Kwak, "Improving Text-based Person Search via Part-level Cross-modal
Correspondence", arXiv 2501.00318, 2024. A decoder of learnable part queries, shared by both
modalities, turns each encoder's tokens into part embeddings; part k of an image and part k
of a caption are compared directly. Only the paper's first page is readable: the query count,
decoder depth, loss weights and the exact commonality margin are **our choices**, and the
ranking loss is :class:`~textreid.losses.CommonalityMarginRankingLoss`'s provisional design.

.. math::
    \\mathcal{L} = \\mathcal{L}_{global}(v, t) + \\mathcal{L}_{id}(v, t)
    + \\mathcal{L}_{cmr}(P^v, P^t)

with :math:`v, t` the CLIP global features (retrieval uses them alone) and :math:`P^v, P^t`
``[B, K, D]`` the fine part embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from textreid._checks import check_choice, check_positive
from textreid.losses.combine import LossOutput
from textreid.losses.commonality import CommonalityMarginRankingLoss
from textreid.losses.id import IDLoss
from textreid.losses.infonce import InfoNCELoss
from textreid.losses.sdm import SDMLoss
from textreid.methods._text import caption_key_mask
from textreid.methods.base import DualEncoderMethod, register_method, require_batch_keys
from textreid.models.clip import CLIPDualEncoder
from textreid.models.part_decoder import PartQueryDecoder
from textreid.retrieval.models import CMRPartsModel

__all__ = ["CMRMethod", "CMRWeights"]


@dataclass(frozen=True)
class CMRWeights:
    """Loss weights (ours: all 1). ``align`` weighs the global loss (SDM or InfoNCE)."""

    align: float = 1.0
    id: float = 1.0
    cmr: float = 1.0


class CMRMethod(DualEncoderMethod):
    """Global alignment + ID + commonality-based margin ranking on part embeddings.

    A :class:`~textreid.models.PartQueryDecoder` (shared queries and weights, modality-specific
    key/value LayerNorms) reads the projected image tokens (class token included) and the
    caption's tokens up to its end token; its ``num_parts`` outputs are the fine part
    embeddings. The paper's coarse embeddings are not modelled (their use could not be read).

    Args:
        encoder: the CLIP dual encoder.
        num_classes: training identities (ID classifier size).
        num_parts: part queries K (ours: 6).
        decoder_depth: transformer layers of the decoder after its cross-attention (ours: 2).
        global_loss: ``"sdm"`` (:class:`~textreid.losses.SDMLoss`) or ``"infonce"``
            (:class:`~textreid.losses.InfoNCELoss`, identity positives) on the global features.
        temperature: temperature of the global loss (0.02, fixed).
        margin: part margin :math:`m_0` of the ranking loss (0.2).
        min_margin: smallest margin for the most common parts (0.05).
        negatives: ``"hardest"`` or ``"all"`` negatives per part.
        weights: per-term weights.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``. Loss terms (each
    already weighted; ``total`` is their sum): ``sdm`` or ``infonce``, ``id``, ``cmr``.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        num_parts: int = 6,
        decoder_depth: int = 2,
        global_loss: str = "sdm",
        temperature: float = 0.02,
        margin: float = 0.2,
        min_margin: float = 0.05,
        negatives: str = "hardest",
        weights: CMRWeights = CMRWeights(),
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        check_choice(global_loss, "global_loss", fn, ("sdm", "infonce"))
        check_positive(temperature, "temperature", fn)
        dim = encoder.config.embed_dim
        self.global_loss_name = global_loss
        self.weights = weights
        self.part_decoder = PartQueryDecoder(
            num_parts, dim, depth=decoder_depth, num_coarse=0, heads=max(1, dim // 64)
        )
        self.global_loss: SDMLoss | InfoNCELoss = (
            SDMLoss(temperature=temperature)
            if global_loss == "sdm"
            else InfoNCELoss(temperature=temperature)
        )
        self.id_loss = IDLoss(num_classes, dim)
        self.cmr = CommonalityMarginRankingLoss(margin, min_margin, negatives)

    def retrieval_model(self) -> CMRPartsModel:
        """The encoder and the part decoder as a ``cmr-parts`` retrieval model (shared, not
        copied)."""
        return CMRPartsModel(self.encoder, self.part_decoder)

    def part_embeddings(
        self, image_tokens: Tensor, text_tokens: Tensor, text_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Fine part embeddings ``([B, K, D], [B, K, D])`` from the encoders' tokens."""
        mask = caption_key_mask(text_ids, type(self).__name__)
        image_parts = self.part_decoder(image_tokens, "image").fine
        text_parts = self.part_decoder(text_tokens, "text", key_mask=mask).fine
        return image_parts, text_parts

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        ids, pids = batch["text_ids"], batch["pids"]
        image_feats, image_tokens = self.encoder.encode_image(batch["images"], return_tokens=True)
        text_feats, text_tokens = self.encoder.encode_text(ids, return_tokens=True)
        image_feats, text_feats = image_feats.float(), text_feats.float()
        image_parts, text_parts = self.part_embeddings(
            image_tokens.float(), text_tokens.float(), ids
        )
        w = self.weights
        terms = {
            self.global_loss_name: w.align * self.global_loss(image_feats, text_feats, pids),
            "id": w.id * self.id_loss(image_feats, text_feats, pids),
            "cmr": w.cmr * self.cmr(image_parts, text_parts, pids),
        }
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


register_method("cmr", CMRMethod.from_context)
