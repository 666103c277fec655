"""SwinIR-light (Liang et al., 2021, "SwinIR: Image Restoration Using Swin Transformer").

A 3x3 conv embeds the LR image; residual Swin transformer blocks (RSTB: window self-attention layers with a
relative position bias, every other one on cyclically shifted windows, then a 3x3 conv and a residual) and a
conv with the long skip extract deep features; the lightweight 'pixelshuffledirect' upsampler (one conv to
3*scale^2 channels, pixel shuffle) reconstructs HR. Defaults are the official light model (embed 60, 4 RSTB x 6
layers, window 8, 6 heads, mlp ratio 2, image range 1 with the DIV2K mean subtracted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srtrain.models.edsr import rgb_mean
from srtrain.models.registry import register

DROP_PATH_RATE = 0.1  # official default: stochastic depth rising linearly from 0 over all layers
MASKED = -100.0  # the official additive mask value; finite, so bf16 softmax stays well defined
MAX_WINDOW = 32  # the largest windows in the literature (HAT, SwinIR variants) are 16
MASK_CACHE_SIZE = 4  # padded input sizes whose shift masks are kept (training uses one; eval images vary)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple of `multiple`: reflect as the official test code, replicate if too small."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B, windows, window*window, C): the tokens of each non-overlapping window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(b, -1, window * window, c)


def window_merge(x: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of `window_partition`: (B, windows, window*window, C) -> (B, H, W, C)."""
    b, _, _, c = x.shape
    x = x.view(b, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(b, h, w, c)


def relative_position_index(window: int) -> Tensor:
    """(N, N) index into the (2*window-1)^2 bias table for every pair of tokens in a window (N = window^2)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), each in [0, 2*window-2]
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> Tensor:
    """(windows, N, N) additive mask for shifted windows of an (h, w) map.

    The cyclic shift wraps the bottom/right border regions into windows next to unrelated pixels; tokens may
    only attend to tokens from the same region, exactly as in the Swin/SwinIR code.
    """

    def bands(n: int) -> Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - window).long() + (idx >= n - shift).long()

    region = bands(h)[:, None] * 3 + bands(w)[None, :]
    region = window_partition(region[None, :, :, None], window)[0, :, :, 0]  # (windows, N)
    return (region[:, :, None] != region[:, None, :]).float() * MASKED


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias per head."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: (B, windows, N, C); mask: (windows, N, N) or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, windows, heads, N, head_dim)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias + mask[:, None]  # (windows, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinLayer(nn.Module):
    """Pre-norm (shifted) window attention and MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        from torchvision.ops import StochasticDepth  # lazily: torchvision's import costs every command seconds

        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: (B, H, W, C) with H, W multiples of the window; mask: the shifted-window mask for this size."""
        h, w = x.shape[1:3]
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin layers, a 3x3 conv (reintroduces convolutional locality), residual."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, drop_paths: list[float]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, rate)
            for i, rate in enumerate(drop_paths)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: (B, H, W, C)."""
        y = x
        for layer in self.layers:
            y = layer(y, mask)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _init_linear(module: nn.Module) -> None:
    """Truncated-normal linear weights and zero biases, as the official (Swin) initialisation."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


@register("swinir")
class SwinIR(nn.Module):
    def __init__(
        self,
        scale: int,
        embed_dim: int = 60,
        depth: int = 6,
        n_blocks: int = 4,
        heads: int = 6,
        window: int = 8,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"swinir: embed_dim {embed_dim} must be divisible by heads {heads}")
        if not 1 <= window <= MAX_WINDOW:  # attention is over window^2 tokens: 100 takes tens of GB for any input
            raise ValueError(f"swinir: window must be in [1, {MAX_WINDOW}] (the paper's is 8), got {window}")
        if mlp_ratio <= 0:
            raise ValueError(f"swinir: mlp_ratio must be > 0, got {mlp_ratio}")
        self.scale, self.window = scale, window
        self.register_buffer("mean", rgb_mean(), persistent=False)  # subtracted as in the official model
        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(embed_dim)
        layers = depth * n_blocks  # stochastic depth rises linearly over the layers (plain floats: meta-safe)
        rates = [DROP_PATH_RATE * i / max(1, layers - 1) for i in range(layers)]
        self.blocks = nn.ModuleList(
            RSTB(embed_dim, heads, window, mlp_ratio, rates[i * depth : (i + 1) * depth]) for i in range(n_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.apply(_init_linear)
        self._masks: dict[tuple[int, int, torch.device], Tensor] = {}

    def _shift_mask(self, h: int, w: int, device: torch.device) -> Tensor | None:
        """The shifted-window mask for the padded size, cached (a few sizes, most recent kept)."""
        shift = self.window // 2
        if not shift:
            return None
        key = (h, w, device)
        mask = self._masks.pop(key, None)
        if mask is None:
            mask = shifted_window_mask(h, w, self.window, shift, device)
        self._masks[key] = mask
        while len(self._masks) > MASK_CACHE_SIZE:
            del self._masks[next(iter(self._masks))]
        return mask

    def forward(self, lr: Tensor) -> Tensor:
        h, w = lr.shape[-2:]
        x = self.conv_first(pad_to_multiple(lr, self.window) - self.mean)
        feats = self.embed_norm(x.permute(0, 2, 3, 1))  # (B, H, W, C) tokens
        mask = self._shift_mask(feats.shape[1], feats.shape[2], feats.device)
        for block in self.blocks:
            feats = block(feats, mask)
        x = x + self.conv_after_body(self.norm(feats).permute(0, 3, 1, 2))
        return self.upsample(x)[..., : h * self.scale, : w * self.scale] + self.mean
