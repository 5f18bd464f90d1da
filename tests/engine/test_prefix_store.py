"""Trajectory prefixes: the store finds the longest saved prefix and keeps its memory bound; a session
resumed from a snapshot continues exactly as the run it was taken from, whatever its streams are called."""
from __future__ import annotations

import pytest
import torch

from otcache_pack.otcache_engine.errors import OTCacheError
from otcache_pack.otcache_engine.runtime import CacheSession, StepPlan, make_reuse
from otcache_pack.otcache_engine.runtime.session import CacheSnapshot
from otcache_pack.otcache_engine.runtime.trajectory import SavedState, TrajectoryTap
from otcache_pack.otcache_engine.schedules.schedule import Schedule
from otcache_pack.otcache_engine.search.prefix_store import PrefixStore

SIGMAS = [1.0 - i / 10 for i in range(11)]


def state(step: int, size: int = 4) -> SavedState:
    return SavedState(step, torch.zeros(size), CacheSnapshot({}, {}), tuple(SIGMAS))


def mask(steps, n=10):
    return Schedule(n, tuple(steps)).mask


def test_the_longest_saved_prefix_is_found_and_only_where_a_computed_step_starts():
    store = PrefixStore(10 ** 6)
    a = mask((0, 2, 5, 7, 9))
    for step in (2, 5, 7, 9):
        store.keep("pair", a, state(step))
    assert store.find("pair", mask((0, 2, 5, 8, 9))).step == 5      # agrees on steps 0..6, computes 8
    assert store.find("pair", mask((0, 2, 5, 7, 8, 9))).step == 7
    assert store.find("pair", mask((0, 3, 5, 9))) is None          # differs at step 2: nothing before step 1 saved
    assert store.find("other pair", a[:]) is None


def test_the_memory_bound_drops_the_least_recently_used_state():
    one = state(2).nbytes
    store = PrefixStore(2 * one)
    a = mask((0, 2, 5, 7, 9))
    for step in (2, 5):
        store.keep("p", a, state(step))
    assert store.find("p", mask((0, 2, 4, 9))).step == 2           # a use: step 2's state is now the newest
    store.keep("p", a, state(7))
    assert len(store) == 2 and store.bytes <= 2 * one
    assert store.find("p", mask((0, 2, 5, 6, 9))).step == 2        # step 5's state went first
    assert not PrefixStore(one - 1).keep("p", a, state(2))


def run(session: CacheSession, uuids, steps, values):
    """Drive a session as the wrappers do: compute steps store, the others predict."""
    out = []
    for step in steps:
        session.begin_evaluation()
        d = session.decide(SIGMAS[step])
        if d.compute:
            session.store_batch(uuids, values[step], d, (2, 3))
            out.append(values[step])
        else:
            out.append(session.predict_batch(uuids, d, (2, 3)))
    return out


@pytest.mark.parametrize("reuse", ["omnicache", "taylor", "residual"])
def test_a_resumed_session_continues_like_the_run_it_was_taken_from(reuse):
    sched = Schedule(10, (0, 1, 4, 7, 9))
    plan = StepPlan.build(sched, SIGMAS)
    values = [torch.full((2, 3), float(i * i)) + torch.arange(6.0).reshape(2, 3) for i in range(10)]
    op = make_reuse(reuse, 1.0)
    whole = CacheSession(plan, op)
    tap = TrajectoryTap(sched.mask, wanted=lambda step: sched.mask[step])
    tap.plan_sigmas(SIGMAS)
    tap.attach(whole)
    expected = run(whole, ["c", "u"], range(10), values)
    saved = tap.states({4: torch.zeros(1)})
    assert [s.step for s in saved] == [4]
    resumed = CacheSession(plan, op)
    again = TrajectoryTap(sched.mask, saved[0])
    assert again.plan_sigmas(SIGMAS[4:]) == SIGMAS
    again.attach(resumed)
    got = run(resumed, ["new-c", "new-u"], range(4, 10), values)   # ComfyUI's uuids are new every run
    for a, b in zip(got, expected[4:]):
        assert torch.equal(a, b)


def test_a_resume_that_does_not_fit_its_run_is_refused():
    sched = Schedule(10, (0, 1, 4, 7, 9))
    saved = state(4)
    with pytest.raises(OTCacheError, match="not the last ones"):
        TrajectoryTap(sched.mask, saved).plan_sigmas(SIGMAS[3:])
    other = CacheSession(StepPlan.build(Schedule(10, (0, 2, 4, 7, 9)), SIGMAS), make_reuse("omnicache", 1.0))
    with pytest.raises(OTCacheError, match="cannot resume"):
        TrajectoryTap(sched.mask, saved).attach(other)
    quiet = TrajectoryTap(sched.mask)
    quiet.attach(other)                       # not resuming: it only keeps nothing
    assert not quiet.matched and quiet.states({4: torch.zeros(1)}) == []
