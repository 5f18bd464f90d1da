"""The mechanism is right, not merely running: at the same K a schedule chosen for the model beats uniform.

The schedule is found the way calibration finds one, in miniature: every K-step schedule of an N-step run is
tried on a calibration seed, and the one whose cached output is closest to the uncached output is kept.
On other seeds it must stay closer to the uncached output than the uniform schedule with the same K. If the
cache reused the wrong steps, the wrong streams or the wrong tokens, the search would find nothing better than
uniform and the held-out seeds would not confirm it.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from apply_helpers import bundle, patched, rel_err, run  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N, K = 8, 4
CFG = 1.0          # one stream per step keeps the search cheap; CFG batching is covered elsewhere
CALIBRATION_SEED, HELD_OUT = 0, (1, 2, 3)


def uniform(n: int, k: int) -> Schedule:
    return Schedule(n, tuple(int(round(x)) for x in np.linspace(0, n - 1, k)))


@pytest.mark.parametrize("family", ["flux", "wan21"])
def test_searched_schedule_beats_uniform_at_the_same_budget(family, batched_cfg):
    b = bundle(family)
    refs = {s: run(b.patcher, b, N, CFG, seed=s) for s in (CALIBRATION_SEED,) + HELD_OUT}

    def error(schedule: Schedule, seed: int) -> float:
        return rel_err(run(patched(b.patcher, schedule), b, N, CFG, seed=seed), refs[seed])

    candidates = [Schedule(N, (0,) + mid + (N - 1,)) for mid in itertools.combinations(range(1, N - 1), K - 2)]
    best = min(candidates, key=lambda s: error(s, CALIBRATION_SEED))
    base = uniform(N, K)
    assert best.budget == base.budget == K and best != base
    best_err = [error(best, s) for s in HELD_OUT]
    base_err = [error(base, s) for s in HELD_OUT]
    assert np.mean(best_err) < 0.9 * np.mean(base_err), (best.mask_string(), best_err, base_err)
    # Skipping steps by sampling with only K steps (the other reading of "uniform skipping") is worse still.
    fewer = [rel_err(run(b.patcher, b, K, CFG, seed=s), refs[s]) for s in HELD_OUT]
    assert np.mean(best_err) < np.mean(fewer), (best_err, fewer)
