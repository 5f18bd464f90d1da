"""What Calibrate samples: the (prompt, seed) pairs, one recorded uncached run per pair, and the edge weights.

Each run goes through ComfyUI's own sampling on an interruptible, uncached clone and records the sampler's
latent x_n and velocity v_n = (x_n - denoised_n) / sigma_n at every step, the per-step signals of the
baselines, MagCache's residual norms and FBCache's first-block change (families with block hooks), and the
step times. Tail re-runs (hybrid and global errors) restart from stored latents with each pair's own prompt.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ...otcache_engine.calibration.calibration_run import CalibrationRun
from ...otcache_engine.calibration.edge_errors import combine_weights, e1_weights, global_jobs, global_weights
from ...otcache_engine.errors import CalibrationError
from ...otcache_engine.calibration.hybrid import hybrid_jobs, hybrid_weights
from .sampling import Progress, SamplerSettings, interruptible, sample, tail_sample, to_internal, uncached

MAX_PAIRS = 64


@dataclass(frozen=True, eq=False)
class CalibrationPair:
    """One calibration run's inputs: the sampler settings with this pair's prompt as ``positive``, its seed."""

    settings: SamplerSettings
    seed: int
    prompt: int = 0


def split_prompts(conditioning: Any) -> list[list]:
    """Every entry of a CONDITIONING as a prompt of its own (Conditioning (Combine) gathers several)."""
    if conditioning is None:
        return []
    if not isinstance(conditioning, (list, tuple)) or not all(isinstance(e, (list, tuple)) and len(e) == 2
                                                              for e in conditioning):
        raise CalibrationError("more_prompts must be a CONDITIONING (connect a text encoder, or several "
                               "through Conditioning (Combine))")
    return [[list(entry)] for entry in conditioning]


def calibration_pairs(s: SamplerSettings, seeds: list[int], prompts: list | None = None) -> list[CalibrationPair]:
    """The (prompt, seed) pairs of a calibration: ``s.positive`` then ``prompts``, each paired with its own seed.

    Seeds matter more than prompts: in the in-host benchmark the held-out error of a schedule split by seed,
    not by prompt. So with one seed given, prompt k gets seed + k; with several, pair k takes prompt
    k and seed k, the shorter list repeated, as many pairs as the longer list.
    """
    conds = [s.positive] + list(prompts or [])
    if len(seeds) == 1 and len(conds) > 1:
        seeds = [seeds[0] + k for k in range(len(conds))]
    count = max(len(conds), len(seeds))
    if count > MAX_PAIRS:
        raise CalibrationError(f"at most {MAX_PAIRS} calibration runs (prompts and seeds), got {count}")
    return [CalibrationPair(dataclasses.replace(s, positive=conds[k % len(conds)]), int(seeds[k % len(seeds)]),
                            k % len(conds)) for k in range(count)]


# --- recording one run --------------------------------------------------------------------

class StackRecorder:
    """Block-stack residual norms (MagCache) and first-block change (FBCache), first call of each step.

    Installed as ``patches_replace["dit"]`` on the first and last block of the family's stack of a
    recording clone, wrapping any replacement already there. Families without block hooks record nothing.
    """

    def __init__(self, joint_order: str, last_is_single: bool):
        self.joint_order, self.last_is_single = joint_order, last_is_single
        self.step = 0
        self.h_in: torch.Tensor | None = None
        self.first_res: torch.Tensor | None = None
        self.norms: dict[int, torch.Tensor] = {}
        self.fb: dict[int, float] = {}
        self._prev_first: torch.Tensor | None = None
        self._taken: set[int] = set()

    def first(self, inner: Callable | None) -> Callable:
        def block(args: dict, extra: dict) -> dict:
            out = inner(args, extra) if inner is not None else extra["original_block"](args)
            if self.step not in self._taken:
                img = args["img"]
                self.h_in = img[:1].detach().float()
                res = out["img"][:1].detach().float() - self.h_in if out["img"].shape == img.shape else None
                if res is not None:
                    if self._prev_first is not None and self._prev_first.shape == res.shape:
                        prev = self._prev_first
                        self.fb[self.step] = float((res - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12))
                    self._prev_first = res
            return out
        return block

    def last(self, inner: Callable | None) -> Callable:
        def block(args: dict, extra: dict) -> dict:
            out = inner(args, extra) if inner is not None else extra["original_block"](args)
            if self.step not in self._taken and self.h_in is not None:
                img = out["img"][:1].detach().float()
                n = self.h_in.shape[1]
                if self.last_is_single and img.shape[1] > n:
                    img = img[:, -n:] if self.joint_order == "txt_first" else img[:, :n]
                if img.shape == self.h_in.shape:
                    self.norms[self.step] = (img - self.h_in).norm(dim=-1).reshape(-1).cpu()
                self._taken.add(self.step)
            return out
        return block

    def residual_norms(self, num_steps: int) -> dict[str, torch.Tensor]:
        if sorted(self.norms) != list(range(num_steps)):
            return {}
        return {"img": torch.stack([self.norms[k] for k in range(num_steps)])}

    def signals(self, num_steps: int) -> dict[str, np.ndarray]:
        if sorted(self.fb) != list(range(1, num_steps)):
            return {}
        return {"fbcache_rel_l1": np.array([0.0] + [self.fb[k] for k in range(1, num_steps)])}


def recording_clone(model: Any) -> tuple[Any, StackRecorder | None]:
    """An interruptible, uncached clone with the stack recorder on the first and last block (if any)."""
    from ..runtime.families import detect_family

    m = interruptible(uncached(model))
    spec = detect_family(m.get_model_object("diffusion_model"))
    if not spec.block_caching:
        return m, None
    rec = StackRecorder(spec.joint_order, spec.last_is_single)
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    (k0, i0), (k1, i1) = spec.blocks[0], spec.blocks[-1]
    m.set_model_patch_replace(rec.first(existing.get((k0, i0))), "dit", k0, i0)
    m.set_model_patch_replace(rec.last(existing.get((k1, i1))), "dit", k1, i1)
    return m, rec


def record_run(model: Any, s: SamplerSettings, seed: int, sigmas: torch.Tensor, meta: dict,
               progress: Progress) -> CalibrationRun:
    """One uncached KSampler run with every step recorded (N model calls)."""
    m, rec = recording_clone(model)
    n = sigmas.numel() - 1
    xs: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    times: list[float] = []
    start = [time.perf_counter()]

    def on_step(i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        sigma = float(sigmas[len(xs)]) if len(xs) < n else float("nan")
        xs.append(x.detach().float().cpu())
        outs.append(((x.detach().float() - denoised.detach().float()) / sigma).cpu())
        now = time.perf_counter()
        times.append(now - start[0])
        start[0] = now
        if rec is not None:
            rec.step = len(xs)
        progress.step()

    final = sample(m, s, seed, on_step)
    if len(xs) != n:
        raise CalibrationError(f"sampler {s.sampler_name!r} reported {len(xs)} steps for {n} sigmas; calibrate "
                               f"with a sampler that takes one step per sigma (euler, dpmpp_2m, ...)")
    latents = torch.stack(xs + [to_internal(m, final)])
    signals = {"step_time": np.array(times)}
    norms = {}
    if rec is not None:
        norms = rec.residual_norms(n)
        signals.update(rec.signals(n))
    run = CalibrationRun(sigmas=sigmas, latents=latents, outputs=torch.stack(outs), residual_norms=norms,
                         signals=signals, meta={**meta, "seed": int(seed)})
    return run.with_derived_signals()


# --- edge weights --------------------------------------------------------------------------

def tail_results(model: Any, pair: "CalibrationPair", run: CalibrationRun, jobs: list, progress: Progress) -> dict:
    """Final latents of the runs that cache only edge (i -> j): restart at x_hat_j, sample j..N-1."""
    m = interruptible(uncached(model))
    out = {}
    for job in jobs:
        j, x_hat = job.start_state(run)
        out[job.edge] = tail_sample(m, pair.settings, x_hat, run.sigmas[j:], pair.seed, progress.step)
    return out


def edge_weights(model: Any, pairs: list["CalibrationPair"], runs: list[CalibrationRun], mode: str, max_gap: int,
                 progress: Progress) -> np.ndarray:
    mats = []
    for pair, run in zip(pairs, runs):
        local = e1_weights(run, max_gap, relative=True)
        if mode == "local":
            mats.append(local)
        elif mode == "hybrid":
            res = tail_results(model, pair, run, hybrid_jobs(run.num_steps), progress)
            xn = run.latents[-1].double()
            scale = max(float(xn.abs().mean()), 1e-12)
            glob = {j: float((v.double() - xn).abs().mean()) / scale for (i, j), v in res.items()}
            mats.append(hybrid_weights(local, glob))
        else:
            res = tail_results(model, pair, run, global_jobs(run.num_steps, max_gap), progress)
            mats.append(global_weights(run, res, max_gap, relative=True))
    return combine_weights(mats, normalize="median" if len(mats) > 1 else None)
