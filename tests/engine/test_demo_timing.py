"""A first run that tells the truth: the demo's timing (interleaved rounds, best of) and its impossible-ratio flag.

The clock is passed in, so the logic is checked exactly, without timing anything.
"""
from __future__ import annotations

import math

import pytest

from benchmarks.toy.harness import time_interleaved
from benchmarks.toy.report import NOISE_MARK, NOISE_NOTE, Row, markdown_table, text_table, wall_cell, wall_is_noise


class ScriptedClock:
    """Returns the next scripted instant at each call (two calls per timed job: start, end)."""

    def __init__(self, durations: list[float]):
        self.instants, t = [], 0.0
        for d in durations:
            self.instants += [t, t + d]
            t += d + 100.0
        self.instants.reverse()

    def __call__(self) -> float:
        return self.instants.pop()


def test_jobs_run_in_interleaved_rounds_and_each_keeps_its_fastest_time():
    order = []
    jobs = [lambda: order.append("full") or "F", lambda: order.append("K=5") or "C"]
    # round 1: full 5 s (a busy spell), cached 2 s; round 2: 1 s, 2 s; round 3: 3 s, 9 s
    clock = ScriptedClock([5.0, 2.0, 1.0, 2.0, 3.0, 9.0])
    (full, t_full), (cached, t_cached) = time_interleaved(jobs, repeats=3, clock=clock)
    assert order == ["full", "K=5"] * 3
    assert (full, t_full) == ("F", 1.0) and (cached, t_cached) == ("C", 2.0)
    assert clock.instants == []


def test_at_least_one_round_runs():
    (only,) = time_interleaved([lambda: 7], repeats=0, clock=ScriptedClock([0.5]))
    assert only == (7, 0.5)


@pytest.mark.parametrize("wall, nfe, noise", [(6.57, 5.0, True), (5.0001, 5.0, True), (5.0, 5.0, False),
                                              (3.69, 5.0, False), (math.nan, 5.0, False), (math.inf, 2.0, False)])
def test_a_wall_ratio_above_n_over_k_is_flagged_as_noise(wall, nfe, noise):
    assert wall_is_noise(wall, nfe) is noise
    assert wall_cell(wall, nfe).endswith(NOISE_MARK) is noise


def rows(wall: float) -> list[Row]:
    return [Row("OTCache K=25", 25, 2.0, 1.70, 41.6, 0.996, math.nan),
            Row("OTCache K=10", 10, 5.0, wall, 31.9, 0.960, math.nan)]


def test_the_tables_mark_the_impossible_cell_and_explain_it_once():
    text = text_table(rows(6.57))
    assert "6.57*" in text and "1.70*" not in text and text.count(NOISE_NOTE) == 1
    assert text.splitlines()[-1] == NOISE_NOTE
    md = markdown_table(rows(6.57)).splitlines()
    assert "| 6.57* |" in md[3] and md[-2:] == ["", NOISE_NOTE]    # a blank line ends the Markdown table


def test_honest_ratios_print_as_measured_without_a_note():
    assert NOISE_NOTE not in text_table(rows(3.69)) and NOISE_NOTE not in markdown_table(rows(3.69))
    assert "3.69" in text_table(rows(3.69)) and "N/K" in NOISE_NOTE
