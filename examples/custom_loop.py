"""Train YOUR OWN model with losses imported from textreid.

The model below is deliberately not a textreid model: a four-layer CNN for images and a
bag of token embeddings for captions. Only three things come from textreid: the dataset
(SynthPEDES, generated on the spot), the objective (SDM + ID through ``WeightedSum``) and the
evaluation (R@K / mAP / mINP by counting).

    python examples/custom_loop.py --smoke          # seconds on a CPU
    python examples/custom_loop.py --epochs 10      # a longer run, a few minutes on a CPU
    python examples/custom_loop.py --data my-synth  # reuse a folder written by `textreid synth`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import textreid
from textreid.data import IdentitySampler, ImageTextDataset, build_dataset, build_transforms
from textreid.losses import IDLoss, SDMLoss, WeightedSum
from textreid.tokenization import CLIPTokenizer


class TinyImageEncoder(nn.Module):
    """Images ``[B, 3, H, W]`` -> features ``[B, D]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for out in (16, 32, 64, 64):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.BatchNorm2d(out)]
            layers.append(nn.ReLU(inplace=True))
            width = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(width, dim)

    def forward(self, images: Tensor) -> Tensor:
        features: Tensor = self.proj(self.body(images))
        return features


class TinyTextEncoder(nn.Module):
    """Token ids ``[B, L]`` (0 = padding) -> features ``[B, D]``: a mean of token embeddings."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, ids: Tensor) -> Tensor:
        features: Tensor = self.proj(self.embed(ids))
        return features


@torch.no_grad()
def evaluate(
    image_encoder: nn.Module,
    text_encoder: nn.Module,
    split: textreid.data.PedesSplit,
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int],
) -> textreid.RetrievalMetrics:
    """Text-to-image metrics of the two encoders on an evaluation split."""
    image_encoder.eval()
    text_encoder.eval()
    transform = build_transforms(image_size, train=False)
    from textreid.data import load_image

    images = torch.stack([transform(load_image(p)) for p in split.img_paths])
    gallery = image_encoder(images)
    queries = text_encoder(tokenizer(split.captions))
    image_encoder.train()
    text_encoder.train()
    return textreid.evaluate(
        queries,  # text queries ...
        gallery,  # ... against image gallery
        query_pids=torch.as_tensor(split.caption_pids),
        gallery_pids=torch.as_tensor(split.image_pids),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch (seconds)")
    parser.add_argument("--data", default=None, help="a SynthPEDES root (default: write one)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.identities = 1, 24
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synthpedes"
        if args.data is None:
            images_per_identity = 2 if args.smoke else 4
            textreid.write_synthpedes(
                root, num_identities=args.identities, images_per_identity=images_per_identity
            )
        data = build_dataset("synthpedes", root)
        print(data.summary())

        image_size = (64, 32)
        dim = 64
        tokenizer = CLIPTokenizer(context_length=32)
        train_set = ImageTextDataset(
            data.train, tokenizer, build_transforms(image_size, train=True, img_aug=False)
        )
        batch_size = 16
        sampler = IdentitySampler(
            [s.pid for s in data.train], batch_size, num_instances=2, seed=args.seed
        )
        loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True)

        image_encoder = TinyImageEncoder(dim)
        text_encoder = TinyTextEncoder(tokenizer.vocab_size, dim)
        # The two textreid losses. IDLoss owns a classifier: its parameters are trained too
        # (WeightedSum registers it as a sub-module, so objective.parameters() includes it).
        objective = WeightedSum(
            {
                "sdm": (1.0, SDMLoss()),  # IRRA's defaults: temperature 0.02
                "id": (1.0, IDLoss(num_classes=data.num_classes, dim=dim)),
            }
        )
        params = [
            *image_encoder.parameters(),
            *text_encoder.parameters(),
            *objective.parameters(),
        ]
        optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for step, batch in enumerate(loader):
                image_feats = image_encoder(batch["images"])
                text_feats = text_encoder(batch["text_ids"])
                # Image features first, text features second, then the identities.
                out = objective(image_feats, text_feats, batch["pids"])
                optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                optimizer.step()
                if step % 10 == 0:
                    terms = ", ".join(f"{k} {v.item():.3f}" for k, v in out.terms.items())
                    print(f"epoch {epoch} step {step:3d}  loss {out.total.item():.3f} ({terms})")

        metrics = evaluate(image_encoder, text_encoder, data.test, tokenizer, image_size)
        print(metrics.format_table("test t2i"))
        print(f"chance R@1 is about {100.0 / data.test.num_ids:.1f}%")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
