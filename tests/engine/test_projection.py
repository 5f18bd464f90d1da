"""Exact L1 projection of real positions onto feasible integer schedules (method.md §4.2, appendix A)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from otcache_engine.errors import InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.projection import (
    is_feasible, project, smallest_feasible_budget, smallest_feasible_gap,
)
from otcache_engine.schedules.schedule import Schedule


def brute_force_cost(y, n, gap, force_last):
    """Least L1 cost over every feasible schedule, by enumeration."""
    k = len(y)
    best = math.inf
    for inner in itertools.combinations(range(1, n), k - 1):
        steps = (0,) + inner
        if is_feasible(steps, n, gap, force_last):
            best = min(best, sum(abs(s - t) for s, t in zip(steps, y)))
    return best


def cost(steps, y):
    return float(np.sum(np.abs(np.asarray(steps) - np.asarray(y))))


def assert_valid(steps, n, gap, force_last, k):
    assert len(steps) == k and steps[0] == 0
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert steps[-1] <= n - 1 and (steps[-1] == n - 1 or not force_last)
    assert is_feasible(steps, n, gap, force_last)
    Schedule(n, steps, force_last=force_last)  # the value type accepts it


@st.composite
def instances(draw, max_n=11):
    n = draw(st.integers(2, max_n))
    force_last = draw(st.booleans())
    gap = draw(st.one_of(st.none(), st.integers(1, n)))
    least = smallest_feasible_budget(n, gap, force_last)
    assume(least <= n)
    k = draw(st.integers(least, n))
    y = draw(st.lists(st.floats(-3, n + 3, allow_nan=False), min_size=k, max_size=k))
    return n, gap, force_last, k, y


@settings(max_examples=150, deadline=None)
@given(instances())
def test_projection_is_the_exact_l1_minimum(case):
    n, gap, force_last, k, y = case
    steps = project(y, n, gap, force_last)
    assert_valid(steps, n, gap, force_last, k)
    assert cost(steps, y) == pytest.approx(brute_force_cost(y, n, gap, force_last), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 80), st.data())
def test_rint_is_returned_unchanged_when_feasible(n, data):
    k = data.draw(st.integers(2, n))
    inner = sorted(data.draw(st.sets(st.integers(1, n - 2), min_size=k - 2, max_size=k - 2))) if k > 2 else []
    steps = [0] + inner + [n - 1]
    jitter = data.draw(st.lists(st.floats(-0.49, 0.49), min_size=k, max_size=k))
    y = np.asarray(steps) + np.asarray(jitter)
    gap = max(np.diff(steps))
    assert project(y, n, int(gap)) == tuple(steps)
    assert project(y, n, None) == tuple(steps)


def test_collisions_in_a_dense_head_are_spread():
    y = [0, 0.1, 0.2, 0.3, 9]
    assert project(y, 10, None) == (0, 1, 2, 3, 9)


def test_gap_cap_moves_points_inward():
    steps = project([0, 1, 2, 9], 10, 3)
    assert steps == (0, 3, 6, 9)


def test_force_last_false_respects_the_tail_gap():
    steps = project([0, 1, 2], 10, 4, force_last=False)
    assert steps[-1] >= 10 - 4 and is_feasible(steps, 10, 4, force_last=False)


def test_large_instance_is_valid():
    y = 999 * np.linspace(0, 1, 250) ** 2.5
    steps = project(y, 1000, 15)
    assert_valid(steps, 1000, 15, True, 250)
    assert cost(steps, y) <= cost(np.rint(np.linspace(0, 999, 250)), y)  # beats a naive feasible answer


@pytest.mark.parametrize("n, gap, force_last, least", [
    (50, 7, True, 8), (50, 6, True, 10), (10, 9, True, 2), (10, None, True, 2), (1, 3, True, 1),
    (10, 4, False, 3), (10, 10, False, 1),
])
def test_smallest_feasible_budget(n, gap, force_last, least):
    assert smallest_feasible_budget(n, gap, force_last) == least
    y = np.linspace(0, n - 1, least)
    assert len(project(y, n, gap, force_last)) == least
    if least > 1:
        with pytest.raises(InfeasibleBudgetError) as e:
            project(np.linspace(0, n - 1, least - 1), n, gap, force_last)
        assert e.value.smallest_feasible == least
        assert f"smallest feasible budget is {least}" in str(e.value)


def test_smallest_feasible_gap_makes_the_budget_feasible():
    for n in range(2, 40):
        for k in range(2, n + 1):
            gap = smallest_feasible_gap(n, k)
            assert smallest_feasible_budget(n, gap) <= k
            assert gap == 1 or smallest_feasible_budget(n, gap - 1) > k


def test_infeasible_message_is_one_actionable_line():
    with pytest.raises(InfeasibleBudgetError) as e:
        project(np.linspace(0, 49, 7), 50, 7)
    message = str(e.value)
    assert "\n" not in message and "8" in message and "raise the max gap to 9" in message


def test_budget_above_num_steps_is_a_clear_error():
    with pytest.raises(InfeasibleBudgetError, match="exceeds num_steps"):
        project(np.arange(11), 10, None)


@pytest.mark.parametrize("y, n, gap, error", [
    ([0, float("nan"), 9], 10, None, ScheduleError),
    ([0, float("inf"), 9], 10, None, ScheduleError),
    ([], 10, None, InfeasibleBudgetError),
    ([0, 9], 10, 0, ScheduleError),
    ([0, 9], 0, None, ScheduleError),
])
def test_bad_arguments(y, n, gap, error):
    with pytest.raises(error):
        project(y, n, gap)
