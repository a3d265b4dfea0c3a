"""torch.compile on the CPU: every method's training step and the retrievers' encoders.

Each registered method's step (loss forward, then backward through the compiled graphs)
gives the eager loss and gradients within float32 tolerance, and breaks its graph no more
often than docs/mixed-precision.md lists (measured with torch 2.14; other versions break
differently, so the budget applies from that version on). Everything compiles with the
``aot_eager`` backend: it traces exactly what inductor receives (Dynamo's graphs,
AOTAutograd's forward and backward graphs) without generating C++, which costs minutes per
model on a 2-core runner. ``TEXTREID_TEST_INDUCTOR=1`` adds the encoders through inductor.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch._dynamo

from tests.methods._helpers import make_batch
from textreid.methods import RetrievalMethod, list_methods
from textreid.pipeline import build_method
from textreid.recipes import get_recipe, list_recipes
from textreid.tokenization import CLIPTokenizer

SIZE = (48, 24)

#: Graph breaks of one training step on the CPU (docs/mixed-precision.md, "torch.compile").
GRAPH_BREAKS = {"cmr": 0, "fmfa": 0, "irra": 0, "ivt": 12, "uca": 0}
MEASURED_WITH = "2.14"
ENCODER_BACKENDS = ["aot_eager"] + (
    ["inductor"] if os.environ.get("TEXTREID_TEST_INDUCTOR") == "1" else []
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(mask_token="<|mask|>")


def _method(name: str) -> RetrievalMethod:
    tiny = [n for n in list_recipes() if n.startswith("tiny-") and get_recipe(n).method == name]
    assert tiny, f"method {name!r} has no tiny recipe"
    base = get_recipe(tiny[0])
    torch.manual_seed(0)
    # The fixture's CLIP tokenizer sizes the text tower (the recipes' own vocabulary comes
    # from training captions), so the batches of make_batch fit.
    return build_method(
        base.replace(model_overrides={**base.model_overrides, "image_size": SIZE}),
        3,
        tokenizer=CLIPTokenizer(mask_token="<|mask|>"),
    )


def test_every_method_has_a_graph_break_budget() -> None:
    assert set(GRAPH_BREAKS) == set(list_methods())


@pytest.mark.parametrize("name", list_methods())
def test_compiled_training_step_matches_eager(name: str, tokenizer: CLIPTokenizer) -> None:
    eager = _method(name)
    compiled_copy = copy.deepcopy(eager)
    batch = make_batch(tokenizer, size=SIZE)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(compiled_copy, backend="aot_eager")

    torch.manual_seed(1)  # the methods' random masking draws the same masks in both runs
    ref = eager(batch).total
    ref.backward()
    torch.manual_seed(1)
    got = compiled(batch).total
    got.backward()

    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for (n, p), q in zip(eager.named_parameters(), compiled_copy.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert q.grad is not None
            scale = p.grad.abs().max().clamp_min(1e-6)
            err = float((q.grad - p.grad).abs().max() / scale)
            assert err < 1e-4, f"{n}: compiled gradient differs by {err:.1e} (relative)"
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    if torch.__version__ >= MEASURED_WITH:
        assert breaks <= GRAPH_BREAKS[name], dict(torch._dynamo.utils.counters["graph_break"])


@pytest.mark.parametrize("backend", ENCODER_BACKENDS)
@pytest.mark.parametrize("name", ["irra", "ivt"])
def test_compiled_retrieval_encoders_match_eager(
    name: str, backend: str, tokenizer: CLIPTokenizer
) -> None:
    model = _method(name).retrieval_model().eval()
    batch = make_batch(tokenizer, size=SIZE)
    torch._dynamo.reset()
    with torch.no_grad():
        for encode, x in (
            (model.encode_image, batch["images"]),
            (model.encode_text, batch["text_ids"]),
        ):
            ref = encode(x)
            got = torch.compile(encode, backend=backend)(x)
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
