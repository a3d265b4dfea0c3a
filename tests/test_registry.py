"""One registry idiom for models, datasets, recipes and methods."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from textreid import pipeline
from textreid._registry import Registry
from textreid.data import build_dataset
from textreid.losses import LossOutput
from textreid.methods import (
    MethodContext,
    RetrievalMethod,
    get_method_builder,
    list_methods,
    register_method,
)
from textreid.methods import base as methods_base
from textreid.models import create_model
from textreid.pipeline import METHODS, build_method
from textreid.recipes import get_recipe


def _factory() -> int:
    return 1


def test_register_get_names_and_overwrite() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", arg="factory")
    reg.register("b", _factory, fn="register_widget")
    reg.register("a", lambda: 2, fn="register_widget")
    assert reg.names() == ["a", "b"]
    assert reg.get("b", fn="get_widget")() == 1
    assert "a" in reg
    assert "c" not in reg
    assert 3 not in reg
    with pytest.raises(
        ValueError, match=r"^register_widget: 'a' is already registered; pass overwrite=True"
    ):
        reg.register("a", _factory, fn="register_widget")
    reg.register("a", _factory, overwrite=True, fn="register_widget")
    assert reg.get("a", fn="get_widget") is _factory


def test_unknown_name_lists_names_and_suggests_the_closest() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", arg="factory")
    for name in ("sprocket", "gear", "gasket"):
        reg.register(name, _factory, fn="register_widget")
    with pytest.raises(
        ValueError,
        match=r"^get_widget: unknown widget 'sprockett'; registered: gasket, gear, sprocket; "
        r"did you mean 'sprocket'\?$",
    ):
        reg.get("sprockett", fn="get_widget")
    with pytest.raises(
        ValueError, match=r"unknown widget 'zzz'; registered: gasket, gear, sprocket$"
    ):
        reg.get("zzz", fn="get_widget")


def test_bad_names_and_entries_are_refused_before_registering() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", arg="factory")
    with pytest.raises(ValueError, match="register_widget: name must be a non-empty string"):
        reg.register("  ", _factory, fn="register_widget")
    with pytest.raises(TypeError, match="register_widget: name must be a str, got int"):
        reg.register(3, _factory, fn="register_widget")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="register_widget: factory must be callable, got str"):
        reg.register("x", "not callable", fn="register_widget")  # type: ignore[arg-type]
    assert reg.names() == []


def test_normalize_makes_names_case_insensitive() -> None:
    reg: Registry[Callable[[], int]] = Registry("dataset", arg="reader", normalize=str.lower)
    reg.register(" Mine ", _factory, fn="register_dataset")
    assert reg.names() == ["mine"]
    assert reg.get("MINE", fn="build_dataset") is _factory
    with pytest.raises(ValueError, match="'mine' is already registered"):
        reg.register("mInE", _factory, fn="register_dataset")


def test_discovery_runs_once_before_first_use_and_retries_after_a_failure() -> None:
    calls: list[str] = []
    fail = [True]

    def discover() -> None:
        calls.append("discover")
        if fail[0]:
            raise ImportError("broken plugin")
        reg.register("builtin", _factory, fn="register_widget")

    reg: Registry[Callable[[], int]] = Registry("widget", arg="factory", discover=discover)
    assert calls == []
    with pytest.raises(ImportError, match="broken plugin"):
        reg.names()
    fail[0] = False
    # A user's clash with a built-in is refused at registration, not at a later lookup.
    with pytest.raises(ValueError, match="'builtin' is already registered"):
        reg.register("builtin", lambda: 2, fn="register_widget")
    assert reg.names() == ["builtin"]
    assert calls == ["discover", "discover"]


def test_public_registries_suggest_close_names() -> None:
    with pytest.raises(
        ValueError, match=r"create_model: unknown model 'ViT-B/61'.*did you mean 'ViT-B/16'"
    ):
        create_model("ViT-B/61", device="meta")
    with pytest.raises(
        ValueError, match=r"build_dataset: unknown dataset 'cuhk-pede'.*did you mean 'cuhk-pedes'"
    ):
        build_dataset("cuhk-pede", ".")
    with pytest.raises(
        ValueError, match=r"get_recipe: unknown recipe 'tiny-ira'.*did you mean 'tiny-irra'"
    ):
        get_recipe("tiny-ira")
    with pytest.raises(
        ValueError, match=r"get_method_builder: unknown method 'ira'.*did you mean 'irra'"
    ):
        get_method_builder("ira")


def test_a_builtin_recipe_name_is_taken_before_any_lookup() -> None:
    # Fresh interpreter: nothing has listed the recipes yet, so the built-ins are not loaded.
    code = (
        "from textreid.recipes import get_recipe, register_recipe\n"
        "try:\n"
        "    register_recipe('irra', lambda: get_recipe('tiny-irra'))\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "register_recipe('irra', lambda: get_recipe('tiny-irra').replace(name='irra'), "
        "overwrite=True)\n"
        "print(get_recipe('irra').model)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "register_recipe: 'irra' is already registered; pass overwrite=True to replace it",
        "tiny",
    ]


class _Toy(RetrievalMethod):
    def __init__(self, context: MethodContext, scale: float) -> None:
        super().__init__()
        self.context = context
        self.weight = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        return LossOutput(self.weight * 0, {})

    def encode_image(self, images: Tensor) -> Tensor:
        return images.flatten(1)

    def encode_text(self, text_ids: Tensor) -> Tensor:
        return text_ids.float()


@pytest.fixture
def toy_method() -> Iterator[list[MethodContext]]:
    seen: list[MethodContext] = []

    def build(context: MethodContext, **kwargs: Any) -> _Toy:
        seen.append(context)
        return _Toy(context, **kwargs)

    register_method("toy", build)
    try:
        yield seen
    finally:
        methods_base._METHODS.unregister("toy", fn="test")


def test_a_registered_method_is_built_from_a_recipe(
    toy_method: list[MethodContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_clip(recipe: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the CLIP encoder of {recipe.name} was built")

    # Methods that do not ask for the CLIP encoder never load (or build) one.
    monkeypatch.setattr(pipeline, "build_clip_encoder", no_clip)
    assert "toy" in list_methods()
    assert "toy" in METHODS
    recipe = get_recipe("tiny-irra").replace(
        name="toy-run",
        method="toy",
        method_kwargs={"scale": 2.5},
        model_overrides={"x": 1},
        vocabulary="clip",  # the (recipe, num_classes) view has no training captions
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method = build_method(recipe, 7)
    assert isinstance(method, _Toy)
    assert method.weight.item() == 2.5
    (context,) = toy_method
    assert context.num_classes == 7
    assert context.tokenizer.mask_token_id is not None  # tiny-irra's "<|mask|>"
    assert context.tokenizer.context_length == recipe.context_length
    assert dict(context.model_overrides) == {"x": 1}
    with pytest.raises(AssertionError, match="CLIP encoder of toy-run was built"):
        context.clip_encoder()
    # The old mapping view builds through the same registry.
    assert isinstance(METHODS["toy"](recipe, 3), _Toy)
    assert toy_method[-1].num_classes == 3
    with pytest.raises(KeyError):
        METHODS["nope"]


def test_build_method_names_the_recipe_of_an_unknown_method() -> None:
    recipe = get_recipe("tiny-irra").replace(name="mine", method="irr")
    with pytest.raises(
        ValueError,
        match=r"^build_method: recipe 'mine': get_method_builder: unknown method 'irr'; "
        r"registered: cmr, fmfa, irra, ivt, uca; did you mean 'irra'",
    ):
        build_method(recipe, 3)


def test_every_shipped_method_is_registered_by_its_module() -> None:
    assert {"irra", "fmfa", "ivt", "uca", "cmr"} <= set(list_methods())
    assert set(METHODS) == set(list_methods())
    assert len(METHODS) == len(list_methods())
