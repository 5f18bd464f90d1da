"""A worker process for the anchor-search tests: an analytic objective, optionally killing itself
mid-trial (SIGKILL) or meeting a second worker at a barrier so both hold a trial at once."""
from __future__ import annotations

import os
import signal
import sys

import numpy as np

from otcache_engine.anchor_search import AnchorConfig, search_anchor

TARGET = (0, 2, 5, 9, 19)


def score(steps, pair: int) -> float:
    """Distance to TARGET plus a pair-dependent offset: the optimum is known."""
    return float(np.abs(np.asarray(steps) - np.asarray(TARGET)).sum()) + 0.25 * pair


def config(n_trials: int, pairs: int = 2, seed: int = 0) -> AnchorConfig:
    return AnchorConfig(num_steps=20, budget=5, n_pairs=pairs, n_trials=n_trials, seed=seed, metric="analytic")


def run(journal: str, n_trials: int, kill_at: int | None = None, barrier=None, queue=None, seed: int = 0):
    state = {"calls": 0, "trials": 0}

    def evaluate(schedule, pair):
        state["calls"] += 1
        state["trials"] += pair == 0
        if barrier is not None and state["calls"] == 1:
            barrier.wait(timeout=120)
        if kill_at is not None and pair == 1 and state["trials"] > kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: pair 0 is reported, pair 1 never finishes
        return score(schedule.compute_steps, pair)

    best = search_anchor(evaluate, config(n_trials, seed=seed), journal, model_key="toy")
    if queue is not None:
        queue.put({"pid": os.getpid(), "steps": list(best.compute_steps), "trials": best.provenance["trials"],
                   "calls": state["calls"]})
    return best


if __name__ == "__main__":
    journal, n, kill = sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None
    run(journal, n, kill_at=int(kill) if kill else None)
