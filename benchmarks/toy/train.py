"""Train the bundled toy DiT: ``python -m benchmarks.toy.train [--steps N] [--out DIR]``.

Rectified-flow training (velocity target ``noise - x0``) on the procedural shapes of
``toy.data``, class labels dropped to the null class with probability 0.1 so that one
network gives both CFG branches. Noise levels are drawn logit-normal (SD3), which spends
most updates at mid noise where the shape is decided. Everything is seeded: the same
command on the same torch version gives the same weights. The run is bounded by a step
count (reproducible) with a wall-time safety stop, on 2 CPU threads by default. Both wall time and process CPU
time are recorded: on a machine shared with other work the wall time grows, while CPU
time / threads stays close to the wall time of a dedicated run.

Output: ``toy_dit.safetensors`` (EMA weights stored as float16: the file stays well under
5 MiB; the sampler computes in float32) and ``toy_dit.json`` (model config, sampler
defaults, data recipe and training record).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import data
from .model import ToyDiT, ToyDiTConfig

DEFAULT_OUT = Path(__file__).with_name("weights")
SAMPLER_DEFAULTS = {"shift": 2.0, "cfg_scale": 3.0, "steps": 50}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def flow_matching_loss(model: ToyDiT, x0: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                       p_uncond: float) -> torch.Tensor:
    b = x0.shape[0]
    sigma = torch.sigmoid(torch.randn(b, generator=g))                 # logit-normal(0, 1)
    noise = torch.randn(x0.shape, generator=g)
    drop = torch.rand(b, generator=g) < p_uncond
    y = torch.where(drop, torch.full_like(y, model.config.null_class), y)
    s = sigma.view(b, 1, 1, 1)
    x_sigma = (1 - s) * x0 + s * noise
    return (model(x_sigma, sigma, y) - (noise - x0)).square().mean()


@torch.no_grad()
def ema_update(ema: ToyDiT, model: ToyDiT, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


@dataclass(frozen=True)
class Loop:
    """The optimisation both trained models share (this toy DiT and the in-host fidelity models): AdamW,
    warm-up then cosine, gradient clipping at 1, an EMA whose decay ramps up to ``ema_cap``, a log line
    every ``log_every`` steps, and a wall-time safety stop."""

    steps: int
    lr: float
    max_minutes: float
    ema_cap: float
    log_every: int = 50
    loss_window: int = 100          # final_loss: the mean of the last this many losses
    tag: str = "train"


def fit(net: torch.nn.Module, loss_of_batch: Callable[[], torch.Tensor], loop: Loop) -> tuple[torch.nn.Module, dict]:
    """Train ``net`` on ``loss_of_batch()`` (which draws its own batch); returns the EMA copy and what was
    measured (steps done, wall and CPU minutes, threads, final loss)."""
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=loop.lr, weight_decay=0.0, betas=(0.9, 0.99))
    start, cpu0, losses, done = time.perf_counter(), time.process_time(), [], 0
    for step in range(loop.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, loop.steps, loop.lr, warmup=min(200, loop.steps // 10 + 1))
        loss = loss_of_batch()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema_update(ema, net, decay=min(loop.ema_cap, (1 + step) / (10 + step)))
        losses.append(loss.item())
        done = step + 1
        elapsed = time.perf_counter() - start
        if done % loop.log_every == 0 or done == loop.steps:
            recent = sum(losses[-loop.log_every:]) / len(losses[-loop.log_every:])
            print(f"[{loop.tag}] step {done}/{loop.steps}  loss {recent:.4f}  {elapsed / 60:.1f} min wall, "
                  f"{(time.process_time() - cpu0) / 60:.1f} min CPU", flush=True)
        if elapsed > 60 * loop.max_minutes:
            print(f"[{loop.tag}] wall-time limit of {loop.max_minutes} min reached at step {done}", flush=True)
            break
    tail = losses[-loop.loss_window:]
    return ema, {"steps_done": done, "wall_minutes": round((time.perf_counter() - start) / 60, 2),
                 "cpu_minutes": round((time.process_time() - cpu0) / 60, 2), "threads": torch.get_num_threads(),
                 "final_loss": round(sum(tail) / len(tail), 5)}


def train(steps: int, batch_size: int, lr: float, seed: int, max_minutes: float,
          config: ToyDiTConfig, log_every: int = 50) -> tuple[ToyDiT, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ToyDiT(config)

    def loss_of_batch() -> torch.Tensor:
        x0, y = data.batch(batch_size, g)
        return flow_matching_loss(model, x0, y, g, p_uncond=0.1)

    ema, measured = fit(model, loss_of_batch, Loop(steps, lr, max_minutes, ema_cap=0.995, log_every=log_every))
    record = {"steps_done": measured["steps_done"], "steps_planned": steps, "batch_size": batch_size,
              "peak_lr": lr, "seed": seed, **{k: measured[k] for k in ("wall_minutes", "cpu_minutes", "threads",
                                                                         "final_loss")},
              "torch": torch.__version__}
    return ema, record


def save(model: ToyDiT, record: dict, out: Path) -> Path:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    weights = out / "toy_dit.safetensors"
    save_file(tensors, str(weights), metadata={"format": "otcache.toy_dit", "dtype": "float16"})
    meta = {"model": model.config.to_dict(), "sampler": SAMPLER_DEFAULTS,
            "classes": [data.class_name(i) for i in range(data.NUM_CLASSES)],
            "data_recipe": data.__doc__.strip(), "training": record}
    (out / "toy_dit.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return weights


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=15.0, help="safety stop (the step count is the budget)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--grid", type=Path, default=None, help="sample grid PNG (default: OUT/samples.png)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, record = train(args.steps, args.batch_size, args.lr, args.seed, args.max_minutes, ToyDiTConfig())
    weights = save(model, record, args.out)
    print(f"[train] saved {weights} ({weights.stat().st_size / 2**20:.2f} MiB) after {record['wall_minutes']} min")
    from .grid import save_class_grid
    grid = save_class_grid(weights, args.grid or args.out / "samples.png")
    print(f"[train] sample grid: {grid}")


if __name__ == "__main__":
    main()
