"""Token re-ranking of the tiny FMFA recipe on SynthPEDES: its effect on the metrics and its cost.

Trains ``tiny-fmfa`` on SynthPEDES (or reuses a finished run), encodes the test split with
tokens (caption: every position; image: the patch tokens, class token dropped, as FMFA's EFA
loss sees them), then compares the global cosine ranking with
:class:`~textreid.retrieval.TokenReranker` re-ranking its top ``K``. The re-ranked list is the
``K`` re-scored hits followed by the rest of the gallery in cosine order, so R@K and mAP are
those of a full ranking. One row ranks the whole gallery by the token similarity alone: how
much identity it carries in the trained model. Time per query is the re-ranking alone (the
median of ``--repeats`` runs over the whole test split, tokens already encoded and stored).

Run by hand, e.g.::

    python benchmarks/token_rerank.py --data synth-data --run runs/tiny-fmfa --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _machine import print_machine  # benchmarks/ is the script's folder
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import DataLoader

from textreid.data import ImageDataset, TextDataset, build_dataset, build_transforms
from textreid.data.synthetic import write_synthpedes
from textreid.heads import SparseTokenSimilarity
from textreid.models import CLIPDualEncoder
from textreid.pipeline import build_method, build_tokenizer, train_recipe
from textreid.recipes import get_recipe
from textreid.retrieval import (
    RetrievalMetrics,
    SearchResult,
    TokenFusion,
    TokenReranker,
    evaluate,
    topk_search,
)
from textreid.text import caption_key_mask

RECIPE = "tiny-fmfa"


@torch.no_grad()
def _encode(
    encoder: CLIPDualEncoder, split: object, tokenizer: object, size: tuple[int, int], interp: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Query and gallery features with tokens, as the FMFA recipe's evaluation encodes them."""
    transform = build_transforms(size, train=False, interpolation=interp)  # type: ignore[arg-type]
    texts = DataLoader(TextDataset(split, tokenizer), batch_size=128)  # type: ignore[arg-type]
    images = DataLoader(ImageDataset(split, transform), batch_size=128)  # type: ignore[arg-type]
    q_global, q_tokens, q_mask = [], [], []
    for batch in texts:
        ids = batch["text_ids"]
        feats, tokens = encoder.encode_text(ids, return_tokens=True)
        q_global.append(feats.float())
        q_tokens.append(tokens.float())
        q_mask.append(caption_key_mask(ids, "token_rerank benchmark"))
    g_global, g_tokens = [], []
    for batch in images:
        feats, tokens = encoder.encode_image(batch["images"], return_tokens=True)
        g_global.append(feats.float())
        g_tokens.append(tokens[:, 1:].float())
    query = {
        "global": torch.cat(q_global),
        "tokens": torch.cat(q_tokens),
        "token_mask": torch.cat(q_mask),
    }
    return query, {"global": torch.cat(g_global), "tokens": torch.cat(g_tokens)}


def _full_ranking(cosine: Tensor, top: SearchResult) -> Tensor:
    """Scores ranking the re-ordered top ``K`` first, in their order, then the rest by cosine."""
    k = top.indices.shape[1]
    lead = 10.0 + torch.arange(k, 0, -1, dtype=cosine.dtype).expand(cosine.shape[0], k)
    return cosine.clone().scatter_(1, top.indices, lead)


def _cells(m: RetrievalMetrics) -> str:
    return " | ".join(f"{v:.2f}" for v in (m.recall[1], m.recall[5], m.recall[10], m.mAP))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("synthpedes"))
    parser.add_argument("--run", type=Path, default=Path("runs/tiny-fmfa"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if not (args.data / "CUHK-PEDES").is_dir():
        write_synthpedes(args.data)
    recipe = get_recipe(RECIPE)
    if not (args.run / "best.safetensors").is_file():
        train_recipe(recipe, args.data, output_dir=args.run, epochs=args.epochs, progress=False)
    data = build_dataset("cuhk-pedes", args.data)
    tokenizer = build_tokenizer(
        recipe, recipe.context_length, train_captions=[s.caption for s in data.train]
    )
    method = build_method(recipe, data.num_classes, tokenizer=tokenizer)
    method.load_state_dict(load_file(str(args.run / "best.safetensors")))
    method.eval()
    encoder = method.encoder
    assert isinstance(encoder, CLIPDualEncoder)
    size = (int(recipe.data.image_size[0]), int(recipe.data.image_size[1]))
    query, gallery = _encode(encoder, data.test, tokenizer, size, recipe.data.interpolation)
    pids = {
        "query_pids": torch.as_tensor(data.test.caption_pids),
        "gallery_pids": torch.as_tensor(data.test.image_pids),
    }
    nq, ng = query["global"].shape[0], gallery["global"].shape[0]
    q = query["global"] / query["global"].norm(dim=1, keepdim=True)
    g = gallery["global"] / gallery["global"].norm(dim=1, keepdim=True)
    cosine = q @ g.T

    print_machine()
    print(
        f"{RECIPE} on SynthPEDES test: {nq} captions x {ng} images, tokens L="
        f"{query['tokens'].shape[1]} x P={gallery['tokens'].shape[1]}, D={q.shape[1]}"
    )
    print("| ranking | K | R@1 | R@5 | R@10 | mAP | re-rank ms / query |")
    print("|---|---|---|---|---|---|---|")
    base = evaluate(query["global"], gallery["global"], **pids)
    print(f"| global cosine | - | {_cells(base)} | - |")
    # How much identity the token similarity carries on its own, every pair scored.
    exhaustive = SparseTokenSimilarity(include_padding=True)(gallery["tokens"], query["tokens"])
    print(
        f"| token only, every pair | {ng} | {_cells(evaluate(scores=exhaustive.T, **pids))} | - |"
    )
    settings: list[tuple[str, TokenFusion, float, bool]] = [
        ("cosine + token (default)", "sum", 1.0, True),
        ("cosine + 0.1 x token", "sum", 0.1, True),
        ("token only", "token", 1.0, True),
        ("cosine + token, padding masked", "sum", 1.0, False),
    ]
    for k in args.ks:
        first = topk_search(q, g, min(k, ng), normalize=False)
        for name, fusion, weight, padding in settings:
            head = SparseTokenSimilarity(include_padding=padding)
            reranker = TokenReranker(head, fusion=fusion, weight=weight)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = reranker.rerank(first, query, gallery)
                times.append(time.perf_counter() - start)
            m = evaluate(scores=_full_ranking(cosine, out), **pids)
            ms = statistics.median(times) / nq * 1e3
            print(f"| {name} | {k} | {_cells(m)} | {ms:.2f} |")


if __name__ == "__main__":
    main()
