"""Probabilistic embeddings: which text queries is the model unsure about?

A small CLIP-style dual encoder is trained on SynthPEDES with the UCA method
(``textreid.methods.UCAMethod``): every image and caption becomes a Gaussian (the encoder's
feature as the mean, a log-variance head over its tokens). At test time every caption is
scored against the gallery with the method's Gaussian distance and the captions are ranked by
their uncertainty (the mean variance of their Gaussian). Vague captions, which fit many
people, come out as the most uncertain ones: the script reports the correlation of the
uncertainty with the number of attribute words in the caption, and how often deleting a
caption's attribute words ("The man wears a coat" -> "The man wears a") raises it.

The plot (uncertainty against the rank of the first correct image) is drawn with matplotlib
when it is installed; otherwise a CSV with the same numbers is written.

    python examples/probabilistic_uncertainty.py --smoke           # seconds on a CPU
    python examples/probabilistic_uncertainty.py --epochs 14 --out uncertainty
"""

from __future__ import annotations

import argparse
import csv
import re
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import textreid
from textreid.data import (
    IdentitySampler,
    ImageTextDataset,
    build_dataset,
    build_transforms,
    load_image,
)
from textreid.heads import GaussianEmbedding, gaussian_scores
from textreid.methods import UCAMethod
from textreid.text import PEDESTRIAN_ATTRIBUTE_WORDS, attribute_token_sequences
from textreid.tokenization import CLIPTokenizer

IMAGE_SIZE = (32, 16)


def build_method(tokenizer: CLIPTokenizer) -> UCAMethod:
    """UCA with its default objective around a CLIP small enough for a CPU."""
    encoder = textreid.create_model(
        "tiny",
        image_size=IMAGE_SIZE,
        context_length=tokenizer.context_length,
        embed_dim=32,
        vision={"patch_size": 8, "width": 32, "layers": 1, "heads": 2},
        text={"width": 32, "layers": 1, "heads": 2},
    )
    sequences = attribute_token_sequences(tokenizer.encode)
    assert tokenizer.mask_token_id is not None
    return UCAMethod(encoder, sequences, mask_token_id=tokenizer.mask_token_id, cmt_depth=1)


def attribute_words(caption: str) -> list[str]:
    words = [re.sub(r"[^a-z-]", "", w.lower()) for w in caption.split()]
    return [w for w in words if w in PEDESTRIAN_ATTRIBUTE_WORDS]


def without_attributes(caption: str) -> str:
    keep = [w for w in caption.split() if not attribute_words(w)]
    return " ".join(keep)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def write_report(rows: list[dict[str, object]], out: Path) -> Path:
    """A scatter plot if matplotlib is installed, else a CSV with the same columns."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = out.with_suffix(".csv")
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path
    path = out.with_suffix(".png")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([r["uncertainty"] for r in rows], [r["first_positive_rank"] for r in rows], s=8)
    ax.set_xlabel("query uncertainty (mean variance)")
    ax.set_ylabel("rank of the first correct image")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch (seconds)")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--out", default="uncertainty", help="output path without suffix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.identities = 1, 15
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthpedes"
        textreid.write_synthpedes(root, num_identities=args.identities, images_per_identity=4)
        data = build_dataset("synthpedes", root)
        tokenizer = CLIPTokenizer(context_length=40, mask_token="<|mask|>")
        method = build_method(tokenizer)
        train_set = ImageTextDataset(
            data.train, tokenizer, build_transforms(IMAGE_SIZE, train=True, img_aug=False)
        )
        batch_size = 16 if args.smoke else 32
        sampler = IdentitySampler([s.pid for s in data.train], batch_size, num_instances=2)
        loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True)
        params = [p for p in method.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)

        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                out = method(batch)
                optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                optimizer.step()
            print(f"epoch {epoch}: loss {out.total.item():.4f}")

        # Gaussian features of the test split (small enough for one batch each), computed as a
        # saved UCA retriever computes them.
        method.eval()
        model = method.retrieval_model()
        transform = build_transforms(IMAGE_SIZE, train=False)
        captions = data.test.captions
        with torch.no_grad():
            images = torch.stack([transform(load_image(p)) for p in data.test.img_paths])
            g = model.encode_image(images)
            gallery = GaussianEmbedding(g["mean"], g["log_var"])
            q = model.encode_text(tokenizer(captions))
            queries = GaussianEmbedding(q["mean"], q["log_var"])
            # Higher score = more similar: minus the distance the method trains with.
            scores, uncertainty = gaussian_scores(queries, gallery, model.distance)
            v = model.encode_text(tokenizer([without_attributes(c) for c in captions]))
            vague = GaussianEmbedding(v["mean"], v["log_var"]).uncertainty()
        metrics = textreid.evaluate(
            scores=scores,
            query_pids=torch.as_tensor(data.test.caption_pids),
            gallery_pids=torch.as_tensor(data.test.image_pids),
            return_ranks=True,
        )
        print(metrics.format_table("test t2i"))
        counts = torch.tensor([len(attribute_words(c)) for c in captions])
        print(
            f"uncertainty {float(uncertainty.min()):.5f}-{float(uncertainty.max()):.5f}; "
            f"correlation with the number of attribute words {correlation(uncertainty, counts):+.2f}; "
            f"attribute words removed: higher for {float((vague > uncertainty).float().mean()):.0%} "
            "of the captions"
        )
        assert metrics.first_positive_ranks is not None
        order = uncertainty.argsort(descending=True).tolist()
        rows: list[dict[str, object]] = [
            {
                "caption": captions[i],
                "uncertainty": round(float(uncertainty[i]), 6),
                "first_positive_rank": int(metrics.first_positive_ranks[i]),
            }
            for i in order
        ]
        print("most uncertain queries:")
        for r in rows[:3]:
            print(f"  {r['uncertainty']:.5f}  rank {r['first_positive_rank']:3d}  {r['caption']}")
        report = write_report(rows, Path(args.out))
        print(f"wrote {report}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
