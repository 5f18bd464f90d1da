"""Stage 2 of OTCache inside ComfyUI (method.md §4): the anchor search behind OTCache Anchor Search.

At an extreme low budget the graph method's additive error model breaks down, so
the anchor schedule is optimised end to end: every Optuna trial samples the
user's model with a candidate schedule (OTCache's runtime, ``patch_model``) and
ComfyUI's own sampling, and scores the result against the uncached output
(computed once per call) with LPIPS on decoded images (its backbone fetched once into
models/otcache/lpips, ``lpips_weights``) -- or, offline or with downloads turned off,
1 - SSIM; without a VAE, the latent relative L1.

The study lives in Optuna storage: by default a journal file under ComfyUI's
user directory, keyed by model, steps and budget, so a search resumes after a
crash, a restart or a Cancel; or any Optuna storage URL (e.g. PostgreSQL), so
several ComfyUI machines search one study together.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.metrics import Perceptual
from ...otcache_engine.schedules.warp import retarget
from ...otcache_engine.search.anchor_search import AnchorConfig, search_anchor
from ...otcache_engine.search.study_storage import connect
from ..runtime.families import detect_family
from ..runtime.operators import AUTO, Operator, operator_for
from ..runtime.resolver import default_schedule
from ..runtime.provenance import model_hash, run_provenance
from ..schedule_folders import clean_name, plain_name, user_folder
from . import ladder
from .calibrate import default_anchor_budget
from .cost import StageCost, announce, spent
from .calibration_data import CalibrationData
from .calibration_record import CalibrationPair, calibration_pairs
from .judge import Judge
from .lpips_weights import node_metric
from .reuse_choice import ladder_operators
from .sampling import Progress, SamplerSettings, from_internal, run_sigmas, uncached

log = logging.getLogger("otcache")

REUSE_CHOICES = ("residual", "output", "omnicache", "taylor")
SQLITE = "sqlite:///"


# --- storage -------------------------------------------------------------------------------

def default_storage_name(model_key: str, steps: int, budget: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", model_key)[:40] or "model"
    return f"anchor-{safe}-{steps}-{budget}.journal"


def resolve_storage(text: str, model_key: str, steps: int, budget: int) -> str:
    """Empty: the default journal under <user>/otcache/; a plain name: a journal file of that name there; a
    URL (``postgresql://``...): as is, except a relative SQLite file, which goes under <user>/otcache/ too
    (not into ComfyUI's working directory). A name that is a symbolic link there is refused: a journal is
    never written outside user/otcache."""
    text = (text or "").strip()
    folder = user_folder()
    if text.startswith(SQLITE) and not os.path.isabs(text[len(SQLITE):]):
        return SQLITE + str(_own_file(folder, plain_name(text[len(SQLITE):])))
    if "://" in text:
        return text
    name = clean_name(text, suffix=".journal") if text else default_storage_name(model_key, steps, budget)
    return str(_own_file(folder, name))


def _own_file(folder: Path, name: str) -> Path:
    path = folder / name
    if path.is_symlink():
        raise OTCacheError(f"storage {name!r} in user/otcache is a symbolic link; refused (studies are only "
                           "written inside user/otcache: remove the link or choose another name)")
    return path


# --- what a trial is compared with ----------------------------------------------------------------

def _fingerprint(value: Any, h: "hashlib._Hash") -> None:
    """Shapes and a few values of every tensor in a conditioning (cheap; tells prompts apart)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)
        h.update(str(tuple(value.shape)).encode())
        if flat.numel():
            idx = torch.linspace(0, flat.numel() - 1, min(16, flat.numel())).long().to(flat.device)
            h.update(flat[idx].float().cpu().numpy().tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _fingerprint(value[k], h)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _fingerprint(v, h)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        h.update(repr(value).encode())


def conditioning_id(positive: Any, negative: Any) -> str:
    h = hashlib.sha1()
    _fingerprint(positive, h)
    h.update(b"|")
    _fingerprint(negative, h)
    return h.hexdigest()[:12]


def judged_pairs(s: SamplerSettings, seeds: list[int], calibration: CalibrationData | None,
                 own_seeds: bool) -> tuple[list[CalibrationPair], str]:
    """The pairs every trial is judged on, and why: the calibration's own (prompt, seed) pairs when it was
    made with these sampler settings and no search seeds were asked for, else this node's prompt x seeds."""
    if calibration is not None and calibration.pairs and not own_seeds:
        theirs = calibration.pairs[0].settings
        same = (theirs.steps, theirs.cfg, theirs.sampler_name, theirs.scheduler, theirs.denoise,
                theirs.latent_shape) == (s.steps, s.cfg, s.sampler_name, s.scheduler, s.denoise, s.latent_shape)
        if same:
            return list(calibration.pairs), "the calibration's prompts and seeds"
        return calibration_pairs(s, seeds), "this node's prompt and seed (the calibration used other sampler " \
                                           "settings)"
    return calibration_pairs(s, seeds), "this node's prompt and seed(s)"


def recorded_refs(model: Any, calibration: CalibrationData | None, pairs: list, metric: Perceptual,
                  vae: Any) -> list[torch.Tensor] | None:
    """The uncached outputs the calibration already recorded, when the trials are judged on its pairs: its
    runs' final latents (decoded for an image metric), so no uncached run is sampled again."""
    if calibration is None or list(pairs) != list(calibration.pairs):
        return None
    if metric.on == "latent" or vae is None:
        return calibration.finals
    return [vae.decode(from_internal(model, x)).float().cpu() for x in calibration.finals]


# --- the search ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Search:
    """One anchor search's setting, fixed before any model call."""

    base: Any
    n: int
    ref_n: Schedule
    key: str
    store: Any
    pairs: list
    judged_on: str
    op: Operator
    metric: Perceptual
    cfg: AnchorConfig
    graph: Schedule | None
    context: dict


def anchor_search(model: Any, s: SamplerSettings, reference: Schedule, *, seeds: list[int], budget: int = 0,
                  trials: int = 64, search_seed: int = 0, storage: str = "", vae: Any = None,
                  calibration: CalibrationData | None = None, reuse: str = AUTO, gamma: float = 0.5,
                  max_gap: int = 0, metric: Perceptual | None = None, own_seeds: bool = False,
                  validate: bool = True, every_budget: bool | None = None) -> tuple[Schedule, dict[str, Any]]:
    """Run or resume the anchor search; returns the anchor and a summary for the UI.

    Trials are judged on the calibration's (prompt, seed) pairs when a calibration made with the same sampler
    settings is connected (``own_seeds`` False): an anchor fitted to one seed does not carry to others.
    ``validate`` checks the result against rivals and the free default on the same pairs: at ``every_budget``
    between the anchor and the reference, or at the two ends only (cheaper); None decides by the pairs
    (:func:`validate_every_budget`). What it will cost is said
    before the first model call, and what it spent at the end.
    """
    import comfy.model_management

    if reuse not in (AUTO,) + REUSE_CHOICES:
        raise OTCacheError(f"reuse must be one of {[AUTO, *REUSE_CHOICES]}, got {reuse!r}")
    if not isinstance(reference, Schedule):
        raise OTCacheError("connect a reference schedule (from OTCache Calibrate or Load Schedule)")
    run = _setup(model, s, reference, seeds, budget, trials, search_seed, storage, vae, calibration, reuse, gamma,
                 max_gap, metric, own_seeds)
    refs = recorded_refs(run.base, calibration, run.pairs, run.metric, vae)
    auto = "" if every_budget is not None else f" (validate_budgets auto: {len(run.pairs)} pair(s))"
    every_budget = validate_every_budget(len(run.pairs)) if every_budget is None else every_budget
    operators = ladder_operators(run.op, reuse, reference) if validate else []
    planned = _announce(run, refs is None, len(operators) if every_budget else 0, validate)
    progress = Progress(len(run.pairs) * run.n, "Anchor Search")
    judge = Judge(run.base, run.pairs, run.metric, vae, refs=refs)
    judge.prepare(progress)
    progress.set(0, run.cfg.n_trials, unit="trials")
    anchor = search_anchor(lambda sch, p: judge.score(sch, p, run.op), run.cfg, run.store, model_key=run.key,
                           context=run.context, reference=reference, graph=run.graph,
                           progress=lambda done, total, best: progress.set(done, total),
                           propagate=(comfy.model_management.InterruptProcessingException,))
    if run.metric.warning:
        anchor = anchor.with_provenance(metric_warning=run.metric.warning)
    checked = ""
    if validate:
        ends = {"reference": operator_for(reuse, gamma, reference, None, reference.budget)[0], "anchor": run.op}
        anchor, checked = _with_ladder(anchor, judge, run, calibration, operators if every_budget else [], ends,
                                       progress)
        checked += auto
    if judge.saving():
        log.info("[OTCache] Anchor Search: %s", judge.saving())
    cost = spent("Anchor Search", run.n, judge.calls, progress.seconds)
    return anchor, _summary(anchor, run, checked, planned, cost)


AUTO_EVERY_BUDGET_PAIRS = 2


def validate_every_budget(pairs: int) -> bool:
    """'auto': every budget when the trials are judged on several pairs, the two ends with one. With one pair
    the ladder's pick between two candidates follows that one seed: on the cost-fidelity benchmark, validating
    every budget then cost 40-110 % more and moved held-out PSNR by -4.8 to +3.7 dB (+0.1 on average) against
    the two ends; with four pairs it gained up to 5.2 dB on the full benchmark."""
    return pairs >= AUTO_EVERY_BUDGET_PAIRS


def _setup(model: Any, s: SamplerSettings, reference: Schedule, seeds: list[int], budget: int, trials: int,
           search_seed: int, storage: str, vae: Any, calibration: CalibrationData | None, reuse: str, gamma: float,
           max_gap: int, metric: Perceptual | None, own_seeds: bool) -> Search:
    import comfy.model_management

    base = uncached(model)
    sigmas = run_sigmas(base, s)
    n = sigmas.numel() - 1
    ref_n = reference if reference.num_steps == n else retarget(reference, n)   # the reference on this run
    k = _anchor_budget(ref_n.budget, n, budget)
    key = model_hash(base)
    store = connect(resolve_storage(storage, key, n, k))   # URL, driver, server, journal: before any model call
    pairs, judged_on = judged_pairs(s, seeds, calibration, own_seeds)
    op, _ = operator_for(reuse, gamma, reference)
    metric = metric or node_metric(has_decoder=vae is not None, device=comfy.model_management.get_torch_device())
    prov = run_provenance(base, steps=n, sampler=s.sampler_name, scheduler=s.scheduler,
                          latent_shape=s.latent_shape, sigmas=sigmas.tolist(), cfg=s.cfg, denoise=s.denoise)
    cfg = AnchorConfig(num_steps=n, budget=k, n_pairs=len(pairs), n_trials=int(trials), seed=int(search_seed),
                       max_gap=max_gap or None, metric=metric.name, sigmas=tuple(sigmas.tolist()),
                       provenance={**prov, "source": "anchor-search", **op.as_dict(),
                                   "seeds": list(seeds), "pairs": len(pairs), "judged_on": judged_on,
                                   "reference_budget": reference.budget})
    graph = calibration.graph_schedule(k, cfg.gap) if calibration is not None and calibration.num_steps == n \
        else None
    return Search(base, n, ref_n, key, store, pairs, judged_on, op, metric, cfg, graph,
                  _study_context(s, pairs, op, prov, reference, calibration))


def _announce(run: Search, sample_refs: bool, operators: int, validate: bool) -> StageCost:
    """Say what the search will cost at most: uncached references (unless the calibration recorded them),
    every trial at K calls per pair (memoised repeats and pruned trials cost less), the validation."""
    pairs, k, k_ref = len(run.pairs), run.cfg.budget, run.ref_n.budget
    refs = pairs * run.n if sample_refs else 0
    search = run.cfg.n_trials * k * pairs
    check = ladder.span_calls(k_ref, k, pairs, operators) + ladder.guard_calls(k_ref, k, pairs, operators > 0) \
        if validate else 0
    log.info("[OTCache] Anchor Search: K=%d of N=%d, %d trial(s) in total, %d pair(s) (%s), metric %s, storage %s",
             k, run.n, run.cfg.n_trials, pairs, run.judged_on, run.metric.name, run.store.where)
    return announce("Anchor Search", run.n, refs + search + check,
                    f"uncached references {refs}, trials {search}, validation {check}")


def _summary(anchor: Schedule, run: Search, checked: str, planned: StageCost, cost: StageCost) -> dict[str, Any]:
    return {"best_score": anchor.provenance["score"], "trials": anchor.provenance["trials"],
            "metric": run.metric.name, "warning": run.metric.warning, "study": anchor.provenance["study"],
            "storage": anchor.provenance["storage"], "budget": run.cfg.budget, "steps": run.n,
            "pairs": len(run.pairs), "judged_on": run.judged_on, "graph_warm_start": run.graph is not None,
            "validation": checked, "planned_calls": planned.calls, "model_calls": cost.calls,
            "generations": round(cost.generations, 2)}


def _anchor_budget(ref_k: int, num_steps: int, budget: int) -> int:
    k = budget or default_anchor_budget(num_steps)
    if k >= ref_k:
        raise OTCacheError(f"anchor budget {k} must be below the reference's {ref_k} computed steps "
                           f"(the anchor is the extreme low end); lower it or use a richer reference")
    return k


def _study_context(s: SamplerSettings, pairs: list, op: Any, prov: dict, reference: Schedule,
                   calibration: CalibrationData | None) -> dict[str, Any]:
    """Everything that changes the objective, hashed into the study name: after a recalibration (another
    reference or calibration) a new study starts instead of returning the old anchor."""
    return {"pairs": [[conditioning_id(p.settings.positive, p.settings.negative), p.seed] for p in pairs],
            "sampler": s.sampler_name, "scheduler": s.scheduler, "cfg": s.cfg, "denoise": s.denoise,
            "latent": list(s.latent_shape), **op.as_dict(),
            "grid": prov.get("sigma_grid"), "reference": [reference.num_steps, list(reference.compute_steps)],
            "calibration": calibration.id if calibration is not None else None}


def _with_ladder(anchor: Schedule, judge: Judge, run: Search, calibration: CalibrationData | None,
                 operators: list, ends: dict[str, Operator], progress: Progress) -> tuple[Schedule, str]:
    """The anchor with its validation ladder over every budget up to the reference (on the anchor's steps;
    none with no ``operators``: the two ends only), guarded by the free default, and a one-line summary."""
    pairs, ref_n = len(judge.pairs), run.ref_n
    progress.set(0, ladder.calls(ref_n, anchor, pairs, len(operators))
                 + ladder.guard_calls(ref_n.budget, anchor.budget, pairs, bool(operators)), unit="model calls")
    steps = ladder.build(judge, ref_n, anchor, calibration, operators, progress.step) if operators \
        else ladder.ends_only(ref_n, judge, [ends["anchor"]])
    family = detect_family(run.base.get_model_object("diffusion_model"))
    steps = ladder.guard(steps, judge, ref_n, anchor, float(anchor.provenance["score"]), ends,
                         lambda k: default_schedule(family, run.n, k)[0], progress.step)
    checked = f"{ladder.summary(steps)}; {ladder.guard_summary(steps)}"
    log.info("[OTCache] Anchor Search: %s", checked)
    return anchor.with_provenance(ladder=steps), checked
