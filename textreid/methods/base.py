"""What a trainable retrieval method is: encoders for retrieval plus a training objective."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from textreid._checks import check_tensor
from textreid.losses.combine import LossOutput
from textreid.models.clip import CLIPDualEncoder

__all__ = ["DualEncoderMethod", "RetrievalMethod", "require_batch_keys"]


def require_batch_keys(batch: dict[str, Tensor], keys: tuple[str, ...], fn: str) -> None:
    """Raise a clear error when a training batch lacks a key the method needs."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(
            f"{fn}: the batch has no {missing} (it has {sorted(batch)}); use the recipe's "
            "data pipeline or add these tensors to the batch"
        )
    for k in keys:
        check_tensor(batch[k], f"batch[{k!r}]", fn)


class RetrievalMethod(nn.Module, ABC):
    """A trainable method: ``method(batch) -> LossOutput`` plus retrieval embeddings.

    The :class:`~textreid.training.Trainer` calls ``forward``; evaluation calls
    :meth:`encode_image` / :meth:`encode_text` (higher cosine = more similar).
    """

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        """The training objective on one batch (``images``, ``text_ids``, ``pids``, ...)."""

    @abstractmethod
    def encode_image(self, images: Tensor) -> Tensor:
        """Global image embeddings ``[B, D]`` used for retrieval."""

    @abstractmethod
    def encode_text(self, text_ids: Tensor) -> Tensor:
        """Global caption embeddings ``[B, D]`` used for retrieval."""

    def retrieval_encoder(self) -> CLIPDualEncoder | None:
        """The dual encoder whose outputs *are* the retrieval embeddings, if there is one.

        :func:`textreid.pipeline.train_recipe` saves it as a :class:`~textreid.Retriever`;
        methods whose retrieval needs more than a dual encoder return ``None``.
        """
        return None


class DualEncoderMethod(RetrievalMethod):
    """A method whose retrieval model is a :class:`~textreid.models.CLIPDualEncoder`.

    Heads that only shape training (classifiers, cross-modal reasoning, MLM heads) live on
    the method and are dropped at export.

    Args:
        encoder: the dual encoder being trained.
        learnable_logit_scale: train the encoder's ``logit_scale``. The methods in textreid
            use fixed temperatures, as their papers do, so by default it is frozen: it then
            stays out of the optimizer and does not trip DDP's unused-parameter check.
    """

    def __init__(self, encoder: CLIPDualEncoder, *, learnable_logit_scale: bool = False) -> None:
        super().__init__()
        if not isinstance(encoder, CLIPDualEncoder):
            raise TypeError(
                f"{type(self).__name__}: encoder must be a CLIPDualEncoder, "
                f"got {type(encoder).__name__}"
            )
        self.encoder = encoder
        encoder.logit_scale.requires_grad_(learnable_logit_scale)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.encoder.encode_image(images)

    def encode_text(self, text_ids: Tensor) -> Tensor:
        return self.encoder.encode_text(text_ids)

    def retrieval_encoder(self) -> CLIPDualEncoder | None:
        return self.encoder
