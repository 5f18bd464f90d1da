"""Measurement runs that share a trajectory prefix share its model calls, and stay the same runs: the judge's
scores with prefix sharing equal those without it, on a block-cached model (residual reuse, CFG batched)
and on the whole output, and the block stack runs exactly as often as the judge says it spent."""
from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import tiny_models  # noqa: E402
from otcache_pack.nodes.measure.calibration_record import calibration_pairs  # noqa: E402
from otcache_pack.nodes.measure.judge import Judge  # noqa: E402
from otcache_pack.nodes.measure.reuse_choice import LATENT  # noqa: E402
from otcache_pack.nodes.measure.sampling import SamplerSettings  # noqa: E402
from otcache_pack.nodes.measure.shared_prefix import SharedPrefixes, memory_bound, resumable  # noqa: E402
from otcache_pack.nodes.runtime.operators import Operator  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.errors import OTCacheError  # noqa: E402

N = 12
# schedules that agree on their first decisions, as Optuna's trials and the ladder's neighbours do
STEPS = [(0, 1, 3, 6, 9, 11), (0, 1, 3, 6, 8, 11), (0, 1, 3, 5, 8, 11), (0, 2, 4, 7, 11), (0, 1, 3, 6, 9, 10, 11),
         (0, 2, 4, 7, 9, 11)]
OPERATORS = [Operator("omnicache", 1.0), Operator("taylor", 0.0, 1), Operator("output", 0.0),
             Operator("omnicache", 0.5, space="output")]


@pytest.fixture(scope="module", params=["flux", "wan21"])
def bundle(request):
    return tiny_models.build(request.param)


def settings(b, sampler="euler", cfg=None):
    cfg = cfg if cfg is not None else (1.0 if b.family == "flux" else 3.0)
    return SamplerSettings(N, cfg, sampler, "simple", b.positive, b.negative, {"samples": b.empty_latent()})


class StackRuns:
    """How often the first block runs: the transformer work actually done."""

    def __init__(self, b):
        self.n = 0
        self.handle = tiny_models.stack_blocks(b.diffusion_model)[0][2].register_forward_pre_hook(self.hook)

    def hook(self, *_):
        self.n += 1


def judged(b, s, prefixes, schedules, op):
    judge = Judge(b.patcher, calibration_pairs(s, [3, 4]), LATENT, prefixes=prefixes)
    judge.prepare(_NoProgress())
    judge.calls = 0        # the uncached references are not what is compared here
    runs = StackRuns(b)
    try:
        scores = [judge.mean(sch, op) for sch in schedules]
    finally:
        runs.handle.remove()
    return scores, judge, runs.n


class _NoProgress:
    def step(self, n=1):
        pass


def schedules():
    return [Schedule(N, steps) for steps in STEPS]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda o: o.label())
def test_shared_prefixes_give_the_same_scores_for_fewer_model_calls(bundle, op):
    s = settings(bundle)
    whole, whole_judge, whole_runs = judged(bundle, s, SharedPrefixes(max_bytes=0), schedules(), op)
    shared, judge, runs = judged(bundle, s, SharedPrefixes(), schedules(), op)
    assert shared == pytest.approx(whole, rel=1e-4, abs=1e-6)
    per_pass = 2 if bundle.family == "wan21" and runs > judge.calls else 1     # split CFG runs the stack twice
    assert whole_judge.calls == 2 * sum(len(steps) for steps in STEPS)
    assert judge.calls < whole_judge.calls and judge.prefixes.saved_calls == whole_judge.calls - judge.calls
    assert runs == per_pass * judge.calls and whole_runs == per_pass * whole_judge.calls
    assert judge.prefixes.resumed_runs >= len(STEPS)   # every schedule after the first resumed, on both pairs
    assert "saved" in judge.saving()


def test_a_multistep_sampler_and_an_inpainting_mask_are_sampled_whole(bundle):
    op = Operator("omnicache", 1.0)
    s = settings(bundle, sampler="dpmpp_2m")
    assert not resumable(s)
    _, judge, _ = judged(bundle, s, SharedPrefixes(), schedules()[:3], op)
    assert judge.prefixes.saved_calls == 0 and judge.calls == 2 * sum(len(x) for x in STEPS[:3])
    masked = settings(bundle)
    masked = SamplerSettings(N, masked.cfg, "euler", "simple", bundle.positive, bundle.negative,
                             {"samples": bundle.empty_latent(), "noise_mask": torch.ones(1, 1, 4, 4)})
    assert not resumable(masked)


def test_the_memory_bound_is_kept_and_read_from_the_environment(bundle, monkeypatch):
    op = Operator("omnicache", 1.0)
    small = SharedPrefixes(max_bytes=1)
    _, judge, _ = judged(bundle, settings(bundle), small, schedules()[:3], op)
    assert len(small.store) == 0 and judge.prefixes.saved_calls == 0
    monkeypatch.setenv("OTCACHE_PREFIX_MEMORY_MB", "0.5")
    assert memory_bound() == 2 ** 19
    monkeypatch.setenv("OTCACHE_PREFIX_MEMORY_MB", "lots")
    with pytest.raises(OTCacheError, match="number of megabytes"):
        memory_bound()


def test_a_schedule_that_computes_every_step_is_sampled_whole_after_shared_ones(bundle):
    op = Operator("omnicache", 1.0)
    full = Schedule(N, tuple(range(N)))
    scores, judge, runs = judged(bundle, settings(bundle), SharedPrefixes(), schedules()[:1] + [full], op)
    assert scores[1] == pytest.approx(0.0, abs=1e-6)      # every step computed: the uncached run itself
    assert judge.calls == 2 * (len(STEPS[0]) + N)


def test_a_schedule_the_run_would_retarget_is_sampled_whole(bundle):
    op = Operator("omnicache", 1.0)
    other = [Schedule(N + 4, (0, 2, 5, 9, 15)), Schedule(N + 4, (0, 2, 5, 10, 15))]
    _, judge, _ = judged(bundle, settings(bundle), SharedPrefixes(), other, op)
    assert judge.prefixes.saved_calls == 0 and len(judge.prefixes.store) == 0


def test_anchor_search_finds_the_same_anchor_for_fewer_model_calls(monkeypatch, tmp_path):
    import folder_paths
    from otcache_pack.nodes.measure import anchor as MA
    from otcache_pack.nodes.measure import calibrate as MC

    b = tiny_models.build("flux")
    s = SamplerSettings(10, 1.0, "euler", "simple", b.positive, b.negative, {"samples": b.empty_latent()})
    reference, calibration = MC.calibrate(b.patcher, s, [0], mode="local", max_gap=3, budget=6)
    found = {}
    for mb in ("0", "64"):
        monkeypatch.setenv("OTCACHE_PREFIX_MEMORY_MB", mb)
        monkeypatch.setattr(folder_paths, "get_user_directory", lambda mb=mb: str(tmp_path / mb))
        # every budget validated: with one pair 'auto' checks the two ends only, and those share no prefix here
        found[mb] = MA.anchor_search(b.patcher, s, reference, seeds=[0], budget=3, trials=8, calibration=calibration,
                                     every_budget=True)
    (whole, whole_summary), (shared, summary) = found["0"], found["64"]
    assert shared.compute_steps == whole.compute_steps
    assert shared.provenance["score"] == pytest.approx(whole.provenance["score"], rel=1e-4)
    assert summary["model_calls"] < whole_summary["model_calls"] <= whole_summary["planned_calls"]
