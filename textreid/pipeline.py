"""The main job, end to end: a recipe + a dataset -> a trained, evaluated, saved retriever.

Used by the ``textreid`` command (``train``, ``eval``, ``demo``) and usable from Python::

    from textreid.pipeline import train_recipe
    result = train_recipe("tiny-irra", data_root="synth", dataset="synthpedes", output_dir="run")
    print(result.test_metrics.format_table())
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from textreid._checks import check_choice
from textreid.config import PreprocessConfig
from textreid.data.datasets import ImageDataset, ImageTextDataset, TextDataset, collate_trimmed
from textreid.data.pedes import PedesDataset, PedesSplit, build_dataset
from textreid.data.samplers import IdentitySampler
from textreid.data.transforms import build_transforms
from textreid.hub import ModelCard, Retriever
from textreid.methods.base import (
    MethodContext,
    RetrievalMethod,
    get_method_builder,
    list_methods,
)
from textreid.models.clip import CLIPDualEncoder
from textreid.models.load import load_clip
from textreid.models.registry import create_model
from textreid.recipes import VOCABULARIES, Recipe, get_recipe
from textreid.retrieval.metrics import RetrievalMetrics, evaluate
from textreid.retrieval.scorers import Side, cat_rows
from textreid.tokenization import CLIPTokenizer
from textreid.training.distributed import (
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from textreid.training.trainer import FitResult, Trainer, seed_everything

__all__ = [
    "METHODS",
    "TrainResult",
    "apply_overrides",
    "build_clip_encoder",
    "build_method",
    "build_tokenizer",
    "encode_split",
    "evaluate_retriever",
    "evaluate_split",
    "train_recipe",
]

_FromRecipe = Callable[[Recipe, int], RetrievalMethod]


@dataclass
class TrainResult:
    """What :func:`train_recipe` produced.

    Attributes:
        recipe: the recipe as run (after overrides).
        fit: the trainer's summary (best epoch, checkpoints).
        val_metrics: metrics of the selected model on the validation split (if any).
        test_metrics: metrics of the selected model on the test split (``None`` on ranks
            other than 0 under ``torchrun``, which only train).
        retriever_dir: the folder written by :meth:`Retriever.save_pretrained`, for every
            method (``None`` on ranks other than 0 under ``torchrun``).
        retriever: the trained retriever, ready to search: the method's
            :meth:`~textreid.methods.RetrievalMethod.retrieval_model` and its scorer
            (``None`` likewise).
    """

    recipe: Recipe
    fit: FitResult
    val_metrics: RetrievalMetrics | None
    test_metrics: RetrievalMetrics | None
    retriever_dir: Path | None
    retriever: Retriever | None


def build_tokenizer(
    recipe: Recipe, context_length: int, *, train_captions: Sequence[str] | None = None
) -> CLIPTokenizer:
    """The caption tokenizer a recipe needs (with the MLM mask token when it has one).

    Args:
        recipe: the recipe; its ``vocabulary`` picks CLIP's ids (``"clip"``) or CLIP's
            tokenizer restricted to the training captions (``"train_captions"``, see
            :meth:`CLIPTokenizer.restricted_to`).
        context_length: the length of every row of ids.
        train_captions: the training split's captions; needed for ``"train_captions"``.

    Raises:
        ValueError: an unknown ``recipe.vocabulary``; ``"train_captions"`` without
            ``train_captions``, or with pretrained weights (their embedding rows follow
            CLIP's ids).
    """
    fn = "build_tokenizer"
    check_choice(recipe.vocabulary, "recipe.vocabulary", fn, VOCABULARIES)
    tokenizer = CLIPTokenizer(context_length=context_length, mask_token=recipe.mask_token)
    if recipe.vocabulary == "clip":
        return tokenizer
    if recipe.pretrained is not None:
        raise ValueError(
            f"{fn}: recipe {recipe.name!r} starts from {recipe.pretrained!r}, whose embedding "
            "rows follow CLIP's ids; vocabulary='train_captions' is for random-init text towers "
            "(use vocabulary='clip')"
        )
    if train_captions is None:
        raise ValueError(
            f"{fn}: recipe {recipe.name!r} builds its vocabulary from the training captions "
            "(vocabulary='train_captions'); pass train_captions"
        )
    return tokenizer.restricted_to(train_captions)


def build_clip_encoder(recipe: Recipe, *, vocab_size: int | None = None) -> CLIPDualEncoder:
    """The recipe's CLIP dual encoder: random init, or loaded from ``recipe.pretrained``.

    Args:
        recipe: the recipe.
        vocab_size: the tokenizer's number of ids; a random-init text tower gets that many
            embedding rows. ``None`` keeps the model config's.

    Raises:
        ValueError: pretrained weights whose vocabulary differs from ``vocab_size``.
    """
    overrides = dict(recipe.model_overrides)
    if recipe.pretrained is None:
        if vocab_size is not None:
            overrides["text"] = {**overrides.get("text", {}), "vocab_size": vocab_size}
        return create_model(recipe.model, **overrides)
    image_size = overrides.pop("image_size", recipe.data.image_size)
    model = load_clip(recipe.pretrained, image_size=image_size, **overrides)
    if vocab_size is not None and model.config.text.vocab_size != vocab_size:
        raise ValueError(
            f"build_clip_encoder: {recipe.pretrained!r} has {model.config.text.vocab_size} "
            f"token ids but the tokenizer has {vocab_size}"
        )
    return model


def build_method(
    recipe: Recipe, num_classes: int, *, tokenizer: CLIPTokenizer | None = None
) -> RetrievalMethod:
    """The recipe's method around its encoder (pretrained when the recipe says so).

    The method is built by the builder registered under ``recipe.method``
    (:func:`textreid.methods.register_method`) from a
    :class:`~textreid.methods.MethodContext` and ``recipe.method_kwargs``.

    Args:
        recipe: the recipe.
        num_classes: training identities.
        tokenizer: the caption tokenizer; ``None`` builds the recipe's
            (:func:`build_tokenizer`). A random-init text tower is sized to its ids.

    Raises:
        ValueError: unknown method name (lists the registered methods), or no
            ``tokenizer`` for a recipe whose vocabulary comes from its training captions.
    """
    return _build_named(recipe.method, recipe, num_classes, tokenizer)


def _build_named(
    name: str, recipe: Recipe, num_classes: int, tokenizer: CLIPTokenizer | None = None
) -> RetrievalMethod:
    try:
        builder = get_method_builder(name)
    except ValueError as exc:
        raise ValueError(f"build_method: recipe {recipe.name!r}: {exc}") from None
    if tokenizer is None:
        tokenizer = build_tokenizer(recipe, recipe.context_length)
    context = MethodContext(
        num_classes=num_classes,
        tokenizer=tokenizer,
        clip_encoder=functools.partial(build_clip_encoder, recipe, vocab_size=tokenizer.vocab_size),
        model_overrides=dict(recipe.model_overrides),
    )
    return builder(context, **recipe.method_kwargs)


class _MethodBuilders(Mapping[str, _FromRecipe]):
    """The method registry seen as ``name -> builder(recipe, num_classes)``, always current."""

    def __getitem__(self, name: str) -> _FromRecipe:
        if name not in list_methods():
            raise KeyError(name)
        return functools.partial(_build_named, name)

    def __iter__(self) -> Iterator[str]:
        return iter(list_methods())

    def __len__(self) -> int:
        return len(list_methods())


#: Registered method name -> builder ``(recipe, num_classes) -> RetrievalMethod``; a read-only
#: view of :func:`textreid.methods.list_methods` (register with
#: :func:`textreid.methods.register_method`).
METHODS: Mapping[str, _FromRecipe] = _MethodBuilders()


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_split(
    method: RetrievalMethod,
    split: PedesSplit,
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int],
    *,
    batch_size: int = 256,
    interpolation: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """Global text-query and gallery-image embeddings ``([Nq, D], [Ng, D])`` of a split
    (``method.encode_text`` / ``encode_image``; what the method's scorer reads is
    :meth:`~textreid.methods.RetrievalMethod.retrieval_model`'s features)."""
    was_training = method.training
    method.eval()
    device = _device_of(method)
    transform = build_transforms(image_size, train=False, interpolation=interpolation)  # type: ignore[arg-type]
    texts = DataLoader(TextDataset(split, tokenizer), batch_size=batch_size)
    images = DataLoader(ImageDataset(split, transform), batch_size=batch_size)
    q = torch.cat([method.encode_text(b["text_ids"].to(device)).float() for b in texts])
    g = torch.cat([method.encode_image(b["images"].to(device)).float() for b in images])
    method.train(was_training)
    return q, g


@torch.no_grad()
def evaluate_split(
    method: RetrievalMethod,
    split: PedesSplit,
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int],
    *,
    batch_size: int = 256,
    interpolation: str = "bilinear",
) -> RetrievalMetrics:
    """Text-to-image R@1/5/10, mAP and mINP of ``method`` on an evaluation split, scored the
    method's way (its :meth:`~textreid.methods.RetrievalMethod.retrieval_model` and scorer).

    Used to select epochs during training; :func:`evaluate_retriever` evaluates a saved or
    exported retriever.
    """
    if split.num_images == 0 or split.num_captions == 0:
        raise ValueError("evaluate_split: the split is empty (no gallery images or no captions)")
    was_training = method.training
    method.eval()
    model = method.retrieval_model()
    scorer = model.scorer()
    device = _device_of(method)
    transform = build_transforms(image_size, train=False, interpolation=interpolation)  # type: ignore[arg-type]
    texts = DataLoader(TextDataset(split, tokenizer), batch_size=batch_size)
    images = DataLoader(ImageDataset(split, transform), batch_size=batch_size)

    def read(f: dict[str, Tensor], side: Side) -> dict[str, Tensor]:
        # Batch by batch, only what the scorer reads: no split's worth of re-ranking tokens.
        return {key: f[key] for key in scorer.required_keys(side)}

    q = cat_rows([read(model.encode_text(b["text_ids"].to(device)), "query") for b in texts])
    g = cat_rows([read(model.encode_image(b["images"].to(device)), "gallery") for b in images])
    method.train(was_training)
    return evaluate(
        q,
        g,
        query_pids=torch.as_tensor(split.caption_pids),
        gallery_pids=torch.as_tensor(split.image_pids),
        scorer=scorer,
    )


def evaluate_retriever(
    retriever: Retriever, split: PedesSplit, *, batch_size: int = 256, progress: bool = False
) -> RetrievalMetrics:
    """Text-to-image R@1/5/10, mAP and mINP of a retriever on an evaluation split.

    Captions and image files go through the retriever's own tokenizer, preprocessing, model
    and scorer, as for any user of the retriever: :func:`train_recipe` reports the test
    metrics of the retriever it saves this way, and ``textreid eval`` on the saved folder
    calls this function, so the two agree exactly.

    Args:
        retriever: the retriever.
        split: the evaluation split (captions, image paths, person ids).
        batch_size: captions or images per forward pass.
        progress: show a progress bar over the images.

    Raises:
        ValueError: the split has no captions or no images.
    """
    if split.num_images == 0 or split.num_captions == 0:
        raise ValueError(
            "evaluate_retriever: the split is empty (no gallery images or no captions)"
        )
    # Tokens (for re-ranking) would take L or P times the memory of what the scorer reads.
    q = retriever.encode_text_features(split.captions, batch_size=batch_size, tokens=False)
    g = retriever.encode_image_features(
        split.img_paths, batch_size=batch_size, progress=progress, tokens=False
    )
    return evaluate(
        q,
        g,
        query_pids=torch.as_tensor(split.caption_pids),
        gallery_pids=torch.as_tensor(split.image_pids),
        scorer=retriever.scorer,
    )


def _train_loader(recipe: Recipe, data: PedesDataset, tokenizer: CLIPTokenizer) -> DataLoader[Any]:
    settings = recipe.data
    transform = build_transforms(
        settings.image_size,
        train=True,
        img_aug=settings.img_aug,
        interpolation=settings.interpolation,
        erase_value=settings.erase_value,
    )
    dataset = ImageTextDataset(data.train, tokenizer, transform)
    seed = recipe.trainer.seed
    # Under torchrun every rank reads its own shard (IRRA's code lacks this: each rank
    # iterated the whole dataset); batch_size is per rank.
    world, rank = get_world_size(), get_rank()
    sampler: Sampler[Any] | None
    if settings.sampler == "identity":
        pids = [s.pid for s in data.train]
        sampler = IdentitySampler(
            pids,
            settings.batch_size,
            settings.num_instances,
            seed=seed,
            num_replicas=world,
            rank=rank,
        )
    else:
        sampler = distributed_sampler(dataset, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        # Shuffles when there is no sampler and seeds the workers' augmentation streams, so
        # those depend on the seed alone (not on what drew from the global stream before).
        generator=torch.Generator().manual_seed(seed + rank),
        num_workers=settings.num_workers,
        drop_last=True,
        collate_fn=collate_trimmed if settings.trim_text else None,
    )


def train_recipe(
    recipe: Recipe | str,
    data_root: str | os.PathLike[str],
    *,
    dataset: str = "cuhk-pedes",
    output_dir: str | os.PathLike[str] = "runs/textreid",
    epochs: int | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    select_on_test: bool = False,
    seed: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    amp: str | None = None,
    verbosity: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a recipe on a benchmark, select the best epoch on val, test it, save it.

    Args:
        recipe: a :class:`~textreid.recipes.Recipe` or a registered name.
        data_root: folder holding the benchmark (see :func:`textreid.data.build_dataset`).
        dataset: registered dataset name.
        output_dir: checkpoints, ``metrics.jsonl``, ``best.safetensors`` and ``retriever/``.
        epochs: override the recipe's epoch count.
        device: e.g. ``"cuda"``; default CUDA when available.
        resume: continue from the newest checkpoint in ``output_dir``.
        progress: tqdm progress bars.
        select_on_test: select the best epoch on the *test* split, as IRRA's released code
            does (its ``--val_dataset test``). Only for reproducing published numbers: the
            reported test metrics are then optimistic. Required for ICFG-PEDES, which has no
            validation split.
        seed: the one seed of the run, default the recipe's ``trainer.seed``. It seeds the
            model's initialisation, the data order and the augmentations (workers included),
            so two runs with the same arguments on the same machine give identical weights.
        batch_size: override the recipe's training batch size (``data.batch_size``).
        lr: override the recipe's base learning rate (``trainer.lr``).
        amp: override the recipe's precision (``trainer.amp``: ``"auto"``, ``"none"``,
            ``"bf16"`` or ``"fp16"``).
        verbosity: override ``trainer.verbosity`` (0 quiet, 1 a line per epoch, 2 also a line
            every ``log_every`` updates).
        overrides: any other recipe settings, as dotted keys (``{"trainer.lr": 1e-4,
            "data.batch_size": 32, "method_kwargs.temperature": 0.05}``) or nested mappings
            (``{"trainer": {"lr": 1e-4}}``), e.g. read from a JSON or TOML file. Applied
            before the keyword overrides above, which win. Changing ``trainer.epochs`` alone
            shortens the warmup as ``epochs`` does.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: an unknown key in ``overrides`` (the message lists the valid ones), a
            value of the wrong type, or a setting the recipe's configs refuse.
    """
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    changes = _Overrides("train_recipe")
    changes.read(overrides or {})
    keywords = {
        "trainer.output_dir": os.fspath(output_dir),
        "trainer.progress": progress,
        "trainer.epochs": epochs,
        "trainer.device": device,
        "trainer.seed": seed,
        "trainer.lr": lr,
        "trainer.amp": amp,
        "trainer.verbosity": verbosity,
        "data.batch_size": batch_size,
    }
    for key, value in keywords.items():
        if value is not None:
            changes.put(key.split("."), value, fixed_ok=True)
    recipe = changes.applied_to(base)
    trainer_cfg = recipe.trainer

    init_distributed()  # no-op outside torchrun; the loader needs the rank to shard
    # The model is built before the Trainer seeds its fresh run, so it is seeded here: the
    # same on every rank, which then start from identical weights.
    seed_everything(trainer_cfg.seed)
    data = build_dataset(dataset, data_root)
    selection = data.test if select_on_test else data.val
    if selection.num_images == 0:
        raise ValueError(
            f"train_recipe: dataset {dataset!r} has no validation split; pass "
            "select_on_test=True (IRRA's protocol, optimistic) to select epochs on the test split"
        )
    tokenizer = build_tokenizer(
        recipe, recipe.context_length, train_captions=[s.caption for s in data.train]
    )
    method = build_method(recipe, data.num_classes, tokenizer=tokenizer)
    size = (int(recipe.data.image_size[0]), int(recipe.data.image_size[1]))
    loader = _train_loader(recipe, data, tokenizer)
    eval_kwargs: dict[str, Any] = {
        "batch_size": recipe.data.eval_batch_size,
        "interpolation": recipe.data.interpolation,
    }

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        assert isinstance(module, RetrievalMethod)
        metrics = evaluate_split(module, selection, tokenizer, size, **eval_kwargs)
        return {k: float(v) for k, v in metrics.to_dict().items()}

    trainer = Trainer(method, loader, trainer_cfg, evaluate_fn=evaluate_fn)
    fit = trainer.fit(resume=resume)
    if not is_main_process():
        # Ranks > 0 stop here: rank 0 evaluates on the test split and saves the retriever.
        return TrainResult(recipe, fit, None, None, None, None)
    if fit.best_path is not None:
        from safetensors.torch import load_file

        method.load_state_dict(load_file(str(fit.best_path)))
    preprocess = PreprocessConfig(image_size=size, interpolation=recipe.data.interpolation)
    # The metrics reported are the exported retriever's, computed as any user of the saved
    # folder computes them (textreid eval), so the two agree exactly.
    retriever = Retriever(
        method.retrieval_model(), tokenizer, preprocess, device=_device_of(method)
    )
    batch = recipe.data.eval_batch_size
    val_metrics = None
    if not select_on_test and data.val.num_images:
        val_metrics = evaluate_retriever(retriever, data.val, batch_size=batch)
    test_metrics = evaluate_retriever(retriever, data.test, batch_size=batch)
    retriever.card = ModelCard(
        description=f"{recipe.name} recipe trained with textreid on {data.name}.",
        recipe=recipe.name,
        dataset=data.name,
        metrics={k: float(v) for k, v in test_metrics.to_dict().items() if k[0] in "Rm"},
        citation=recipe.citation or None,
        trained=True,
        epochs=recipe.trainer.epochs,
        seed=recipe.trainer.seed,
        base_model=recipe.pretrained,
    )
    retriever_dir = retriever.save_pretrained(Path(output_dir) / "retriever")
    return TrainResult(recipe, fit, val_metrics, test_metrics, retriever_dir, retriever)


#: Recipe settings an override cannot change, and the argument that sets them instead.
_FIXED = {
    "name": "the recipe argument",
    "trainer.output_dir": "output_dir",
    "trainer.progress": "progress",
}


class _Overrides:
    """Dotted keys (``"trainer.lr"``) and nested mappings merged into one nested dict."""

    def __init__(self, fn: str) -> None:
        self.fn = fn
        self.tree: dict[str, Any] = {}

    def read(self, overrides: Mapping[str, Any]) -> None:
        if not isinstance(overrides, Mapping):
            raise TypeError(
                f"{self.fn}: overrides must be a mapping, got {type(overrides).__name__}"
            )
        for key, value in overrides.items():
            if not isinstance(key, str) or "" in key.split("."):
                raise ValueError(
                    f"{self.fn}: override key {key!r} is not a dotted name like 'trainer.lr'"
                )
            self.put(key.split("."), value, fixed_ok=False)

    def put(self, path: list[str], value: Any, *, fixed_ok: bool) -> None:
        dotted = ".".join(path)
        if not fixed_ok and dotted in _FIXED:
            raise ValueError(
                f"{self.fn}: {dotted!r} cannot be overridden; set it with {_FIXED[dotted]}"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.put([*path, str(key)], item, fixed_ok=fixed_ok)
            return
        node = self.tree
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(path[: depth + 1])
                raise ValueError(
                    f"{self.fn}: overrides set {where!r} both to a value and to a table"
                )
        if isinstance(node.get(path[-1]), dict):
            raise ValueError(f"{self.fn}: overrides set {dotted!r} both to a value and to a table")
        node[path[-1]] = value

    def applied_to(self, recipe: Recipe) -> Recipe:
        """``recipe`` with every override applied; a new epoch count without a warmup
        length keeps the recipe's warmup, shortened so one epoch follows it."""
        tree = self.tree
        trainer = tree.get("trainer")
        if (
            isinstance(trainer, dict)
            and isinstance(trainer.get("epochs"), int)
            and "warmup_epochs" not in trainer
        ):
            warmup = min(recipe.trainer.warmup_epochs, max(trainer["epochs"] - 1, 0))
            tree = {**tree, "trainer": {**trainer, "warmup_epochs": warmup}}
        out: Recipe = _merged(recipe, tree, "", self.fn)
        return out


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """A copy of ``recipe`` with ``overrides`` applied, as :func:`train_recipe` applies them.

    Args:
        recipe: the recipe.
        overrides: dotted keys (``{"trainer.lr": 1e-4}``) or nested mappings
            (``{"trainer": {"lr": 1e-4}}``) naming recipe settings.

    Raises:
        ValueError: an unknown key (the message lists the valid ones), a value of the wrong
            type, ``trainer.output_dir`` / ``trainer.progress`` / ``name`` (arguments of
            :func:`train_recipe`), or a setting the recipe's configs refuse.
    """
    changes = _Overrides("apply_overrides")
    changes.read(overrides)
    return changes.applied_to(recipe)


def _merged(current: Any, changes: dict[str, Any], where: str, fn: str) -> Any:
    """``current`` (a dataclass or a dict) with the nested ``changes`` applied, each
    dataclass rebuilt once so that its checks see the final values together."""
    if isinstance(current, dict):
        return {
            **current,
            **{k: _value(current.get(k), v, f"{where}{k}", fn) for k, v in changes.items()},
        }
    fields = sorted(f.name for f in dataclasses.fields(current) if f.init)
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        valid = ", ".join(f for f in fields if f"{where}{f}" not in _FIXED)
        under = f"under {where[:-1]!r}" if where else "at the top level"
        raise ValueError(
            f"{fn}: unknown override key {where + unknown[0]!r}; valid keys {under}: {valid}"
        )
    new = {k: _value(getattr(current, k), v, f"{where}{k}", fn) for k, v in changes.items()}
    return dataclasses.replace(current, **new)


def _value(current: Any, value: Any, key: str, fn: str) -> Any:
    """``value`` checked against the type of the setting it replaces (a JSON/TOML list
    becomes a tuple where the setting is one; an int becomes a float where it is one)."""
    table = dataclasses.is_dataclass(current) or isinstance(current, dict)
    if isinstance(value, dict):
        if table:
            return _merged(current, value, f"{key}.", fn)
        if current is not None:
            raise ValueError(
                f"{fn}: override {key!r} must be {type(current).__name__}, got a table"
            )
        return value
    if table:
        raise ValueError(
            f"{fn}: override {key!r} must be a table of {type(current).__name__} settings, "
            f"got {type(value).__name__} {value!r:.60}"
        )
    if current is None:
        return value
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(current) is not type(value):
        raise ValueError(
            f"{fn}: override {key!r} must be {type(current).__name__} (like "
            f"{current!r:.60}), got {type(value).__name__} {value!r:.60}"
        )
    if isinstance(current, tuple) and current and len(value) != len(current):
        raise ValueError(
            f"{fn}: override {key!r} must have {len(current)} entries like {current!r:.60}, "
            f"got {len(value)}"
        )
    return value
