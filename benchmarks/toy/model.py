"""A small class-conditional diffusion transformer (DiT-style), the bundled demo model.

Structure follows DiT (Peebles & Xie) with the pieces caching cares about kept intact:
patchify -> N blocks with adaLN-Zero modulation (shift/scale/gate from the timestep +
class embedding) -> adaLN final layer -> unpatchify. The network predicts the
rectified-flow velocity ``v = noise - x0`` at noise level ``sigma`` for
``x_sigma = (1 - sigma) x0 + sigma noise``. Class ``num_classes`` is the null class used
for classifier-free guidance.

The forward pass is split into ``embed`` / ``blocks`` / ``head`` so that a cache runtime
can skip the block stack (residual reuse) while still running the cheap embedder and head,
exactly as the ComfyUI integration does for real DiTs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ToyDiTConfig:
    image_size: int = 32
    patch: int = 4
    channels: int = 3
    dim: int = 96
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 12

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    @property
    def null_class(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(sigma: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of 1000*sigma (the DiT/ADM convention for t in [0, 1000])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = 1000.0 * sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed(dim: int, side: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (side*side, dim), as in DiT/MAE."""
    def one_axis(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.cat([one_axis(dim // 2, ys), one_axis(dim // 2, xs)], dim=1).float()


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.ada = nn.Linear(dim, 6 * dim)

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)

    def modulated_input(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """norm1(h)*(1+scale)+shift: the quantity TeaCache watches (its change predicts the output's)."""
        shift, scale = self.modulation(c)[:2]
        return modulate(self.norm1(h), shift, scale)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)
        h = h + gate1 * self.attention(modulate(self.norm1(h), shift1, scale1))
        mlp_in = modulate(self.norm2(h), shift2, scale2)
        return h + gate2 * self.fc2(F.gelu(self.fc1(mlp_in), approximate="tanh"))


class ToyDiT(nn.Module):
    def __init__(self, config: ToyDiTConfig = ToyDiTConfig()):
        super().__init__()
        self.config = cfg = config
        p, d = cfg.patch, cfg.dim
        self.patch_embed = nn.Linear(cfg.channels * p * p, d)
        self.register_buffer("pos", sincos_pos_embed(d, cfg.image_size // p), persistent=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_embed = nn.Embedding(cfg.num_classes + 1, d)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_linear = nn.Linear(d, cfg.channels * p * p)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT initialisation: Xavier linears, zeroed adaLN and output layers (blocks start as identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for m in [*(b.ada for b in self.blocks), self.final_ada, self.final_linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # --- the three stages a cache runtime sees ---------------------------
    def embed(self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens h (B, T, D) and the conditioning vector c (B, D)."""
        b, ch, hgt, wid = x.shape
        p = self.config.patch
        patches = x.view(b, ch, hgt // p, p, wid // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, ch * p * p)
        sigma = sigma.expand(b) if sigma.dim() else sigma.repeat(b)
        c = self.t_mlp(timestep_embedding(sigma, 256)) + self.y_embed(y)
        return self.patch_embed(patches) + self.pos, c

    def run_blocks(self, h: torch.Tensor, c: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            h = block(h, c)
        return h

    def head(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Final adaLN layer and unpatchify: tokens -> velocity image (B, C, H, W)."""
        cfg, p = self.config, self.config.patch
        shift, scale = self.final_ada(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        out = self.final_linear(modulate(self.final_norm(h), shift, scale))
        side = cfg.image_size // p
        out = out.view(-1, side, side, cfg.channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(-1, cfg.channels, cfg.image_size, cfg.image_size)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, c = self.embed(x, sigma, y)
        return self.head(self.run_blocks(h, c), c)
