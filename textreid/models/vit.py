"""The CLIP vision tower: a ViT with (possibly overlapping) patches on a non-square grid."""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn

from textreid._checks import check_tensor
from textreid.config import VisionConfig
from textreid.models.transformer import Transformer

__all__ = ["ConvStem", "VisionTransformer"]


class ConvStem(nn.Sequential):
    """A convolutional patch embedding (Xiao et al., "Early Convolutions Help Transformers See
    Better", NeurIPS 2021, arXiv:2106.14881), :class:`~textreid.config.VisionConfig`'s
    ``stem="conv"``.

    For each factor 2 of ``patch_size`` a 3x3 stride-2 convolution (no bias), BatchNorm and
    ReLU, the channels doubling up to ``width / 2``; then one convolution (with bias) of
    kernel and stride the odd factor left, to ``width`` channels. On image sides divisible by
    ``patch_size`` it gives the grid of a ``patch_size`` patch convolution (12 = 2 * 2 * 3:
    two 3x3 stride-2 layers, then a 3x3 stride-3 one).

    Args:
        patch_size: the total stride.
        width: output channels (the transformer width).
    """

    def __init__(self, patch_size: int, width: int) -> None:
        twos = (patch_size & -patch_size).bit_length() - 1
        odd = patch_size >> twos
        layers: list[nn.Module] = []
        channels = 3
        for i in range(twos):
            out = max(width >> (twos - i), 8)
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, width, odd, stride=odd))
        super().__init__(*layers)


class VisionTransformer(nn.Module):
    """CLIP ViT image encoder (OpenAI parameter names).

    ``conv1`` (no bias, kernel ``patch_size``, stride ``stride``; a :class:`ConvStem` with
    ``config.stem == "conv"``) cuts the image into an
    ``n_h x n_w`` grid, ``n = (size - patch) // stride + 1``, flattened row-major; a class
    token is prepended, position embeddings added, then ``ln_pre``, the transformer, and
    ``ln_post`` on **all** tokens followed by ``proj`` (as IRRA uses them). The pooled feature
    is the projected class token, or with ``config.pool == "max"`` the per-channel maximum of
    all projected tokens.

    Args:
        config: The tower's hyper-parameters.
        embed_dim: D, the output width of ``proj``.

    Shapes:
        images ``[B, 3, H, W]`` with ``(H, W) == config.image_size``; pooled ``[B, D]``;
        tokens ``[B, P, D]`` with ``P = 1 + n_h * n_w`` (class token first).
    """

    def __init__(self, config: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        w = config.width
        self.conv1: nn.Module = (
            ConvStem(config.patch_size, w)
            if config.stem == "conv"
            else nn.Conv2d(
                3, w, kernel_size=config.patch_size, stride=config.effective_stride, bias=False
            )
        )
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(config.num_tokens, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, config.layers, config.heads, config.mlp_ratio, config.act)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, embed_dim))
        self.init_clip_()

    def init_clip_(self) -> None:
        """OpenAI CLIP's initialisation: ``N(0, width^-1/2)`` embeddings and projection.

        The residual blocks keep their construction-time initialisation, as in OpenAI CLIP
        (which only re-initialises the text transformer).
        """
        scale = self.config.width**-0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid ``(n_h, n_w)``."""
        return self.config.grid_size

    @overload
    def forward(self, images: Tensor, return_tokens: Literal[False] = False) -> Tensor: ...

    @overload
    def forward(self, images: Tensor, return_tokens: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(
        self, images: Tensor, return_tokens: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Encode images.

        Args:
            images: ``[B, 3, H, W]`` floating tensor, already normalised; cast to the
                weights' dtype.
            return_tokens: Also return every token after ``ln_post`` and ``proj``.

        Returns:
            ``pooled [B, D]`` (the projected class token, or the tokens' per-channel maximum
            with ``config.pool == "max"``), or ``(pooled, tokens [B, P, D])``.

        Raises:
            TypeError: If ``images`` is not a floating tensor.
            ValueError: If ``images`` is not ``[B, 3, H, W]`` with the configured size.
        """
        fn = "VisionTransformer.forward"
        check_tensor(images, "images", fn, ndim=4, kind="float", dims="(B, 3, H, W)")
        if images.shape[1] != 3:
            raise ValueError(
                f"{fn}: images must have 3 channels (RGB), got {images.shape[1]} "
                f"(shape {tuple(images.shape)})"
            )
        if tuple(images.shape[2:]) != self.config.image_size:
            raise ValueError(
                f"{fn}: images are {tuple(images.shape[2:])} (H, W) but the model is "
                f"configured for {self.config.image_size}; resize the images or build the "
                "model with image_size=... (position embeddings are resampled at load time)"
            )
        x = self.conv1(images.to(self.class_embedding.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        tokens: Tensor = self.ln_post(x) @ self.proj
        pooled: Tensor = tokens.amax(1) if self.config.pool == "max" else tokens[:, 0]
        if return_tokens:
            return pooled, tokens
        return pooled
