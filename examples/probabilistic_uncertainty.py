"""Probabilistic embeddings: which text queries is the model unsure about?

A tiny CLIP-style dual encoder gets one Gaussian head per modality (mean + log-variance,
``textreid.heads.GaussianHead``) and is trained with the PCME++ closed-form sampled-distance
loss (``textreid.losses.CSDLoss``) on SynthPEDES. At test time every caption is scored against
the gallery with ``gaussian_scores`` and the captions are ranked by their uncertainty (the
mean variance of their Gaussian). Vague captions ("This stocky woman has long hair.") should
come out as the most uncertain ones.

The plot (uncertainty against the rank of the first correct image) is drawn with matplotlib
when it is installed; otherwise a CSV with the same numbers is written.

    python examples/probabilistic_uncertainty.py --smoke           # seconds on a CPU
    python examples/probabilistic_uncertainty.py --epochs 8 --out uncertainty
"""

from __future__ import annotations

import argparse
import csv
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
from textreid.heads import GaussianHead, gaussian_scores
from textreid.losses import CSDLoss
from textreid.tokenization import CLIPTokenizer


class ProbabilisticEncoder(torch.nn.Module):
    """A dual encoder whose outputs become Gaussians (one head per modality)."""

    def __init__(self, image_size: tuple[int, int], embed_dim: int) -> None:
        super().__init__()
        self.encoder = textreid.create_model("tiny", image_size=image_size, context_length=32)
        width = self.encoder.config.embed_dim
        self.image_head = GaussianHead(width, embed_dim)
        self.text_head = GaussianHead(width, embed_dim)

    def encode_image(self, images: torch.Tensor) -> textreid.heads.GaussianEmbedding:
        out: textreid.heads.GaussianEmbedding = self.image_head(self.encoder.encode_image(images))
        return out

    def encode_text(self, ids: torch.Tensor) -> textreid.heads.GaussianEmbedding:
        out: textreid.heads.GaussianEmbedding = self.text_head(self.encoder.encode_text(ids))
        return out


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
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--identities", type=int, default=120)
    parser.add_argument("--out", default="uncertainty", help="output path without suffix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.identities = 1, 15
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthpedes"
        images_per_identity = 2 if args.smoke else 4
        textreid.write_synthpedes(
            root, num_identities=args.identities, images_per_identity=images_per_identity
        )
        data = build_dataset("synthpedes", root)
        image_size = (64, 32)
        tokenizer = CLIPTokenizer(context_length=32)
        model = ProbabilisticEncoder(image_size, embed_dim=32)
        loss_fn = CSDLoss()  # owns the learnable scale a and shift b of the match probability
        train_set = ImageTextDataset(
            data.train, tokenizer, build_transforms(image_size, train=True, img_aug=False)
        )
        sampler = IdentitySampler([s.pid for s in data.train], 16, num_instances=2)
        loader = DataLoader(train_set, batch_size=16, sampler=sampler, drop_last=True)
        optimizer = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-3)

        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                image = model.encode_image(batch["images"])
                text = model.encode_text(batch["text_ids"])
                loss = loss_fn(image, text, batch["pids"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            print(f"epoch {epoch}: loss {loss.item():.4f}")

        # Gaussian features of the test split (small enough for one batch each).
        model.eval()
        transform = build_transforms(image_size, train=False)
        with torch.no_grad():
            images = torch.stack([transform(load_image(p)) for p in data.test.img_paths])
            gallery = model.encode_image(images)
            queries = model.encode_text(tokenizer(data.test.captions))
            # Higher score = more similar: minus the closed-form sampled distance.
            scores, uncertainty = gaussian_scores(queries, gallery, "csd")
        metrics = textreid.evaluate(
            scores=scores,
            query_pids=torch.as_tensor(data.test.caption_pids),
            gallery_pids=torch.as_tensor(data.test.image_pids),
            return_ranks=True,
        )
        print(metrics.format_table("test t2i"))
        assert metrics.first_positive_ranks is not None
        order = uncertainty.argsort(descending=True).tolist()
        rows: list[dict[str, object]] = [
            {
                "caption": data.test.captions[i],
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
