"""textreid: text-to-image person retrieval in PyTorch.

The most used names are importable from here; the subpackages hold the rest:
:mod:`textreid.losses` (the loss zoo), :mod:`textreid.heads`, :mod:`textreid.models`,
:mod:`textreid.retrieval`, :mod:`textreid.data`, :mod:`textreid.training`,
:mod:`textreid.testing`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from textreid._version import __version__

if TYPE_CHECKING:
    from textreid import data, heads, losses, models, retrieval, training
    from textreid._checks import eager_checks
    from textreid.config import CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
    from textreid.data import build_dataset, list_datasets, write_synthpedes
    from textreid.hub import ModelCard, Retriever
    from textreid.models import (
        CLIPDualEncoder,
        create_model,
        list_models,
        load_clip,
        register_model,
    )
    from textreid.retrieval import (
        GalleryIndex,
        RetrievalMetrics,
        SearchResult,
        evaluate,
        topk_search,
    )
    from textreid.tokenization import CLIPTokenizer
    from textreid.wordpiece import WordPieceTokenizer

# Imported on first use (PEP 562), so that ``import textreid.cli`` and ``textreid --help``
# do not pay for importing torch. Name -> the module that defines it.
_LAZY = {
    "eager_checks": "textreid._checks",
    "CLIPConfig": "textreid.config",
    "PreprocessConfig": "textreid.config",
    "TextConfig": "textreid.config",
    "VisionConfig": "textreid.config",
    "build_dataset": "textreid.data",
    "list_datasets": "textreid.data",
    "write_synthpedes": "textreid.data",
    "ModelCard": "textreid.hub",
    "Retriever": "textreid.hub",
    "CLIPDualEncoder": "textreid.models",
    "create_model": "textreid.models",
    "list_models": "textreid.models",
    "load_clip": "textreid.models",
    "register_model": "textreid.models",
    "GalleryIndex": "textreid.retrieval",
    "RetrievalMetrics": "textreid.retrieval",
    "SearchResult": "textreid.retrieval",
    "evaluate": "textreid.retrieval",
    "topk_search": "textreid.retrieval",
    "CLIPTokenizer": "textreid.tokenization",
    "WordPieceTokenizer": "textreid.wordpiece",
}

__all__ = [
    "CLIPConfig",
    "CLIPDualEncoder",
    "CLIPTokenizer",
    "GalleryIndex",
    "ModelCard",
    "PreprocessConfig",
    "RetrievalMetrics",
    "Retriever",
    "SearchResult",
    "TextConfig",
    "VisionConfig",
    "WordPieceTokenizer",
    "__version__",
    "build_dataset",
    "create_model",
    "data",
    "eager_checks",
    "evaluate",
    "heads",
    "list_datasets",
    "list_models",
    "load_clip",
    "losses",
    "models",
    "register_model",
    "retrieval",
    "topk_search",
    "training",
    "write_synthpedes",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        # Every subpackage, as when this module imported them all (``textreid.hub.X`` after
        # a bare ``import textreid``).
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
