"""Pretrained retrievers: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A saved retriever is a folder (or a Hugging Face Hub repository) holding

- ``config.json``: ``format_version`` (2), ``textreid_version``, ``architecture`` (a name in
  :func:`~textreid.retrieval.models.list_architectures`), the model config, the scorer
  config, the preprocessing and the tokenizer settings, and the model-card data;
- ``model.safetensors``: the weights of :attr:`Retriever.model` (loaded strictly: every key
  must match);
- the tokenizer's files, when it is not the bundled CLIP one: ``vocab.json`` + ``merges.txt``
  (CLIP BPE) or ``vocab.txt`` (BERT WordPiece), the tokenizer class found by the config's
  ``tokenizer.type`` (:func:`~textreid.tokenization.register_tokenizer`);
- ``README.md``: a generated model card (metrics, dataset, recipe, citation);
- ``textreid_manifest.json``: the size and SHA-256 of each file above, written last.

A save is published in one step for readers: every file is staged under a temporary name,
then renamed into place, the manifest last, and loading checks each file it reads against
the manifest (retrying briefly while a save is in flight), so a load never mixes two saves.
Saves into one folder wait for each other on ``.textreid.lock``, which local loads hold
shared. Every size read from a file is bounded before anything is allocated: JSON files are
read with a size cap, config fields against :mod:`textreid.config`'s limits, and the model
is built on the ``meta`` device and materialised from the weights only once their keys and
shapes match. A local folder's symbolic links may not lead out of it.

Format version 1 folders (textreid 0.1: a CLIP dual encoder, ``architecture``
``"clip_dual_encoder"``, no scorer section) keep loading as ``clip-dual-encoder`` retrievers
scored by cosine.

Loading is our own code on ``huggingface_hub.hf_hub_download`` and ``safetensors``: a local
folder never touches the network; ``revision``, ``cache_dir``, ``local_files_only``,
``endpoint`` and ``token`` are passed through; every failure names the file and the remedy.
A Hugging Face ``CLIPModel`` repository (for example ``openai/clip-vit-base-patch16``) loads
too: it becomes a retriever initialised from CLIP, its position embeddings resampled to the
requested image size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, overload

import torch
from torch import Tensor

from textreid._checks import (
    check_choice,
    check_format_version,
    check_int,
    check_positive,
    check_tensor,
)
from textreid._io import (
    LOCK_NAME,
    MANIFEST,
    MAX_CONFIG_BYTES,
    FileDigest,
    folder_lock,
    open_regular,
    parse_json_object,
    parse_manifest,
    publish_files,
    read_bounded,
    resolve_in_folder,
)
from textreid._progress import Progress
from textreid._sources import (
    HUB_PREFIX,
    HubConnectionError,
    HubRepo,
    hub_options,
    is_repo_id,
    resolve_source,
)
from textreid._version import __version__
from textreid.config import PreprocessConfig
from textreid.data.transforms import build_transforms
from textreid.heads.token_similarity import SparseTokenSimilarity
from textreid.models.clip import CLIPDualEncoder
from textreid.models.load import load_clip, load_state_dict_strict
from textreid.retrieval.index import GalleryIndex, ShardedIndexWriter
from textreid.retrieval.models import (
    CLIPRetrievalModel,
    RetrievalModel,
    get_architecture,
    list_architectures,
)
from textreid.retrieval.scorers import (
    Features,
    Scorer,
    as_features,
    cat_rows,
    check_scorer,
    features_to,
    num_rows,
    scorer_from_config,
)
from textreid.retrieval.search import Reranker, SearchResult, topk_search
from textreid.retrieval.token_rerank import GalleryTokens, TokenFusion, TokenReranker
from textreid.tokenization import CLIPTokenizer, Tokenizer, get_tokenizer, list_tokenizers

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HUB_FORMAT_VERSION", "HubConnectionError", "ModelCard", "Retriever"]

HUB_FORMAT_VERSION = 2
# Format version 1 knew one architecture, under this name.
_V1_ARCHITECTURE = "clip_dual_encoder"
_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"
_CARD = "README.md"
_TOKENIZER_FILES = ("vocab.json", "merges.txt")
# What a model emits for token re-ranking beside its scorer's features.
_TOKEN_KEYS = ("tokens", "token_mask")
_TOKEN_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Precisions of inference (Retriever(dtype=...)).
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Images per forward pass when re-computing the candidates' tokens.
_IMAGE_BATCH = 64
# Waits between attempts while the files read disagree with the manifest (a save in flight).
_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# The description every card had by default up to textreid 0.2, trained or not.
_OLD_DEFAULT_DESCRIPTION = "A text-to-image person retrieval model trained with textreid."
_TEXTREID_BIB = (
    "@software{textreid,\n  title = {textreid: text-to-image person retrieval in PyTorch},\n"
    f"  version = {{{__version__}}},\n  year = {{2026}}\n}}"
)


class _HubApi(Protocol):
    def create_repo(
        self, repo_id: str, *, private: bool = ..., exist_ok: bool = ..., token: str | None = ...
    ) -> Any: ...

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | os.PathLike[str],
        commit_message: str | None = ...,
        revision: str | None = ...,
        token: str | None = ...,
    ) -> Any: ...


@dataclass
class ModelCard:
    """What the generated ``README.md`` says about a model, and what happened to it.

    A card says whether textreid trained the model: the default (``trained=False``) is a
    model built from a config or given as is (random initialisation, or weights trained
    elsewhere), ``base_model`` naming the weights it started from when known.
    :func:`textreid.pipeline.train_recipe` fills the training run: recipe, dataset,
    epochs, seed and the test metrics.

    Attributes:
        description: one paragraph on what the model is (default: derived from the fields).
        recipe: the training recipe name (e.g. ``"irra"``).
        dataset: the training dataset (e.g. ``"CUHK-PEDES"``).
        metrics: text-to-image test metrics in percent, e.g. ``{"R1": 73.4, "mAP": 66.1}``.
        citation: BibTeX of the method's paper(s).
        license: SPDX id of the weights' license.
        tags: extra Hub tags.
        trained: whether textreid trained the model (recipe, dataset, epochs, seed say how).
        epochs: epochs trained.
        seed: the training run's seed.
        base_model: the weights the model was initialised from (a Hub id or a path).
    """

    description: str | None = None
    recipe: str | None = None
    dataset: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    citation: str | None = None
    license: str = "mit"
    tags: list[str] = field(default_factory=list)
    trained: bool = False
    epochs: int | None = None
    seed: int | None = None
    base_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "recipe": self.recipe,
            "dataset": self.dataset,
            "metrics": dict(self.metrics),
            "citation": self.citation,
            "license": self.license,
            "tags": list(self.tags),
            "trained": self.trained,
            "epochs": self.epochs,
            "seed": self.seed,
            "base_model": self.base_model,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelCard.from_dict: unknown keys {unknown}")
        values = dict(data)
        if "trained" not in values:
            # Cards of textreid <= 0.2 had no flag; a training run always set the recipe.
            values["trained"] = values.get("recipe") is not None
            if values.get("description") == _OLD_DEFAULT_DESCRIPTION:
                values["description"] = None
        return cls(**values)

    def summary(self) -> str:
        """One phrase on what happened to the model, e.g. ``"trained: recipe 'irra' on
        CUHK-PEDES, 60 epochs, seed 1"`` or ``"untrained"``."""
        if not self.trained:
            return "untrained" + (f" (from {self.base_model})" if self.base_model else "")
        details = self._run_details()
        return f"trained: {details}" if details else "trained"

    def _run_details(self) -> str:
        head = f"recipe {self.recipe!r}" if self.recipe else ""
        if self.dataset:
            head = f"{head} on {self.dataset}".strip()
        epochs = f"{self.epochs} epochs" if self.epochs is not None else ""
        seed = f"seed {self.seed}" if self.seed is not None else ""
        return ", ".join(p for p in (head, epochs, seed) if p)

    def _default_description(self) -> str:
        if self.trained:
            details = self._run_details()
            return "A text-to-image person retrieval model trained with textreid" + (
                f" ({details})." if details else "."
            )
        origin = (
            f"initialised from {self.base_model} and not fine-tuned by textreid"
            if self.base_model
            else "built from its config (random initialisation) or given to textreid as is"
        )
        return (
            f"A text-to-image person retrieval model {origin}. textreid did not train it, and "
            "its retrieval quality has not been measured."
        )

    def render(self, repo_hint: str = "path/or/org-name") -> str:
        """The model card as Markdown with Hub YAML front matter."""
        tags = ["textreid", "text-to-image-retrieval", "person-retrieval", *self.tags]
        lines = ["---", "library_name: textreid", f"license: {self.license}", "tags:"]
        lines += [f"- {t}" for t in tags]
        if self.dataset:
            lines += ["datasets:", f"- {self.dataset}"]
        if self.base_model:
            lines.append(f"base_model: {self.base_model}")
        description = self.description or self._default_description()
        lines += ["---", "", "# textreid retriever", "", description, "", "## Training", ""]
        if self.trained:
            rows = [
                ("Recipe", f"`{self.recipe}`" if self.recipe else None),
                ("Dataset", self.dataset),
                ("Epochs", self.epochs),
                ("Seed", self.seed),
                ("Initialised from", self.base_model),
            ]
            lines += [f"- {name}: {value}" for name, value in rows if value is not None]
        else:
            lines.append("Not trained by textreid: no recipe, dataset or metrics to report.")
        lines.append("")
        if self.metrics:
            names = list(self.metrics)
            lines += ["## Text-to-image retrieval (%, test split)", ""]
            lines.append("| " + " | ".join(names) + " |")
            lines.append("|" + "---|" * len(names))
            lines.append("| " + " | ".join(f"{self.metrics[n]:.2f}" for n in names) + " |")
            lines.append("")
        lines += [
            "## Usage",
            "",
            "```python",
            "import textreid",
            "",
            f'retriever = textreid.Retriever.from_pretrained("{repo_hint}")',
            'gallery = retriever.index_images(["img1.jpg", "img2.jpg"])',
            'hits = retriever.search("a woman in a red coat carrying a white bag", gallery, k=5)',
            "```",
            "",
            "## Citation",
            "",
            "```bibtex",
            (self.citation or "").strip() or _TEXTREID_BIB,
            "```",
            "",
        ]
        return "\n".join(lines)


class _Source:
    """Where files come from: a local folder or a hub repository."""

    def __init__(self, name_or_path: str | os.PathLike[str], fn: str, hub: dict[str, Any]) -> None:
        self.fn = fn
        self.hub = hub
        resolved = resolve_source(name_or_path, fn, files=False)
        self.folder = resolved.folder
        self.repo_id = resolved.repo_id or ""
        self._repo = HubRepo(self.repo_id, hub, fn) if resolved.repo_id else None

    @property
    def unreachable(self) -> bool:
        return self._repo is not None and self._repo.unreachable

    def describe(self) -> str:
        """The folder, or the Hub id with its revision when one was asked for."""
        if self.folder is not None:
            return str(self.folder)
        revision = self.hub.get("revision")
        return HUB_PREFIX + self.repo_id + (f"@{revision}" if revision else "")

    def get(self, filename: str, *, required: bool = True) -> Path | None:
        if self.folder is not None:
            if resolve_in_folder(self.folder, filename, self.fn) is not None:
                # The unresolved path: parsers that open it themselves follow the same link.
                return self.folder / filename
            if not required:
                return None
            raise FileNotFoundError(
                f"{self.fn}: {self.folder} has no file {filename!r}; a saved retriever "
                f"folder holds {_CONFIG} and {_WEIGHTS} (write one with save_pretrained)"
            )
        assert self._repo is not None
        return self._repo.get(filename, required=required)

    def reading(self) -> contextlib.AbstractContextManager[bool]:
        """Hold a local folder's lock shared while its files are read; yield whether held."""
        if self.folder is None:
            return contextlib.nullcontext(False)
        return folder_lock(self.folder, shared=True)


class _Mismatch(Exception):
    """A file read differs from the manifest of the same load."""


class _Snapshot:
    """The files of one load, each checked against the manifest when the save has one."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.manifest: dict[str, FileDigest] | None = None

    def read_manifest(self) -> None:
        path = self.source.get(MANIFEST, required=False)
        if path is not None:
            data = read_bounded(path, max_bytes=MAX_CONFIG_BYTES, fn=self.source.fn)
            self.manifest = parse_manifest(data, str(path), self.source.fn)

    def check(self, name: str, found: FileDigest) -> None:
        if self.manifest is None:
            return
        expected = self.manifest.get(name)
        if expected is None:
            raise _Mismatch(f"{name} is not listed in {MANIFEST}")
        if found != expected:
            raise _Mismatch(
                f"{name} has {found.size} bytes (sha256 {found.sha256[:16]}...) where "
                f"{MANIFEST} lists {expected.size} bytes (sha256 {expected.sha256[:16]}...)"
            )

    def read_json(self, name: str) -> tuple[Path, dict[str, Any], bytes]:
        """Path, content and bytes of a JSON file (checked by :meth:`check` by the caller)."""
        path = self.source.get(name)
        assert path is not None
        data = read_bounded(path, max_bytes=MAX_CONFIG_BYTES, fn=self.source.fn)
        return path, parse_json_object(data, str(path), self.source.fn), data

    @contextlib.contextmanager
    def pinned(self, name: str) -> Iterator[Path]:
        """Yield the path of ``name`` to a parser that opens it itself.

        The file is hashed through a handle held open meanwhile, and afterwards the path
        must still name that same file: writers replace files by renaming, never rewrite
        them, so the parser read the very bytes that were checked.
        """
        path = self.source.get(name)
        assert path is not None
        with open_regular(path, self.source.fn) as f:
            before = os.fstat(f.fileno())
            if self.manifest is not None:
                self.check(name, FileDigest.of_file(f))
            yield path
            after = os.stat(path)
        if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != (
            before.st_dev,
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        ):
            raise _Mismatch(f"{name} was replaced while it was read")


def _read_safetensors(path: Path, fn: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"{fn}: cannot read weights file {path} ({exc}); it is truncated or corrupt. "
            "Delete it (or its Hub cache entry) and download or save it again"
        ) from exc


def _resolve_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _architecture_class(
    name: object, version: int, config_path: Path, fn: str
) -> type[RetrievalModel]:
    """The registered model class of the architecture ``config.json`` names."""
    if version == 1:
        if name != _V1_ARCHITECTURE:
            raise ValueError(
                f"{fn}: {config_path} (format_version 1) describes architecture {name!r}; "
                f"version 1 files hold {_V1_ARCHITECTURE!r} only: the file is corrupt"
            )
        return CLIPRetrievalModel
    if not isinstance(name, str) or name not in list_architectures():
        raise ValueError(
            f"{fn}: {config_path} names architecture {name!r}, which is not registered "
            f"(registered: {', '.join(list_architectures())}). Import the package that defines "
            "it and call textreid.retrieval.models.register_architecture before loading, or "
            "upgrade textreid"
        )
    return get_architecture(name)


def _check_scorer_kind(scorer: Scorer, saved: Scorer, config_path: str, fn: str) -> None:
    if check_scorer(scorer, fn).kind != saved.kind:
        raise ValueError(
            f"{fn}: scorer is a {scorer.kind!r} scorer but {config_path} is scored by a "
            f"{saved.kind!r} one; pass a {type(saved).__name__} (e.g. with other settings) "
            "or no scorer"
        )


class Retriever:
    """A text-to-image person retriever: model + scorer + tokenizer + image preprocessing.

    Three lines in a notebook::

        retriever = textreid.Retriever.from_pretrained("org/textreid-irra-cuhk")
        gallery = retriever.index_images(sorted(Path("gallery").glob("*.jpg")))
        hits = retriever.search("a young woman in a red coat, black trousers", gallery, k=5)

    Any trained method becomes a retriever through its
    :class:`~textreid.retrieval.models.RetrievalModel` (``method.retrieval_model()``), and
    searches score the way the method does: cosine for CLIP-style and single-stream models,
    a Gaussian distance for UCA (hits come with uncertainties), global + part similarity for
    the part-level method.

    Args:
        model: a :class:`~textreid.retrieval.models.RetrievalModel`, or a
            :class:`~textreid.models.CLIPDualEncoder` (wrapped as ``clip-dual-encoder``).
        tokenizer: the caption tokenizer (default: the bundled CLIP BPE); any
            :class:`~textreid.tokenization.Tokenizer`, e.g. a
            :class:`~textreid.wordpiece.WordPieceTokenizer` for BERT-embedding models.
        preprocess: image preprocessing; defaults to the model's image size with CLIP's
            normalisation.
        card: model-card data written by :meth:`save_pretrained`.
        device: where the model runs (default: CPU).
        scorer: how searches score (default ``model.scorer()``); it must be of the model's
            scorer kind, e.g. a :class:`~textreid.retrieval.scorers.GaussianScorer` with
            another distance for a Gaussian model.
        dtype: the precision of inference: ``torch.float32`` (default), ``torch.float16`` or
            ``torch.bfloat16``. The encoder (the model's ``encoder``, the bulk of the weights
            and compute) is cast to it and runs in it; heads that compute in float32 by
            design (Gaussian heads, part decoders) stay float32; the features come back in
            ``dtype``, and search scores are accumulated and returned in float32. Half
            precision halves the memory of the encoder and the gallery features; the top-k
            matches float32 wherever scores differ by more than the half-precision rounding.

    Attributes:
        retrieval_model: the :class:`~textreid.retrieval.models.RetrievalModel`.
        scorer: the default scorer of :meth:`search`.
        source: where :meth:`from_pretrained` loaded the retriever from (a folder or a Hub
            repo id), ``None`` for one built in code.

    Raises:
        TypeError: ``model`` or ``scorer`` of the wrong type.
        ValueError: ``preprocess.image_size`` differs from the model's input size, the
            tokenizer's context length from the model's, ``scorer`` is of another kind
            than the model's, or ``dtype`` is not float32, float16 or bfloat16.
    """

    def __init__(
        self,
        model: RetrievalModel | CLIPDualEncoder,
        tokenizer: Tokenizer | None = None,
        preprocess: PreprocessConfig | None = None,
        *,
        card: ModelCard | None = None,
        device: str | torch.device | None = None,
        scorer: Scorer | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        fn = "Retriever"
        _check_dtype(dtype, fn)
        if isinstance(model, CLIPDualEncoder):
            model = CLIPRetrievalModel(model)
        if not isinstance(model, RetrievalModel):
            raise TypeError(
                f"{fn}: model must be a RetrievalModel or a CLIPDualEncoder, "
                f"got {type(model).__name__}"
            )
        native = model.scorer()
        if scorer is None:
            scorer = native
        elif check_scorer(scorer, fn).kind != native.kind:
            raise ValueError(
                f"{fn}: scorer is a {scorer.kind!r} scorer but the {model.architecture!r} "
                f"model's features are scored by a {native.kind!r} one; pass a "
                f"{type(native).__name__} or no scorer"
            )
        image_size = model.image_size
        preprocess = preprocess or PreprocessConfig(image_size=image_size)
        if tuple(preprocess.image_size) != image_size:
            raise ValueError(
                f"{fn}: preprocess.image_size {preprocess.image_size} differs from the model's "
                f"input size {image_size}"
            )
        self.tokenizer: Tokenizer = tokenizer or CLIPTokenizer(context_length=model.context_length)
        if self.tokenizer.context_length != model.context_length:
            raise ValueError(
                f"{fn}: tokenizer.context_length {self.tokenizer.context_length} differs from "
                f"the model's {model.context_length}"
            )
        self.preprocess = preprocess
        self.card = card or ModelCard()
        self.device = _resolve_device(device)
        self.retrieval_model = model.to(self.device).eval()
        self.scorer = scorer
        self.source: str | None = None
        self._fingerprint: str | None = None
        # A model handed over in half precision keeps running in it.
        self._dtype = next(
            (p.dtype for p in _encoder(model).parameters() if p.dtype in _DTYPES), torch.float32
        )
        if dtype is not None:
            self.to(dtype=dtype)
        self._transform = build_transforms(
            preprocess.image_size,
            train=False,
            mean=preprocess.mean,
            std=preprocess.std,
            interpolation=preprocess.interpolation,
        )

    @property
    def model(self) -> torch.nn.Module:
        """The module holding the weights (what ``model.safetensors`` stores): the
        :class:`~textreid.models.CLIPDualEncoder` of a ``clip-dual-encoder`` retriever, as in
        textreid 0.1; the retrieval model itself for the other architectures."""
        return self.retrieval_model.weights_module()

    @property
    def architecture(self) -> str:
        """The retrieval model's architecture name (as in ``config.json``)."""
        return self.retrieval_model.architecture

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the weights, the encoders and the features they return."""
        return self._dtype

    def __repr__(self) -> str:
        source = repr(self.source) if self.source is not None else "None (built in code)"
        return (
            f"Retriever(architecture={self.architecture!r}, "
            f"embed_dim={_embed_dim(self.retrieval_model)}, "
            f"scorer={self.scorer.kind!r}, device={self.device}, dtype={self.dtype}, "
            f"source={source}, {self.card.summary()})"
        )

    @property
    def model_fingerprint(self) -> str:
        """:meth:`~textreid.retrieval.models.RetrievalModel.fingerprint` of the model,
        computed once (on first use) and recorded in the indexes :meth:`index_images` builds."""
        if self._fingerprint is None:
            self._fingerprint = self.retrieval_model.fingerprint()
        return self._fingerprint

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        endpoint: str | None = None,
        token: str | bool | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        image_size: tuple[int, int] | None = None,
        scorer: Scorer | None = None,
    ) -> Retriever:
        """Load a retriever from a local folder or a Hub repository.

        ``name_or_path`` is a folder written by :meth:`save_pretrained` (never touches the
        network), ``"org/repo"`` or ``"hf-hub:org/repo"``. A Hugging Face CLIP repository
        (``config.json`` with ``model_type: clip``) gives a retriever initialised from CLIP,
        with position embeddings resampled to ``image_size`` (default ``(384, 128)``, the
        TIPR input size).

        The model is built by the class registered for the ``architecture`` that
        ``config.json`` names (:func:`~textreid.retrieval.models.register_architecture`), on
        the ``meta`` device, and filled from the weights once their keys and shapes match.

        Args:
            name_or_path: folder or repo id.
            revision: branch, tag or commit to load (hub only).
            cache_dir: Hub cache folder (hub only).
            local_files_only: never use the network; the files must be in the cache.
            endpoint: Hub endpoint URL (e.g. a mirror or :class:`~textreid.testing.FakeHub`).
            token: Hub token for private repositories.
            device: where the model runs.
            dtype: the precision of inference, ``torch.float16`` or ``torch.bfloat16``
                for half precision (see :class:`Retriever`); default float32.
            image_size: only for CLIP repositories: the input ``(H, W)``.
            scorer: score searches with this instead of the saved scorer; it must be of the
                saved scorer's kind (e.g. a ``GaussianScorer`` with another distance).

        Raises:
            FileNotFoundError: a missing folder, repository, revision or file (named).
            ValueError: a corrupt or truncated file, a file that is not a regular file or
                is too large, a symbolic link out of the folder, a config size above
                textreid's limits, an unknown ``format_version`` or architecture (register
                it first), a ``scorer`` of another kind than the saved one, weights that do
                not match the config (keys listed), or files that still disagree with
                ``textreid_manifest.json`` after a few retries.
        """
        fn = "Retriever.from_pretrained"
        _check_dtype(dtype, fn)
        hub = hub_options(
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            endpoint=endpoint,
            token=token,
        )
        source = _Source(name_or_path, fn, hub)
        attempt = 0
        while True:
            with source.reading() as locked:
                try:
                    retriever = cls._load(source, name_or_path, hub, image_size, device, scorer)
                    break
                except _Mismatch as exc:
                    # Under the lock no save can be in flight: waiting would not help.
                    if locked or attempt == len(_RETRY_DELAYS_S):
                        in_flight = ""
                        if not locked:
                            in_flight = f", or a save into it still ran after {attempt + 1} tries"
                        raise ValueError(
                            f"{fn}: {source.describe()}: {exc}. The file is truncated or "
                            f"corrupt, or was changed after saving{in_flight}. Save the "
                            "retriever again (for a Hub repository, delete its cache entry), "
                            f"or delete {MANIFEST} to load a deliberately edited folder"
                        ) from None
            time.sleep(_RETRY_DELAYS_S[attempt])
            attempt += 1
        retriever.source = source.describe()
        if dtype is not None:
            retriever.to(dtype=dtype)
        return retriever

    @classmethod
    def _load(
        cls,
        source: _Source,
        name_or_path: str | os.PathLike[str],
        hub: dict[str, Any],
        image_size: tuple[int, int] | None,
        device: str | torch.device | None,
        scorer: Scorer | None,
    ) -> Retriever:
        fn = source.fn
        snapshot = _Snapshot(source)
        config_path, config, config_bytes = snapshot.read_json(_CONFIG)
        if "format_version" not in config and config.get("model_type") == "clip":
            retriever = cls._from_clip_repo(source, name_or_path, hub, image_size, device)
            if scorer is not None:
                _check_scorer_kind(scorer, retriever.scorer, str(config_path), fn)
                retriever.scorer = scorer
            return retriever
        if image_size is not None:
            raise ValueError(
                f"{fn}: image_size applies to CLIP repositories only; a textreid retriever "
                "keeps the input size it was trained with"
            )
        snapshot.read_manifest()
        snapshot.check(_CONFIG, FileDigest.of_bytes(config_bytes))
        return cls._from_textreid(snapshot, config, config_path, device, scorer)

    @classmethod
    def _from_textreid(
        cls,
        snapshot: _Snapshot,
        config: Mapping[str, Any],
        config_path: Path,
        device: str | torch.device | None,
        scorer: Scorer | None,
    ) -> Retriever:
        fn = "Retriever.from_pretrained"
        version = check_format_version(
            config.get("format_version"), HUB_FORMAT_VERSION, str(config_path), fn
        )
        sections = ("model", "preprocess", "tokenizer") + (("scorer",) if version > 1 else ())
        for key in sections:
            if not isinstance(config.get(key), dict):
                raise ValueError(f"{fn}: {config_path} has no {key!r} section; the file is corrupt")
        model_cls = _architecture_class(config.get("architecture"), version, config_path, fn)
        # Nothing is allocated for the config's sizes until the weights are known to fit.
        with torch.device("meta"):
            try:
                model = model_cls.from_config(config["model"])
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{fn}: {config_path} has a {model_cls.architecture!r} model section that "
                    f"textreid refuses ({exc}); the file is corrupt or was edited: save the "
                    "retriever again"
                ) from None
        native = model.scorer()
        saved = native
        if version > 1:
            saved = scorer_from_config(config["scorer"], source=str(config_path))
            if saved.kind != native.kind:
                raise ValueError(
                    f"{fn}: {config_path} pairs a {model_cls.architecture!r} model with a "
                    f"{saved.kind!r} scorer, but that model's features are scored by a "
                    f"{native.kind!r} one; the file was edited or written by another tool: "
                    "fix its 'scorer' section or save the retriever again"
                )
        if scorer is not None:
            _check_scorer_kind(scorer, saved, str(config_path), fn)
        preprocess = PreprocessConfig.from_dict(config["preprocess"])
        tok_cfg = config["tokenizer"]
        tok_type = tok_cfg.get("type")
        if not isinstance(tok_type, str) or tok_type not in list_tokenizers():
            raise ValueError(
                f"{fn}: {config_path} names tokenizer type {tok_type!r}, which is not "
                f"registered (registered: {', '.join(list_tokenizers())}). Import the package "
                "that defines it and call textreid.tokenization.register_tokenizer before "
                "loading, or upgrade textreid"
            )
        tok_cls = get_tokenizer(tok_type)
        listed = tok_cfg.get("files", [])
        # Only names the class declares are opened; its from_config refuses any other list.
        names = [n for n in tok_cls.file_names if isinstance(listed, list) and n in listed]
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(snapshot.pinned(name)) for name in names]
            tok_folder = paths[-1].parent if paths else None
            tokenizer = tok_cls.from_config(tok_cfg, tok_folder)
        with snapshot.pinned(_WEIGHTS) as weights_path:
            state = _read_safetensors(weights_path, fn)
        load_state_dict_strict(model.weights_module(), state, assign=True)
        unfilled = [
            name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta
        ]
        if unfilled:
            raise ValueError(
                f"{fn}: the {model_cls.architecture!r} model has tensors that "
                f"{weights_path} cannot fill: {unfilled[:8]}; an architecture must keep every "
                "tensor in weights_module()'s state dict (no non-persistent buffers)"
            )
        card = ModelCard.from_dict(config.get("card", {}))
        return cls(model, tokenizer, preprocess, card=card, device=device, scorer=scorer or saved)

    @classmethod
    def _from_clip_repo(
        cls,
        source: _Source,
        name_or_path: str | os.PathLike[str],
        hub: dict[str, Any],
        image_size: tuple[int, int] | None,
        device: str | torch.device | None,
    ) -> Retriever:
        size = image_size or (384, 128)
        # The "hf-hub:" prefix keeps load_clip from taking a same-named local path instead.
        target = source.folder if source.folder is not None else HUB_PREFIX + source.repo_id
        # A Hub found unreachable for config.json is not asked again for the weights.
        hub_kw = {**hub, "local_files_only": True} if source.unreachable else hub
        model = load_clip(target, image_size=size, **(hub_kw if source.folder is None else {}))
        tokenizer: CLIPTokenizer | None = None
        vocab = source.get(_TOKENIZER_FILES[0], required=False)
        merges = source.get(_TOKENIZER_FILES[1], required=False)
        if vocab is not None and merges is not None:
            tokenizer = CLIPTokenizer.from_hf_files(
                vocab_file=vocab,
                merges_file=merges,
                context_length=model.config.text.context_length,
            )
        card = ModelCard(
            description=f"CLIP weights from {os.fspath(name_or_path)}, not fine-tuned for "
            "person retrieval (zero-shot).",
            base_model=source.repo_id or os.fspath(name_or_path),
        )
        preprocess = PreprocessConfig(image_size=size, interpolation="bicubic")
        return cls(model, tokenizer, preprocess, card=card, device=device)

    # -- saving ----------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` content."""
        return {
            "format_version": HUB_FORMAT_VERSION,
            "textreid_version": __version__,
            "architecture": self.retrieval_model.architecture,
            "model": self.retrieval_model.config_dict(),
            "scorer": self.scorer.to_config(),
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": self.tokenizer.to_config(),
            "card": self.card.to_dict(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json``, ``model.safetensors``, tokenizer files, ``README.md`` and
        ``textreid_manifest.json``.

        Every file is first written under a temporary name; only when all are complete are
        they renamed into place, the manifest (each file's size and SHA-256) last. A failed
        save leaves the folder as it was, and :meth:`from_pretrained` never mixes the files
        of two saves. Saves into one folder wait for each other (a lock on
        ``.textreid.lock``, left in the folder). Files get the user's umask.

        Returns:
            The folder.

        Raises:
            OSError: The folder cannot be created or written (read-only, disk full, a path
                through a file); the message names the folder and the cause.
        """
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        fn = "Retriever.save_pretrained"
        out = Path(save_directory)
        # Weights are stored in float32 whatever the inference dtype; integer buffers (a
        # BatchNorm's num_batches_tracked) keep their own.
        state = {
            k: v.detach()
            .to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
            .contiguous()
            for k, v in self.model.state_dict().items()
        }
        metadata = {"format": "pt", "textreid_version": __version__}
        files: dict[str, bytes] = {}
        if self.tokenizer.to_config()["files"]:
            files.update(self.tokenizer.vocabulary_files())
        files[_CONFIG] = (json.dumps(self.config_dict(), indent=2) + "\n").encode("utf-8")
        files[_CARD] = self.card.render(out.name).encode("utf-8")
        writers: dict[str, Callable[[Path], object]] = {
            _WEIGHTS: lambda tmp: save_file(state, str(tmp), metadata=metadata)
        }
        for name, data in files.items():
            writers[name] = functools.partial(Path.write_bytes, data=data)
        try:
            out.mkdir(parents=True, exist_ok=True)
            with folder_lock(out):
                publish_files(out, writers)
        except (OSError, SafetensorError) as exc:
            code = exc.errno if isinstance(exc, OSError) else None
            cause = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            message = f"{fn}: cannot save to {out} ({cause}); the folder keeps its previous files"
            if code in (errno.EACCES, errno.EPERM, errno.EROFS):
                message += ". Choose a folder you can write to"
            elif code in (errno.ENOSPC, errno.EDQUOT):
                message += ". Free some disk space or choose another disk"
            kind = type(exc) if isinstance(exc, OSError) else OSError
            raise (kind(message) if code is None else kind(code, message)) from exc
        return out

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        commit_message: str = "Upload textreid retriever",
        revision: str | None = None,
        endpoint: str | None = None,
        api: _HubApi | None = None,
    ) -> str:
        """Save to a temporary folder and upload it to ``repo_id`` (created if needed).

        Args:
            repo_id: ``"org/name"``.
            private: create the repository as private.
            token: Hub token (default: the logged-in user's).
            commit_message: the commit message.
            revision: target branch.
            endpoint: Hub endpoint URL.
            api: an ``huggingface_hub.HfApi``-like object (tests pass
                :class:`~textreid.testing.FakeHubApi`); default ``HfApi(endpoint=endpoint)``.

        Returns:
            Whatever ``upload_folder`` returns (the commit URL or hash).
        """
        fn = "Retriever.push_to_hub"
        if not is_repo_id(repo_id):
            raise ValueError(f"{fn}: repo_id must look like 'org/name', got {repo_id!r}")
        client: Any = api
        if client is None:
            from huggingface_hub import HfApi

            client = HfApi(endpoint=endpoint, token=token)
        client.create_repo(repo_id, private=private, exist_ok=True, token=token)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            # A private folder no other writer can know of: its lock file serves nobody.
            (Path(tmp) / LOCK_NAME).unlink(missing_ok=True)
            return client.upload_folder(  # type: ignore[no-any-return]
                repo_id=repo_id,
                folder_path=tmp,
                commit_message=commit_message,
                revision=revision,
                token=token,
            )

    # -- encoding and search ---------------------------------------------------------------
    def to(
        self, device: str | torch.device | None = None, *, dtype: torch.dtype | None = None
    ) -> Retriever:
        """Move the model to ``device`` and/or cast it to ``dtype`` (float32, float16 or
        bfloat16, see :class:`Retriever`); returns ``self``.

        The :attr:`model_fingerprint` stays that of the float32 weights, so an index built
        in one precision is searched by the same model in another.

        Raises:
            ValueError: a ``dtype`` other than float32, float16 or bfloat16.
        """
        _check_dtype(dtype, "Retriever.to")
        if device is not None:
            self.device = torch.device(device)
            self.retrieval_model.to(self.device)
        if dtype is not None and dtype != self._dtype:
            if self._dtype == torch.float32:
                self.model_fingerprint  # noqa: B018  (computed while the weights are exact)
            _encoder(self.retrieval_model).to(dtype=dtype)
            self._dtype = dtype
        return self

    def _cast(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._dtype == torch.float32:
            return features
        return {k: v.to(self._dtype) if v.is_floating_point() else v for k, v in features.items()}

    @staticmethod
    def _public(features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        # Models with global features only (CLIP, IVT) keep the tensor API of textreid 0.1.
        return features["global"] if set(features) == {"global"} else features

    @torch.no_grad()
    def encode_text_features(
        self, texts: str | Sequence[str], *, batch_size: int = 256, tokens: bool = True
    ) -> dict[str, Tensor]:
        """Query features of captions, as the model's scorer reads them (in :attr:`dtype`, on
        the model's device): ``{"global": [N, D]}`` (L2-normalised) for cosine models,
        ``{"mean", "log_var"}`` for Gaussian ones, ``{"global", "parts", ...}`` for parts;
        plus ``"tokens"`` ``[N, L, D]`` and ``"token_mask"`` ``[N, L]`` when the model emits
        them (for re-ranking) and ``tokens`` is True. ``tokens=False`` drops them batch by
        batch, so that they never take ``L`` times the memory of the rest."""
        fn = "Retriever.encode_text"
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise ValueError(f"{fn}: texts is empty")
        check_positive(batch_size, "batch_size", fn)
        out = []
        for start in range(0, len(items), batch_size):
            ids = self.tokenizer(items[start : start + batch_size]).to(self.device)
            feats = self.retrieval_model.encode_text(ids)
            out.append(self._cast(_keep_tokens(feats, tokens)))
        return cat_rows(out, fn=fn)

    def encode_text(
        self, texts: str | Sequence[str], *, batch_size: int = 256
    ) -> Tensor | dict[str, Tensor]:
        """Caption embeddings: ``[N, D]`` L2-normalised (in :attr:`dtype`, on the model's device) for
        models with global features only (CLIP, IVT), else the features of
        :meth:`encode_text_features` (without tokens)."""
        return self._public(self.encode_text_features(texts, batch_size=batch_size, tokens=False))

    def _load_image(self, item: object, index: int) -> Tensor:
        from PIL import Image

        fn = "Retriever.encode_images"
        if isinstance(item, Tensor):
            t = check_tensor(item, f"images[{index}]", fn, ndim=3, dims="(3, H, W)")
            if t.dtype == torch.uint8:
                from torchvision.transforms.functional import to_pil_image

                return self._transform(to_pil_image(t.cpu()))
            size = tuple(self.preprocess.image_size)
            if not t.is_floating_point() or t.shape != (3, *size):
                raise ValueError(
                    f"{fn}: images[{index}] is a tensor of shape {tuple(t.shape)} and dtype "
                    f"{t.dtype}; pass uint8 images (3, H, W) or preprocessed float tensors "
                    f"(3, {size[0]}, {size[1]})"
                )
            return t
        if isinstance(item, Image.Image):
            return self._transform(item.convert("RGB"))
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"{fn}: image file {path} does not exist")
            with Image.open(path) as img:
                return self._transform(img.convert("RGB"))
        raise TypeError(
            f"{fn}: images[{index}] must be a path, a PIL image or a tensor, "
            f"got {type(item).__name__}"
        )

    def _batches(self, items: Sequence[object], batch_size: int) -> Iterator[Tensor]:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            yield torch.stack([self._load_image(x, start + i) for i, x in enumerate(chunk)])

    def _image_feature_batches(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | Tensor,
        batch_size: int,
        progress: bool,
    ) -> Iterator[dict[str, Tensor]]:
        """The features of ``images``, one batch of ``batch_size`` at a time (the caller
        disables autograd)."""
        fn = "Retriever.encode_images"
        check_positive(batch_size, "batch_size", fn)
        items = _image_items(images, fn)
        batches: Iterator[Tensor] = self._batches(items, batch_size)
        if progress:
            from tqdm.auto import tqdm

            total = (len(items) + batch_size - 1) // batch_size
            batches = iter(tqdm(batches, total=total, desc="encode images", unit="batch"))
        for b in batches:
            yield self._cast(self.retrieval_model.encode_image(b.to(self.device, self._dtype)))

    @torch.no_grad()
    def encode_image_features(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | Tensor,
        *,
        batch_size: int = 64,
        progress: bool = False,
        tokens: bool = True,
    ) -> dict[str, Tensor]:
        """Gallery features of images, as the model's scorer reads them (see
        :meth:`encode_text_features`; the inputs as :meth:`encode_images`), with the image
        ``"tokens"`` ``[N, P, D]`` when the model emits them and ``tokens`` is True."""
        batches = self._image_feature_batches(images, batch_size, progress)
        return cat_rows([_keep_tokens(f, tokens) for f in batches], fn="Retriever.encode_images")

    def encode_images(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | Tensor,
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        """Image embeddings: ``[N, D]`` L2-normalised for models with global features only
        (CLIP, IVT), else the features of :meth:`encode_image_features` (without tokens).

        Args:
            images: paths, PIL images, uint8 tensors ``[3, H, W]`` (preprocessed here), float
                tensors already preprocessed to ``[3, H, W]`` at the model's size, or one
                preprocessed batch ``[N, 3, H, W]``.
            batch_size: images per forward pass.
            progress: show a progress bar.
        """
        feats = self.encode_image_features(
            images, batch_size=batch_size, progress=progress, tokens=False
        )
        return self._public(feats)

    @overload
    def index_images(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | str | os.PathLike[str],
        *,
        ids: Sequence[int] | Tensor | None = None,
        batch_size: int = 64,
        progress: bool = False,
        store_tokens: bool = True,
        token_dtype: torch.dtype | None = None,
        out: None = None,
        shard_size: int = 100_000,
        resume: bool = True,
    ) -> GalleryIndex: ...

    @overload
    def index_images(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | str | os.PathLike[str],
        *,
        ids: Sequence[int] | Tensor | None = None,
        batch_size: int = 64,
        progress: bool = False,
        store_tokens: bool = True,
        token_dtype: torch.dtype | None = None,
        out: str | os.PathLike[str],
        shard_size: int = 100_000,
        resume: bool = True,
    ) -> Path: ...

    @torch.no_grad()
    def index_images(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | str | os.PathLike[str],
        *,
        ids: Sequence[int] | Tensor | None = None,
        batch_size: int = 64,
        progress: bool = False,
        store_tokens: bool = True,
        token_dtype: torch.dtype | None = None,
        out: str | os.PathLike[str] | None = None,
        shard_size: int = 100_000,
        resume: bool = True,
    ) -> GalleryIndex | Path:
        """Encode images into a :class:`~textreid.retrieval.GalleryIndex`, in memory or, with
        ``out=``, as a sharded index folder written shard by shard.

        ``images`` may be a folder: every image file in it (sorted, recursively) is indexed
        and its path recorded. The index keeps every feature the scorer reads, the scorer's
        config and :attr:`model_fingerprint`, so that :meth:`search` refuses it with another
        model; and, when the model emits them (:meth:`token_reranker`), the image tokens
        that token re-ranking reads.

        With ``out=``, the images are encoded ``shard_size`` at a time and each shard is
        written to ``out`` as soon as it is complete
        (:class:`~textreid.retrieval.ShardedIndexWriter`), so memory holds one shard and a crash loses at most the shard
        being encoded: the same call again (``resume=True``) skips the shards written. Open
        the result with :meth:`GalleryIndex.load <textreid.retrieval.GalleryIndex.load>`, or
        per process with :meth:`GalleryIndex.load_shard
        <textreid.retrieval.GalleryIndex.load_shard>` for
        :func:`~textreid.retrieval.sharded_topk_search`.

        Tokens cost ``Ng x P x D`` numbers, ``P`` times the global features: at ViT-B/16 and
        384 x 128 (``P = 192`` patches, ``D = 512``) 384 KiB per image in float32, 39 GB for
        100,000 images. ``token_dtype=torch.float16`` halves that (re-ranking computes in
        float32 either way); ``store_tokens=False`` leaves them out, and :meth:`search`
        re-computes them for the candidates instead (``gallery_images=``).

        Args:
            images: a folder, or paths, PIL images or tensors as for :meth:`encode_images`
                (paths only with ``out=``: they say what a resumed run is indexing).
            ids: one integer id per image (e.g. person ids), optional.
            batch_size: images per forward pass.
            progress: report progress (a bar on a terminal; with ``out=`` elsewhere a line
                every 30 seconds).
            store_tokens: keep the image tokens, when the model emits them.
            token_dtype: store the tokens as ``torch.float16`` or ``torch.bfloat16`` (default:
                float32, as encoded).
            out: write a sharded index to this folder and return its path.
            shard_size: images per shard file, with ``out=``.
            resume: with ``out=``, keep the shards an interrupted run with the same images,
                ids, model and settings wrote; ``False`` starts over.

        Returns:
            The :class:`~textreid.retrieval.GalleryIndex`; with ``out=`` the index folder.

        Raises:
            FileNotFoundError: ``images`` names a path that is not a folder, or a missing image.
            TypeError: ``out=`` with images that are not paths.
            ValueError: a folder without images, ids of another length than the images, a
                ``token_dtype`` other than float32, float16 or bfloat16, a ``shard_size``
                below 1, ``out=`` on a partial index of other images or settings with
                ``resume=True``; and the errors of :meth:`encode_images`.
        """
        fn = "Retriever.index_images"
        check_choice(store_tokens, "store_tokens", fn, (True, False))
        if token_dtype not in (None, *_TOKEN_DTYPES):
            raise ValueError(
                f"{fn}: token_dtype must be None (float32) or one of "
                f"{', '.join(map(str, _TOKEN_DTYPES))}, got {token_dtype!r}"
            )
        paths: list[str] | None = None
        if isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            if not folder.is_dir():
                raise FileNotFoundError(f"{fn}: {folder} is not a folder")
            files = sorted(
                p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
            )
            if not files:
                raise ValueError(f"{fn}: no image files in {folder}")
            images = list(files)
        items = list(images)
        if all(isinstance(x, (str, os.PathLike)) for x in items):
            paths = [os.fspath(x) for x in items]  # type: ignore[arg-type]
        id_tensor = torch.as_tensor(ids, dtype=torch.long) if ids is not None else None
        if id_tensor is not None and id_tensor.shape != (len(items),):
            raise ValueError(
                f"{fn}: ids has shape {tuple(id_tensor.shape)} but there are {len(items)} images"
            )

        def stored(f: dict[str, Tensor]) -> dict[str, Tensor]:
            # Cast batch by batch: float32 tokens of the whole gallery never sit in memory.
            f = _keep_tokens(f, store_tokens)
            if token_dtype is not None and "tokens" in f:
                f["tokens"] = f["tokens"].to(token_dtype)
            return f

        if out is None:
            batches = self._image_feature_batches(items, batch_size, progress)
            feats = cat_rows([stored(f) for f in batches], fn="Retriever.encode_images")
            return GalleryIndex(
                feats,
                ids=id_tensor,
                paths=paths,
                scorer=self.scorer,
                model_fingerprint=self.model_fingerprint,
            )
        if paths is None:
            raise TypeError(
                f"{fn}: out= indexes image files (a folder or a list of paths); PIL images and "
                "tensors cannot be resumed: index them in memory (without out=)"
            )
        check_positive(batch_size, "batch_size", fn)
        # What is indexed and how: a resumed run must match it to keep earlier shards.
        plan = hashlib.sha256()
        plan.update(f"{store_tokens} {token_dtype}\n".encode())
        plan.update("\0".join(paths).encode("utf-8", "surrogatepass"))
        if id_tensor is not None:
            plan.update(id_tensor.numpy().tobytes())
        writer = ShardedIndexWriter(
            out,
            rows=len(paths),
            shard_size=shard_size,
            key=plan.hexdigest(),
            scorer=self.scorer,
            model_fingerprint=self.model_fingerprint,
            resume=resume,
        )
        todo = writer.pending()
        left = sum(b - a for a, b in map(writer.bounds, todo))
        report = Progress(
            len(paths), "index images", unit="images", initial=len(paths) - left, enabled=progress
        )
        with report:
            for i in todo:
                a, b = writer.bounds(i)
                parts = []
                for f in self._image_feature_batches(paths[a:b], batch_size, False):
                    parts.append(stored(f))
                    report.update(num_rows(f))
                writer.write_shard(
                    i,
                    cat_rows(parts, fn="Retriever.encode_images"),
                    None if id_tensor is None else id_tensor[a:b],
                    paths[a:b],
                )
        return writer.finish()

    def token_reranker(
        self,
        *,
        fusion: TokenFusion = "sum",
        weight: float = 1.0,
        batch_size: int = 256,
        check_finite: bool = True,
    ) -> TokenReranker:
        """A :class:`~textreid.retrieval.TokenReranker` with the model's token head.

        The head's settings (temperature, threshold, padding rule) are the ones the model's
        tokens were trained with (FMFA's EFA loss for the FMFA recipe's retrievers), saved in
        ``config.json``, so a loaded retriever re-ranks as the method defines the token
        similarity. :meth:`search` with ``rerank=True`` uses this re-ranker with the
        defaults.

        Args:
            fusion: ``"sum"`` (cosine + ``weight`` x token score) or ``"token"``.
            weight: the token score's weight of ``"sum"``.
            batch_size: query-candidate pairs scored per block.
            check_finite: refuse NaN/inf tokens.

        Raises:
            ValueError: the model emits no tokens (the message says which models do), and the
                errors of :class:`~textreid.retrieval.TokenReranker`.
        """
        head = self._token_head("Retriever.token_reranker")
        return TokenReranker(
            head, fusion=fusion, weight=weight, batch_size=batch_size, check_finite=check_finite
        )

    def _token_head(self, fn: str) -> SparseTokenSimilarity:
        head = self.retrieval_model.token_head()
        if head is None:
            raise ValueError(
                f"{fn}: this {self.architecture!r} retriever's model emits no tokens, which "
                "token re-ranking reads. Use a retriever whose model does: the FMFA recipe's, "
                "or Retriever(CLIPRetrievalModel(encoder, token_features=True)) (its "
                "config.json then has token_features: true); then index the images again"
            )
        return head

    def gallery_tokens(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | Tensor,
        *,
        batch_size: int = _IMAGE_BATCH,
    ) -> GalleryTokens:
        """Re-compute gallery tokens on demand: a :data:`~textreid.retrieval.GalleryTokens`
        for :meth:`TokenReranker.rerank <textreid.retrieval.TokenReranker.rerank>`.

        The callable takes gallery indices ``[M]`` and encodes ``images[i]`` of each again
        (the same preprocessing and model as :meth:`index_images`), returning their
        ``{"tokens": [M, P, D]}``; a re-ranker calls it for the candidates of one block at a
        time, so memory is bounded by the block, not the gallery, and no tokens are stored.
        :meth:`search` builds one from ``gallery_images=``.

        Args:
            images: the gallery's images in index order (paths, PIL images or tensors as for
                :meth:`encode_images`), e.g. ``index.paths``.
            batch_size: images per forward pass.

        Raises:
            ValueError: the model emits no tokens, ``images`` is empty, a ``batch_size``
                below 1; the callable raises ``ValueError`` for an index outside the images.
        """
        fn = "Retriever.gallery_tokens"
        return self._tokens_of(_image_items(images, fn), batch_size, fn)

    def _tokens_of(self, items: list[object], batch_size: int, fn: str) -> GalleryTokens:
        self._token_head(fn)
        check_positive(batch_size, "batch_size", fn)

        def tokens_of(indices: Tensor) -> Features:
            rows = check_tensor(indices, "indices", fn, ndim=1, kind="int").tolist()
            bad = [i for i in rows if not 0 <= i < len(items)]
            if bad:
                raise ValueError(
                    f"{fn}: indices {bad[:4]} lie outside the {len(items)} gallery images"
                )
            picked = [items[i] for i in rows]
            f = self.encode_image_features(picked, batch_size=batch_size)
            return {key: f[key] for key in _TOKEN_KEYS if key in f}

        return tokens_of

    def _check_index(self, index: GalleryIndex, fn: str) -> None:
        where = f"the gallery index {index.source}" if index.source else "the gallery index"
        if (
            index.model_fingerprint is not None
            and index.model_fingerprint != self.model_fingerprint
        ):
            raise ValueError(
                f"{fn}: {where} was built by another model (fingerprint "
                f"{index.model_fingerprint[:12]}..., this retriever's is "
                f"{self.model_fingerprint[:12]}...); its features do not match this model's "
                "queries. Index the images again with this retriever (index_images), or search "
                "with the retriever that built it"
            )

    def search(
        self,
        text: str | Sequence[str],
        gallery: GalleryIndex | Tensor | Features,
        k: int = 10,
        *,
        scorer: Scorer | None = None,
        rerank: Reranker | bool | None = None,
        gallery_images: Sequence[str | os.PathLike[str] | Image.Image | Tensor] | None = None,
    ) -> SearchResult:
        """Top-``k`` gallery items for each caption, scored the model's way.

        With ``rerank``, the ``k`` hits of that search are re-scored and re-ordered by a
        second stage (:func:`~textreid.retrieval.topk_search`'s ``rerank=``): ``True`` is
        :meth:`token_reranker` (the model's token head, default fusion), or pass a
        :class:`~textreid.retrieval.TokenReranker` with other settings. Token re-ranking
        reads the gallery's image tokens from the index (:meth:`index_images` stores them
        when the model emits them) or, with ``gallery_images=``, re-computes them for the
        candidates only; either way its memory is bounded by ``k``, not the gallery.

        Args:
            text: one caption or several.
            gallery: a :class:`~textreid.retrieval.GalleryIndex` (as :meth:`index_images`
                builds), gallery features (:meth:`encode_image_features`), or for cosine
                models a ``[Ng, D]`` tensor of image embeddings.
            k: hits per caption (the candidates a re-ranker re-scores). A ``k`` larger than
                the gallery returns every item, with a ``UserWarning`` saying so (library
                callers wanting an error use :func:`~textreid.retrieval.topk_search`).
            scorer: score with this instead of :attr:`scorer`; it must be of the same kind
                (e.g. a ``GaussianScorer`` with another distance).
            rerank: ``True`` (:meth:`token_reranker`), a re-ranker (an object with
                ``check`` and ``rerank``, e.g. a ``TokenReranker``), or ``None``/``False``.
            gallery_images: the gallery's images in index order (e.g. ``index.paths``), to
                re-compute the candidates' tokens (:meth:`gallery_tokens`) instead of reading
                stored ones; only with a ``TokenReranker``.

        Returns:
            A :class:`~textreid.retrieval.SearchResult` (scores in float32 whatever
            :attr:`dtype`); with a Gaussian scorer it carries ``query_uncertainty`` ``[Nq]``
            and ``gallery_uncertainty`` ``[Nq, k]``. ``gallery_paths`` ``[Nq][k]`` is set
            when the gallery knows its paths (an index built from files, or
            ``gallery_images`` given as paths), ``gallery_ids`` when the index has ids.

        Raises:
            TypeError: a ``rerank`` that is not a re-ranker, ``gallery_images`` without a
                ``TokenReranker``, a ``k`` that is not an int.
            ValueError: ``k < 1``, an empty gallery; a scorer of another kind; a gallery index built by another model
                (the index is named with the remedy); token re-ranking with a model that emits
                no tokens, or of a gallery without stored tokens and no ``gallery_images``
                (the index is named, with the remedy); ``gallery_images`` whose length is not
                the gallery's.
        """
        fn = "Retriever.search"
        check_int(k, "k", fn, min_value=1)
        if scorer is None:
            scorer = self.scorer
        else:
            _check_scorer_kind(scorer, self.scorer, f"this {self.architecture!r} retriever", fn)
        reranker: Reranker | None
        if rerank is True:
            reranker = TokenReranker(self._token_head(fn))
        elif rerank is None or rerank is False:
            reranker = None
        else:
            reranker = rerank
        if gallery_images is not None and not isinstance(reranker, TokenReranker):
            raise TypeError(
                f"{fn}: gallery_images re-computes image tokens for token re-ranking; pass "
                f"rerank=True or a TokenReranker with it, got rerank={rerank!r}"
            )
        index: GalleryIndex | None = None
        if isinstance(gallery, GalleryIndex):
            index = gallery
            self._check_index(index, fn)
            feats = index.feature_map
        else:
            feats = features_to(as_features(gallery, name="gallery", fn=fn), device=self.device)
        if isinstance(reranker, TokenReranker):
            self._token_head(fn)
            if gallery_images is None and "tokens" not in feats:
                raise ValueError(_no_stored_tokens(fn, index, feats))
        size = num_rows(feats)
        if size == 0:
            raise ValueError(f"{fn}: the gallery is empty; index some images first")
        if k > size:
            warnings.warn(
                f"{fn}: k={k} is larger than the gallery ({size} items); returning all "
                f"{size} hits per caption",
                UserWarning,
                stacklevel=2,
            )
            k = size
        items = None if gallery_images is None else _image_items(gallery_images, fn)
        if items is not None and len(items) != size:
            raise ValueError(
                f"{fn}: gallery_images has {len(items)} images but the gallery has "
                f"{size} items; pass the gallery's images in index order"
            )
        query = self.encode_text_features(text, tokens=reranker is not None)
        if items is not None:
            assert isinstance(reranker, TokenReranker)
            recompute = self._tokens_of(items, _IMAGE_BATCH, fn)
            reranker.check(query, recompute, fn=fn)
            first = (
                index.search(query, k, scorer=scorer)
                if index is not None
                else topk_search(query, feats, k, scorer=scorer)
            )
            result = reranker.rerank(first, query, recompute)
        elif index is not None:
            result = index.search(query, k, scorer=scorer, rerank=reranker)
        else:
            result = topk_search(query, feats, k, scorer=scorer, rerank=reranker)
        return _named_hits(result, index, items)


def _named_hits(
    result: SearchResult, index: GalleryIndex | None, items: list[object] | None
) -> SearchResult:
    """``result`` with the gallery's paths and ids of each hit, where the gallery knows them."""
    rows = result.indices.tolist()
    paths: list[str] | None = None
    if index is not None and index.paths is not None:
        paths = index.paths
    elif items is not None:
        named = [os.fspath(x) for x in items if isinstance(x, (str, os.PathLike))]
        paths = named if len(named) == len(items) else None
    if paths is not None:
        result.gallery_paths = [[paths[j] for j in row] for row in rows]
    if index is not None and index.ids is not None:
        result.gallery_ids = index.ids_of(result).tolist()
    return result


def _check_dtype(dtype: object, fn: str) -> None:
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(
            f"{fn}: dtype must be None (float32) or one of {', '.join(map(str, _DTYPES))}, "
            f"got {dtype!r}"
        )


def _encoder(model: RetrievalModel) -> torch.nn.Module:
    """The module that :class:`Retriever`'s ``dtype`` casts: the model's ``encoder`` (every
    built-in architecture has one), else the whole model."""
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, torch.nn.Module) else model


def _embed_dim(model: RetrievalModel) -> int | None:
    """The joint embedding width ``D``: the encoder config's ``embed_dim`` (CLIP-backed
    models) or the encoder's ``width`` (single-stream models), when it has either."""
    encoder = _encoder(model)
    dim = getattr(getattr(encoder, "config", None), "embed_dim", getattr(encoder, "width", None))
    return dim if isinstance(dim, int) else None


def _image_items(images: object, fn: str) -> list[object]:
    """The images of an iterable (or of a batch ``[N, 3, H, W]``), refused when empty."""
    if isinstance(images, Tensor) and images.dim() == 4:
        items: list[object] = list(images.unbind(0))
    elif isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Iterable):
        raise TypeError(
            f"{fn}: images must be a sequence of paths, PIL images or tensors (one per "
            f"gallery item), got {type(images).__name__}"
        )
    else:
        items = list(images)
    if not items:
        raise ValueError(f"{fn}: images is empty")
    return items


def _keep_tokens(features: dict[str, Tensor], keep: bool) -> dict[str, Tensor]:
    """``features`` without the token keys unless ``keep``."""
    return features if keep else {k: v for k, v in features.items() if k not in _TOKEN_KEYS}


def _no_stored_tokens(fn: str, index: GalleryIndex | None, feats: Features) -> str:
    if index is None:
        where = "the gallery features"
    else:
        where = f"the gallery index {index.source}" if index.source else "the gallery index"
    return (
        f"{fn}: {where} hold no image 'tokens' (only {sorted(feats)}), which token "
        "re-ranking reads. Index the images again with a retriever whose model emits tokens "
        "(index_images keeps them unless store_tokens=False), or pass gallery_images= (the "
        "gallery's images in index order, e.g. index.paths) to re-compute the candidates' "
        "tokens"
    )
