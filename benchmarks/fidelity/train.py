"""Train a benchmark model: ``python -m benchmarks.fidelity.train --family wan21|flux [--steps N]``.

The recipe, seeded end to end (same torch version and thread count -> same weights):

- data: the procedural shapes of ``toy.data`` (12 prompts = colour x shape, 32x32 RGB), as exact latents
  (``codec``), prompts as frozen word embeddings (``prompts``), 10 % of prompts dropped to the empty prompt
  so that one network gives both CFG branches;
- noise levels: t logit-normal(0, 1), mapped through the family's own ComfyUI ``model_sampling`` (Wan:
  shift 8, FLUX.1-schnell: shift 1.0), so training sees the noise levels sampling will visit ("shifted");
  or, for a model that is sampled at a shift it was not trained at, t used as sigma directly ("plain");
- loss: rectified-flow velocity ``noise - x0``, computed through ComfyUI's ``BaseModel.apply_model`` (the
  code path sampling uses, timestep scaling and conditioning included);
- AdamW (lr 1e-3, betas 0.9/0.99), warm-up then cosine to 5 %, batch 32, gradient clipping at 1, EMA 0.998
  (the EMA weights are saved, as float16).

ComfyUI's blocks update some activations in place (``x += ...``), which autograd refuses for tensors it saved;
a saved-tensor hook keeps a private copy of each, so the forward is ComfyUI's own, unchanged.

Writes ``weights/<family>_shapes.safetensors`` (the diffusion model's state dict, as UNETLoader reads it),
``<family>_shapes.json`` (config, recipe, training record) and ``<family>_shapes.png`` (a sample grid).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import codec, host, prompts, setups
from otcache_pack.benchmarks.toy import data
from otcache_pack.benchmarks.toy.train import Loop, fit   # the toy model's optimisation loop


def _keep_copy(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def noise_levels(model, b: int, g: torch.Generator, noise: str) -> torch.Tensor:
    """Training sigmas: t logit-normal(0, 1), through the model's own shift ("shifted") or as is ("plain")."""
    t = torch.sigmoid(torch.randn(b, generator=g))
    if noise == "plain":
        return t.clamp(1e-3, 1.0)
    ms = model.model_sampling
    return ms.sigma(ms.timestep(t)).float().clamp(1e-3, 1.0)


def training_batch(setup: setups.Setup, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Internal latents and labels of one batch, at one of the setup's training sides and frame counts (drawn
    after the images, so a setup with one of each trains on exactly the stream it always did)."""
    labels = torch.randint(0, data.NUM_CLASSES, (size,), generator=g)
    frames = setup.train_frames[0]
    if len(setup.train_frames) > 1:
        frames = setup.train_frames[int(torch.randint(0, len(setup.train_frames), (1,), generator=g))]
    if frames > 1:
        x0 = codec.encode_clip(data.render_clip(labels, g, frames))
    else:
        x0 = codec.encode_internal(data.render(labels, g), setup.video)
    if len(setup.train_sides) > 1:
        side = setup.train_sides[int(torch.randint(0, len(setup.train_sides), (1,), generator=g))]
        if side != data.IMAGE_SIZE:   # a smaller picture of the same scene (box filter, as the renderer does)
            flat = x0.flatten(0, 1) if x0.ndim == 5 else x0
            flat = torch.nn.functional.avg_pool2d(flat, data.IMAGE_SIZE // side)
            x0 = flat.unflatten(0, x0.shape[:2]) if x0.ndim == 5 else flat
    return x0, labels


def velocity_loss(model, setup: setups.Setup, x0: torch.Tensor, labels: torch.Tensor, g: torch.Generator,
                  noise_mode: str = "shifted", p_uncond: float = 0.1) -> torch.Tensor:
    b = x0.shape[0]
    sigma = noise_levels(model, b, g, noise_mode)
    noise = torch.randn(x0.shape, generator=g)
    drop = torch.rand(b, generator=g) < p_uncond
    indices = [None if d else int(y) for d, y in zip(drop.tolist(), labels.tolist())]
    extra = {"y": prompts.pooled(indices)} if setup.pooled else {}
    s = sigma.view((b,) + (1,) * (x0.ndim - 1))
    x_t = (1 - s) * x0 + s * noise
    with torch.autograd.graph.saved_tensors_hooks(_keep_copy, _keep_copy):
        denoised = model.apply_model(x_t, sigma, c_crossattn=prompts.context(indices), **extra)
    return ((x_t - denoised) / s - (noise - x0)).square().mean()


def train(setup: setups.Setup, steps: int, batch_size: int, lr: float, seed: int, max_minutes: float,
          log_every: int = 100) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = setups.new_model(setup)
    net = model.diffusion_model
    net.train()

    def loss_of_batch() -> torch.Tensor:
        x0, labels = training_batch(setup, batch_size, g)
        return velocity_loss(model, setup, x0, labels, g, setup.train_noise)

    loop = Loop(steps, lr, max_minutes, ema_cap=0.998, log_every=log_every, loss_window=200, tag=f"train {setup.name}")
    ema, measured = fit(net, loss_of_batch, loop)
    record = {"steps_done": measured["steps_done"], "steps_planned": steps, "batch_size": batch_size,
              "peak_lr": lr, "seed": seed, **{k: v for k, v in measured.items() if k != "steps_done"},
              "torch": torch.__version__, "comfyui": host.COMFY_VERSION}
    return ema.eval(), record


def save(setup: setups.Setup, net: torch.nn.Module, record: dict) -> Path:
    from safetensors.torch import save_file

    setup.weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(setup.weights), metadata={"format": "otcache.fidelity_model", "family": setup.name})
    meta = {"family": setup.name, "train_noise": setup.train_noise, "train_sides": list(setup.train_sides),
            "train_frames": list(setup.train_frames), "comfy_config": setup.config_name, "unet_config": setup.unet_config,
            "sampler": {"sampler": setup.sampler, "scheduler": setup.scheduler, "cfg": setup.cfg},
            "prompts": [prompts.prompt_text(i) for i in range(prompts.NUM_PROMPTS)],
            "recipe": __doc__.split("The recipe", 1)[1].split("Writes", 1)[0].strip(),
            "data": data.__doc__.strip(), "training": record}
    setup.record.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return setup.weights


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(setups.SETUPS), required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=15.0, help="safety stop (the step count is the budget)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = setups.SETUPS[args.family]
    net, record = train(setup, args.steps, args.batch_size, args.lr, args.seed, args.max_minutes)
    path = save(setup, net, record)
    print(f"[train {setup.name}] saved {path} ({path.stat().st_size / 2**20:.2f} MiB) after "
          f"{record['wall_minutes']} min")
    from .grid import save_grid
    print(f"[train {setup.name}] sample grid: {save_grid(setup)}")


if __name__ == "__main__":
    main()
