"""A worker process for the anchor-search tests: an analytic objective, optionally killing itself
mid-trial (SIGKILL) or meeting a second worker at a barrier so both hold a trial at once."""
from __future__ import annotations

import collections
import os
import signal
import sys
import time

import numpy as np

from otcache_engine.search.anchor_search import AnchorConfig, search_anchor

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


# --- several workers on one database (test_anchor_postgres.py) -------------------------------------------

def model_call() -> None:
    """Stands in for the model's time: a fixed amount of CPU work (no sleeping), so trials overlap
    (about 25 ms on one BLAS thread: the test starts workers with OPENBLAS_NUM_THREADS=1). The benchmark
    (benchmarks/bench_anchor_workers.py) sets OTCACHE_MODEL_SECONDS instead: a model on its own GPU, waited for."""
    seconds = float(os.environ.get("OTCACHE_MODEL_SECONDS", "0") or 0)
    if seconds > 0:
        time.sleep(seconds)
        return
    m = np.random.default_rng(0).standard_normal((96, 96))
    for _ in range(100):
        np.linalg.eigvalsh(m @ m.T)


def database_worker(url: str, n_trials: int, log_path: str, kill_at: int | None = None, dying=None, gate=None,
                    seed: int = 0) -> None:
    """One worker with the README's settings (same seed as every other): logs every evaluation (pid, schedule,
    pair) to ``log_path``; with ``kill_at``, SIGKILLs itself in pair 1 of its kill_at-th trial (or of the next
    one that gets that far) after telling ``dying``; once some worker is dying, waits at ``gate`` until the test
    has restarted it."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    state = {"trials": 0}

    def evaluate(schedule, pair):
        if dying is not None and dying.is_set() and gate is not None:
            gate.wait(timeout=120)
        state["trials"] += pair == 0
        if kill_at is not None and pair == 1 and state["trials"] >= kill_at:   # (a pruned trial has no pair 1)
            dying.set()
            os.kill(os.getpid(), signal.SIGKILL)   # pair 0 of this trial is reported, pair 1 never runs
        os.write(fd, f"{os.getpid()} {' '.join(map(str, schedule.compute_steps))} {pair}\n".encode())
        model_call()
        return score(schedule.compute_steps, pair)

    search_anchor(evaluate, config(n_trials, seed=seed), url, model_key="toy")
    os.close(fd)


def open_together(url: str, barrier, queue) -> None:
    """Open ``url`` and its study right after every other process of the barrier, as workers started together
    do: the schema-creation race (#1092)."""
    import optuna
    from otcache_engine.search.anchor_search import open_storage
    barrier.wait(timeout=120)
    try:
        optuna.create_study(study_name="race", storage=open_storage(url), load_if_exists=True)
        queue.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test, which shows it
        queue.put(f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")


def load(url: str):
    """The one study a database holds."""
    import optuna
    from otcache_engine.search.anchor_search import open_storage

    storage = open_storage(url)
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def evaluations(logs) -> collections.Counter:
    """(schedule, pair) -> how many times any worker evaluated it (the logs of :func:`database_worker`)."""
    seen: collections.Counter = collections.Counter()
    for log in logs:
        for line in log.read_text().splitlines():
            _pid, *steps, pair = line.split()
            seen[(tuple(map(int, steps)), int(pair))] += 1
    return seen
