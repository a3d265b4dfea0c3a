"""One seed makes a training run reproducible: model init, data order and augmentation."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from textreid.data import write_synthpedes
from textreid.pipeline import train_recipe
from textreid.recipes import get_recipe

Weights = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Weights]:
    """``train(run, num_workers=0, seed=None)``: the weights of a one-epoch tiny-irra run."""
    data = tmp_path_factory.mktemp("synth")
    write_synthpedes(data, num_identities=24, images_per_identity=2, image_size=(48, 24), seed=5)
    base = get_recipe("tiny-irra")
    runs: dict[tuple[str, int, int | None], Weights] = {}

    def run(name: str, num_workers: int = 0, seed: int | None = None) -> Weights:
        key = (name, num_workers, seed)
        if key not in runs:
            # The smallest run that still draws every random stream: random init, the
            # identity sampler's order, IRRA's pad/crop/erasing augmentation, MLM masking.
            recipe = base.replace(
                model_overrides={**base.model_overrides, "image_size": (48, 24)},
                data=dataclasses.replace(
                    base.data, image_size=(48, 24), batch_size=8, num_workers=num_workers
                ),
            )
            kwargs: dict[str, Any] = {} if seed is None else {"seed": seed}
            out = tmp_path_factory.mktemp("run")
            train_recipe(
                recipe,
                data,
                dataset="synthpedes",
                output_dir=out,
                epochs=1,
                device="cpu",
                progress=False,
                **kwargs,
            )
            runs[key] = load_file(str(out / "retriever" / "model.safetensors"))
        return runs[key]

    return run


def _identical(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_identical_runs_give_bit_identical_weights(train: Callable[..., Weights]) -> None:
    torch.manual_seed(123)  # what the caller's global streams hold must not matter
    a = train("a")
    torch.manual_seed(456)
    torch.rand(1000)
    assert _identical(a, train("b"))


def test_runs_with_data_workers_are_identical_too(train: Callable[..., Weights]) -> None:
    torch.manual_seed(1)
    a = train("a", num_workers=1, seed=7)
    torch.manual_seed(2)
    assert _identical(a, train("b", num_workers=1, seed=7))


def test_the_seed_changes_the_run(train: Callable[..., Weights]) -> None:
    assert not _identical(train("a", num_workers=1, seed=7), train("a", num_workers=1, seed=8))


@pytest.mark.parametrize(("argv", "seed"), [([], None), (["--seed", "3"], 3)])
def test_cli_train_passes_its_seed(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], seed: int | None
) -> None:
    import textreid.pipeline
    from textreid.cli import main

    seen: dict[str, Any] = {}

    def fake_train_recipe(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return types.SimpleNamespace(test_metrics=None)  # as on a torchrun rank > 0

    monkeypatch.setattr(textreid.pipeline, "train_recipe", fake_train_recipe)
    assert main(["train", "--recipe", "tiny-irra", "--data", "d", *argv]) == 0
    assert seen["seed"] == seed  # None: the recipe's own seed
