"""textreid: text-to-image person retrieval in PyTorch.

The most used names are importable from here; the subpackages hold the rest:
:mod:`textreid.losses` (the loss zoo), :mod:`textreid.heads`, :mod:`textreid.models`,
:mod:`textreid.retrieval`, :mod:`textreid.data`, :mod:`textreid.training`,
:mod:`textreid.testing`.
"""

from textreid import data, heads, losses, models, retrieval, training
from textreid._checks import eager_checks
from textreid._version import __version__
from textreid.config import CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from textreid.data import build_dataset, list_datasets, write_synthpedes
from textreid.hub import ModelCard, Retriever
from textreid.models import CLIPDualEncoder, create_model, list_models, load_clip, register_model
from textreid.retrieval import GalleryIndex, RetrievalMetrics, SearchResult, evaluate, topk_search
from textreid.tokenization import CLIPTokenizer
from textreid.wordpiece import WordPieceTokenizer

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
