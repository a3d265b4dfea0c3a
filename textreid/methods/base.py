"""What a trainable retrieval method is: encoders for retrieval plus a training objective,
and the registry through which a recipe names the method it trains."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from textreid._checks import check_tensor
from textreid._registry import Registry, import_submodules
from textreid.losses.combine import LossOutput
from textreid.models.clip import CLIPDualEncoder
from textreid.retrieval.models import CLIPRetrievalModel, RetrievalModel
from textreid.tokenization import CLIPTokenizer

__all__ = [
    "DualEncoderMethod",
    "MethodBuilder",
    "MethodContext",
    "RetrievalMethod",
    "get_method_builder",
    "list_methods",
    "register_method",
    "require_batch_keys",
]


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
        """The dual encoder whose outputs *are* the global embeddings, if there is one.

        Methods without a dual encoder return ``None``. What a retriever of the method keeps
        is :meth:`retrieval_model`.
        """
        return None

    def retrieval_model(self) -> RetrievalModel:
        """The method's retrieval side: its encoders and its way of scoring.

        The model shares this method's modules (no copy): export it after training, e.g.
        ``Retriever(method.retrieval_model(), tokenizer)``, which
        :func:`textreid.pipeline.train_recipe` saves for every recipe. The default wraps
        :meth:`retrieval_encoder` in a
        :class:`~textreid.retrieval.models.CLIPRetrievalModel` (cosine on the global
        features); methods that score otherwise override it.

        Raises:
            NotImplementedError: the method has no dual encoder and does not override this.
        """
        encoder = self.retrieval_encoder()
        if encoder is None:
            raise NotImplementedError(
                f"{type(self).__name__}.retrieval_model: the method has no dual encoder; "
                "override retrieval_model() to return a textreid.retrieval.models.RetrievalModel"
            )
        return CLIPRetrievalModel(encoder)


_D = TypeVar("_D", bound="DualEncoderMethod")


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

    @classmethod
    def from_context(cls: type[_D], context: MethodContext, **kwargs: Any) -> _D:
        """Build the method a recipe names (the builder to pass to :func:`register_method`).

        The default calls ``cls(context.clip_encoder(), context.num_classes, **kwargs)``, the
        constructor of the methods with an identity classifier; others override it.
        """
        build: Callable[..., _D] = cls
        return build(context.clip_encoder(), context.num_classes, **kwargs)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.encoder.encode_image(images)

    def encode_text(self, text_ids: Tensor) -> Tensor:
        return self.encoder.encode_text(text_ids)

    def retrieval_encoder(self) -> CLIPDualEncoder | None:
        return self.encoder


@dataclass(frozen=True)
class MethodContext:
    """What a recipe hands a method builder besides the method's own keyword arguments.

    Attributes:
        num_classes: training identities (the size of an identity classifier).
        tokenizer: the recipe's caption tokenizer, with its mask token when it names one.
        clip_encoder: builds the recipe's CLIP dual encoder (random init, or its pretrained
            weights). Only methods built on CLIP call it, so others never load weights.
        model_overrides: the recipe's model settings, for methods that build their own
            encoder instead of CLIP.
    """

    num_classes: int
    tokenizer: CLIPTokenizer
    clip_encoder: Callable[[], CLIPDualEncoder]
    model_overrides: Mapping[str, Any] = field(default_factory=dict)


#: ``builder(context, **method_kwargs) -> RetrievalMethod``, e.g. ``IRRAMethod.from_context``.
MethodBuilder = Callable[..., RetrievalMethod]


def _discover() -> None:
    # Every public module of this package registers its method when imported.
    import_submodules("textreid.methods")


_METHODS: Registry[MethodBuilder] = Registry("method", arg="builder", discover=_discover)


def register_method(name: str, builder: MethodBuilder, *, overwrite: bool = False) -> None:
    """Register ``builder(context, **method_kwargs)`` under ``name``, the name recipes use.

    Args:
        name: the method name a :class:`~textreid.recipes.Recipe` gives as ``method``.
        builder: called with a :class:`MethodContext` and the recipe's ``method_kwargs``.
        overwrite: replace an existing method of that name.

    Raises:
        ValueError: ``name`` is empty, or taken and ``overwrite`` is False.
        TypeError: ``name`` is not a str or ``builder`` is not callable.
    """
    _METHODS.register(name, builder, overwrite=overwrite, fn="register_method")


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return _METHODS.names()


def get_method_builder(name: str) -> MethodBuilder:
    """The builder registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered names and suggests the
            closest).
    """
    return _METHODS.get(name, fn="get_method_builder")
