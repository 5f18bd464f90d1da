"""Several anchor-search workers on one PostgreSQL study against one worker (prints one line per setting).

Each worker is a process with the README's settings for several machines (the same ``postgresql://`` URL and
the same ``search_seed``) on the analytic objective of the engine tests (tests/engine/anchor_worker.py). A
model evaluation stands for a run on the worker's own GPU: the worker waits ``--model-seconds`` per
calibration pair, so the figures show the search's coordination (storage round trips, TPE, claims), not how
many CPU cores this machine has. The server is a throw-away Debian PostgreSQL (tests/engine/pg_server.py).

Printed per setting: finished trials, distinct schedules among them, evaluations, schedules evaluated more
than once, memo hits (a finished schedule proposed again: free), trials that stepped back for a rival
evaluating the same schedule, and the wall time from the first worker's start to the last one's end.

Run:  .venv/bin/python benchmarks/bench_anchor_workers.py [--workers 1 3] [--trials 40] [--model-seconds 0.2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "engine")]

import anchor_worker as W  # noqa: E402
import pg_server  # noqa: E402


def run(server, workers: int, trials: int, model_seconds: float, folder: Path) -> dict:
    url = server.create_database(f"bench{workers}_{int(time.time() * 1000) % 10**8}")
    os.environ.update(OTCACHE_MODEL_SECONDS=str(model_seconds), OPENBLAS_NUM_THREADS="1")
    ctx = multiprocessing.get_context("spawn")
    logs = [folder / f"{url.rsplit('/', 1)[1]}-{k}.log" for k in range(workers)]
    start = time.perf_counter()
    procs = [ctx.Process(target=W.database_worker, args=(url, trials, str(log))) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    all_trials = W.load(url).trials
    finished = [t for t in all_trials if t.state.name in ("COMPLETE", "PRUNED")]
    seen = W.evaluations(logs)
    return {"workers": workers, "trials": len(finished),
            "distinct": len({tuple(t.user_attrs["schedule"]) for t in finished}),
            "evaluations": sum(seen.values()), "evaluated_twice": sum(n > 1 for n in seen.values()),
            "memo_hits": sum("memo_of" in t.user_attrs for t in finished),
            "stepped_back": sum("duplicate_of" in t.user_attrs for t in all_trials),
            "exit_codes": sorted({p.exitcode for p in procs}), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--model-seconds", type=float, default=0.2, help="time of one model evaluation")
    args = parser.parse_args()
    server, reason = pg_server.start_server()
    if server is None:
        sys.exit(f"no PostgreSQL server: {reason}")
    try:
        with tempfile.TemporaryDirectory() as folder:
            for n in args.workers:
                print(run(server, n, args.trials, args.model_seconds, Path(folder)), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
