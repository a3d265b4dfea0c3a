"""UCA-style uncertainty-aware coarse-to-fine alignment around a CLIP dual encoder.

Deng, Chen, Li and Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence 2025, doi:10.1007/s44267-025-00078-x. Only the abstract is
public (no code, no formulas, no hyper-parameters): **every concrete choice here is ours**.
The abstract's three tasks become

.. math::
    \\mathcal{L} = \\mathcal{L}_{dist}(N^v, N^t) + \\mathcal{L}_{point}(z^v, z^t)
    + \\mathcal{L}_{rec}

with Gaussians :math:`N = \\mathcal N(\\mu, \\operatorname{diag}\\sigma^2)` per image and caption,
reparameterised points :math:`z = \\mu + \\epsilon \\odot \\sigma`, distribution contrast
(:class:`~textreid.losses.DistributionContrastLoss`), point contrast over inter- and
intra-modal points (:class:`~textreid.losses.PointContrastLoss`) and the uncertainty-weighted
reconstruction of masked attribute words
(:class:`~textreid.losses.AttributeMaskReconstructionLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid._checks import reads_are_free
from textreid.heads.gaussian import GaussianEmbedding, GaussianHead
from textreid.losses.attribute_mask import AttributeMaskReconstructionLoss
from textreid.losses.combine import LossOutput
from textreid.losses.distribution_contrast import DistributionContrastLoss
from textreid.losses.gaussian_kl import GaussianKLLoss
from textreid.losses.point_contrast import PointContrastLoss
from textreid.methods._text import caption_key_mask
from textreid.methods.base import (
    DualEncoderMethod,
    MethodContext,
    register_method,
    require_batch_keys,
)
from textreid.methods.irra import IRRA_MASK_TOKEN_ID
from textreid.models.clip import CLIPDualEncoder
from textreid.models.cross_modal import CrossModalTransformer, MLMHead
from textreid.retrieval.models import UCAGaussianModel
from textreid.text import attribute_token_sequences, mask_attribute_tokens

__all__ = ["UCAMethod", "UCAWeights"]


@dataclass(frozen=True)
class UCAWeights:
    """Loss weights of the UCA-style objective (ours: all 1). ``kl`` weighs the KL divergence
    of every Gaussian to the unit Gaussian (the prior that keeps variances from collapsing)."""

    distribution: float = 1.0
    point: float = 1.0
    reconstruction: float = 1.0
    kl: float = 1.0


def _variance_head(dim: int, init_log_var: float) -> GaussianHead:
    head = GaussianHead(dim, dim, token_pooling="attention", init_log_var=init_log_var)
    # The mean is the encoder's own global feature (see UCAMethod), so the head's mean branch
    # is never called; freezing it keeps the optimizer and weight decay off it.
    head.mean_proj.requires_grad_(False)
    if head.mean_pool is not None:
        head.mean_pool.requires_grad_(False)
    return head


class UCAMethod(DualEncoderMethod):
    """UCA-style training around a CLIP dual encoder (all formulas ours; paper not public).

    **Design choice: the Gaussian mean is the encoder's global feature**, L2-normalised
    (:math:`\\mu = n(f)`); only the log-variance comes from a
    :class:`~textreid.heads.GaussianHead` per modality (attention pooling over the projected
    tokens, caption padding masked). Retrieval by the means is therefore exactly retrieval by
    the encoder's outputs, and the exported :class:`~textreid.Retriever` (the CLIP towers alone)
    ranks as the trained model does. The heads' own mean branches are unused and frozen.

    Per batch: a random subset of the caption's attribute words is replaced by the mask token
    (:func:`~textreid.text.mask_attribute_tokens`, each occurrence with probability
    ``mask_prob``: the abstract masks attribute words *randomly*; the rate is ours); the image,
    caption and masked-caption Gaussians; ``num_samples`` reparameterised points of each;
    distribution contrast on the Gaussians and point contrast on the points, the masked
    captions taking part as further captions of their identities; the masked caption's tokens
    cross-attend (:class:`~textreid.models.CrossModalTransformer`) to the image's sampled
    points followed by its patch tokens, and an :class:`~textreid.models.MLMHead` reconstructs
    the words, weighted by :math:`1/(1 + u)` with :math:`u` the mean of the image's and the
    masked caption's :meth:`~textreid.heads.GaussianEmbedding.uncertainty` (detached); and
    the KL divergence of every Gaussian to the unit Gaussian.

    **Why the variances mean something (ours, measured).** Without a prior every variance
    only shrinks (sampling noise costs every contrastive term), so all end up alike: with the
    former defaults (squared 2-Wasserstein, no prior, unmasked captions only) a tiny model
    on SynthPEDES gave caption variances within 8% of each other, and removing a caption's
    attribute words raised its uncertainty for 57% of the test captions, a coin flip. Three
    choices change that: the KL prior (weight 1) holds the variances up where precision does
    not pay; the masked captions show the text head what a vaguer description of the same
    person looks like; and the distribution contrast uses the expected likelihood kernel
    (``"elk"``), :math:`\\tfrac12\\sum_d [\\Delta\\mu_d^2 / (\\sigma^2_{v,d} + \\sigma^2_{t,d})
    + \\log(\\sigma^2_{v,d} + \\sigma^2_{t,d})]`, in which a variance acts as a per-pair
    temperature: a caption whose positives cannot be told from the negatives lowers its loss
    by widening, a precise one by narrowing. Squared 2-Wasserstein has no such term (at equal
    variances its gradient on them is zero) and CSD's variance term is a shift, not a
    scale: with the prior and the masked captions they gave 16% and 10% on the same run,
    ELK 92% (correlation of the uncertainty with the number of attribute words -0.43). The
    cost we saw: test R@1 of the mean cosine 11.5 against 14.6 with Wasserstein (48 queries,
    a noisy estimate). The direction depends on the temperature (at 1 instead of 0.04 it
    reverses): re-check it (``tests/methods/test_uca_uncertainty.py``) when changing either.

    Args:
        encoder: the CLIP dual encoder.
        attribute_sequences: token-id sequences of the attribute words, e.g.
            ``attribute_token_sequences(tokenizer.encode)``.
        mask_token_id: id written over masked attribute tokens (IRRA's ``<|mask|>``, 49405).
        distance: Gaussian distance of the distribution contrast, any of
            :data:`~textreid.heads.GAUSSIAN_DISTANCES` (``"elk"``, see above).
        distribution_temperature: its temperature (0.04).
        point_temperature: point-contrast temperature on cosines (0.02).
        num_samples: points per item K (7, PCME's value).
        intra_modal_weight: weight of the image-image / caption-caption point terms (1).
        init_log_var: initial log-variance of the heads (-5).
        cmt_depth: layers of the reconstruction transformer.
        mask_prob: probability of masking each attribute-word occurrence (ours: 0.5; attribute
            words are about a quarter of a pedestrian caption's tokens, so about 13% of the
            tokens are masked, close to BERT's and IRRA's 15%, and half the attribute words
            stay as context).
        weights: per-term weights.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``. Loss terms (each
    already weighted; ``total`` is their sum): ``distribution``, ``point``,
    ``reconstruction``, ``kl``.

    Raises:
        ValueError, TypeError: bad ``mask_token_id``, ``attribute_sequences`` or
            ``mask_prob``, or settings the losses refuse.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        attribute_sequences: Sequence[Sequence[int]],
        *,
        mask_token_id: int = IRRA_MASK_TOKEN_ID,
        distance: str = "elk",
        distribution_temperature: float = 0.04,
        point_temperature: float = 0.02,
        num_samples: int = 7,
        intra_modal_weight: float = 1.0,
        init_log_var: float = -5.0,
        cmt_depth: int = 4,
        mask_prob: float = 0.5,
        weights: UCAWeights = UCAWeights(),
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        dim = encoder.config.embed_dim
        vocab = encoder.config.text.vocab_size
        if not 0 < mask_token_id < vocab:
            raise ValueError(f"{fn}: mask_token_id must lie in (0, {vocab}), got {mask_token_id}")
        self.attribute_sequences = [tuple(int(i) for i in s) for s in attribute_sequences]
        if not self.attribute_sequences or not all(self.attribute_sequences):
            raise ValueError(
                f"{fn}: attribute_sequences must be a non-empty list of non-empty id sequences"
            )
        if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)):
            raise TypeError(f"{fn}: mask_prob must be a float in (0, 1], got {mask_prob!r}")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"{fn}: mask_prob must be in (0, 1], got {mask_prob}")
        self.mask_token_id = mask_token_id
        self.mask_prob = float(mask_prob)
        self.num_samples = num_samples
        self.weights = weights
        self.image_head = _variance_head(dim, init_log_var)
        self.text_head = _variance_head(dim, init_log_var)
        self.distribution_loss = DistributionContrastLoss(distance, distribution_temperature)
        self.point_loss = PointContrastLoss(num_samples, point_temperature, intra_modal_weight)
        self.reconstruction = CrossModalTransformer(dim, depth=cmt_depth, heads=max(1, dim // 64))
        self.mlm_head = MLMHead(dim, vocab, depth=max(cmt_depth, 1))
        self.reconstruction_loss = AttributeMaskReconstructionLoss()
        self.kl_loss = GaussianKLLoss()

    @classmethod
    def from_context(cls, context: MethodContext, **kwargs: Any) -> UCAMethod:
        """Build UCA for a recipe: the attribute words tokenised by the recipe's tokenizer,
        whose mask token (when it has one) is the default ``mask_token_id``."""
        tokenizer = context.tokenizer
        if tokenizer.mask_token_id is not None:
            kwargs.setdefault("mask_token_id", tokenizer.mask_token_id)
        sequences = attribute_token_sequences(tokenizer.encode)
        return cls(context.clip_encoder(), sequences, **kwargs)

    def retrieval_model(self) -> UCAGaussianModel:
        """The encoder and the variance heads as a ``uca-gaussian`` retrieval model (shared,
        not copied), scored with the distance the distribution contrast trains."""
        return UCAGaussianModel(
            self.encoder, self.image_head, self.text_head, distance=self.distribution_loss.distance
        )

    def embed(
        self, images: Tensor, text_ids: Tensor
    ) -> tuple[GaussianEmbedding, GaussianEmbedding]:
        """The image and caption Gaussians (float32 fields ``[B, D]``)."""
        image = self._image_gaussian(*self.encoder.encode_image(images, return_tokens=True))
        text = self._text_gaussian(
            text_ids, *self.encoder.encode_text(text_ids, return_tokens=True)
        )
        return image, text

    # The variance heads' projections run in half under autocast; the embedding is float32.
    def _image_gaussian(self, feats: Tensor, tokens: Tensor) -> GaussianEmbedding:
        log_var = self.image_head(tokens.float()).log_var.float()
        return GaussianEmbedding(F.normalize(feats.float(), dim=-1), log_var)

    def _text_gaussian(self, ids: Tensor, feats: Tensor, tokens: Tensor) -> GaussianEmbedding:
        mask = caption_key_mask(ids, type(self).__name__)
        log_var = self.text_head(tokens.float(), key_mask=mask).log_var.float()
        return GaussianEmbedding(F.normalize(feats.float(), dim=-1), log_var)

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        ids, pids = batch["text_ids"], batch["pids"]
        image_feats, image_tokens = self.encoder.encode_image(batch["images"], return_tokens=True)
        image = self._image_gaussian(image_feats, image_tokens)
        text = self._text_gaussian(ids, *self.encoder.encode_text(ids, return_tokens=True))
        masking = mask_attribute_tokens(
            ids, self.attribute_sequences, self.mask_token_id, mask_prob=self.mask_prob
        )
        masked_feats, masked_tokens = self.encoder.encode_text(
            masking.input_ids, return_tokens=True
        )
        masked = self._text_gaussian(masking.input_ids, masked_feats, masked_tokens)
        # The attribute-masked captions join the contrast as further captions of their
        # identities: they describe the person less precisely, and this is where the text
        # variance learns what ambiguity looks like.
        captions = GaussianEmbedding(
            torch.cat([text.mean, masked.mean]), torch.cat([text.log_var, masked.log_var])
        )
        caption_pids = torch.cat([pids, pids])
        image_points = image.sample(self.num_samples)
        caption_points = captions.sample(self.num_samples)
        w = self.weights
        terms = {
            "distribution": w.distribution
            * self.distribution_loss(image, captions, image_pids=pids, text_pids=caption_pids),
            "point": w.point
            * self.point_loss(
                image,
                captions,
                image_pids=pids,
                text_pids=caption_pids,
                image_samples=image_points,
                text_samples=caption_points,
            ),
        }
        context = torch.cat([image_points, image_tokens.float()], dim=1)
        hidden = self.reconstruction(masked_tokens.float(), context)
        uncertainty = 0.5 * (image.uncertainty() + masked.uncertainty())
        labels = masking.labels
        if reads_are_free(hidden.device):
            # The vocabulary projection dominates the cost: project the masked positions only,
            # one row each. The mean over masked tokens is unchanged; selecting them is a host
            # read, free here. With nothing masked one unlabelled position keeps the (zero)
            # loss defined and connected.
            keep = (
                masking.mask
                if bool(masking.mask.any())
                else F.pad(masking.mask[:, :0], (0, 1), value=True)
            )
            hidden = hidden[:, : keep.shape[1]][keep][:, None]
            labels = labels[:, : keep.shape[1]][keep][:, None]
            uncertainty = uncertainty[:, None].expand_as(keep)[keep]
        # On an accelerator the selection would wait for the device every step: every
        # position is projected instead (same value, fixed shapes).
        terms["reconstruction"] = w.reconstruction * self.reconstruction_loss(
            self.mlm_head(hidden), labels, uncertainty
        )
        terms["kl"] = w.kl * (self.kl_loss(image) + self.kl_loss(captions))
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


register_method("uca", UCAMethod.from_context)
