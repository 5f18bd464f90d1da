"""Stage 2: the anchor schedule, found by Optuna at an extreme low budget (method.md §4).

The graph search of stage 1 assumes that the errors of cached segments add up;
at very low budgets they do not, so the anchor is optimised on the real
end-to-end output instead. This module is the pure search: the caller (the
ComfyUI node, or a script) supplies ``evaluate(schedule, pair_index) -> float``,
which runs the model with that schedule on calibration pair ``pair_index`` and
returns a distance to the uncached output (lower is better).

Choices (documented here because they change what a user sees):

* Search space (``anchor_space``): gap fractions (``K-1`` log-uniform parameters) for
  K <= 12, a 6-piece warp slope for larger K; both are projected exactly onto a
  feasible integer schedule (``projection.project``) with max gap ``L_a``.
* ``n_trials`` is the *total* number of finished (complete + pruned) trials of
  the study, across calls and processes: calling again with the same storage
  resumes up to that total and does not add ``n_trials`` more. Raise it to
  search longer.
* Repeated integer schedules are memoised through the storage (trial user
  attrs), so a memo survives restarts and is shared by every worker. A trial
  first claims its schedule (user attr ``schedule``); when another worker's
  RUNNING trial claims the same one, it steps back (FAIL, ``duplicate_of``,
  not counted) instead of evaluating it a second time.
* Workers with the same ``seed`` draw different proposals: each trial's TPE
  draws are seeded from (seed, trial number) (``anchor_sampler``).
* A trial whose ``evaluate`` raises an ordinary exception scores +inf (user attr
  ``failed``); exceptions listed in ``propagate`` (e.g. ComfyUI's interrupt),
  ``KeyboardInterrupt`` and ``SystemExit`` stop the search, and the interrupted
  trial is queued again so the next call redoes it.
* A trial left RUNNING by a killed process (SIGKILL, power loss, a machine
  gone) is failed and its parameters queued again within minutes, by any live
  worker (``heartbeat``: Optuna's heartbeat on databases, an equivalent on
  journal files), so no completed trial is lost and no work is silently dropped.
"""
from __future__ import annotations

import logging
import math
import re
import time
import uuid
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .anchor_space import AnchorConfig, params_for, suggest_steps, warm_starts
from ..errors import OTCacheError, ScheduleError
from .heartbeat import ACTIVE, GRACE_PERIOD, HEARTBEAT_INTERVAL, Beat, carried_attrs, is_stale, owner
from ..schedules.schedule import Schedule
from .study_storage import connect

log = logging.getLogger("otcache")

Evaluate = Callable[[Schedule, int], float]
Progress = Callable[[int, int, float | None], None]

# --- storage ----------------------------------------------------------------------------

def open_storage(storage: Any) -> Any:
    """The Optuna storage of ``storage`` (a journal path, a URL or a storage object), checked:
    see ``study_storage.connect``."""
    return connect(storage).optuna


def study_name(model_key: str, cfg: AnchorConfig, context: Mapping[str, Any] | None = None) -> str:
    """anchor-<model>-N<steps>-K<budget>-<digest of the objective settings>."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model_key))[:40] or "model"
    return f"anchor-{safe}-N{cfg.num_steps}-K{cfg.budget}-{cfg.digest(context)}"


# --- trial bookkeeping -------------------------------------------------------------------

def recover_stale_trials(study: Any, grace_period: float = GRACE_PERIOD) -> list[int]:
    """Fail RUNNING trials of dead workers and queue their parameters again; returns their numbers.

    With Optuna's heartbeat (database storages) Optuna decides and its callback queues the trials
    (``heartbeat.RetryStale``); otherwise OTCache's own heartbeat attributes do (``heartbeat.is_stale``)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fail_stale_trials(study)
        return []
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, grace_period):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "stale", True)
            changed = study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError):
            continue
        if changed and not t.user_attrs.get("interrupted"):   # an interrupted trial queued itself again
            study.enqueue_trial(dict(t.params), user_attrs=carried_attrs(t))
            recovered.append(t.number)
    if recovered:
        log.warning("[OTCache] anchor search: trial(s) %s were left running by a stopped worker; queued again",
                    recovered)
    return recovered


def finished_count(study: Any) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def same_schedule(study: Any, steps: tuple[int, ...], trial: Any) -> tuple[Any | None, Any | None]:
    """(an earlier finished trial that scored ``steps``: the memo, or else another worker's RUNNING trial that
    claims it: the rival), from one read of the study: two reads (finished trials, then running ones) would
    miss a rival that finishes between them."""
    from optuna.trial import TrialState
    complete = pruned = rival = None
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or tuple(t.user_attrs.get("schedule", ())) != steps:
            continue
        if t.state == TrialState.COMPLETE and "failed" not in t.user_attrs:
            complete = complete or t
        elif t.state == TrialState.PRUNED and "failed" not in t.user_attrs:
            pruned = pruned or t
        elif t.state == TrialState.RUNNING and "duplicate_of" not in t.user_attrs:
            rival = rival or t
    return complete or pruned, rival


class ClaimedElsewhere(Exception):
    """This trial's schedule is being evaluated by another worker right now: this trial steps back."""


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value) and "schedule" in t.user_attrs]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


# --- the objective ------------------------------------------------------------------------

class _Objective:
    def __init__(self, evaluate: Evaluate, cfg: AnchorConfig, propagate: tuple[type[BaseException], ...],
                 beat_interval: float | None = None):
        self.evaluate, self.cfg, self.propagate = evaluate, cfg, propagate
        self.beat_interval = beat_interval
        self.run_id = uuid.uuid4().hex
        self.current: Any = None

    def __call__(self, trial: Any) -> float:
        key = (self.run_id, trial.number)
        ACTIVE.add(key)
        self.current = trial
        try:
            return self._trial(trial)
        finally:
            ACTIVE.discard(key)

    def _trial(self, trial: Any) -> float:
        import optuna
        cfg = self.cfg
        trial.set_user_attr("otcache_run", self.run_id)
        trial.set_user_attr("otcache_owner", owner())
        steps = suggest_steps(trial, cfg)
        target = trial.user_attrs.get("target_schedule")
        if target is not None:
            steps = tuple(int(s) for s in target)
        trial.set_user_attr("schedule", list(steps))       # the claim: written before anyone's check below
        hit, rival = same_schedule(trial.study, steps, trial)
        if hit is not None:
            trial.set_user_attr("memo_of", hit.number)
            if hit.state.name == "PRUNED":
                raise optuna.TrialPruned(f"same schedule as pruned trial {hit.number}")
            return float(hit.value)
        if rival is not None:   # of two concurrent claims, at least the later checker sees the other one
            self._step_back(trial, rival)
        schedule = Schedule(cfg.num_steps, steps, kind="anchor", force_last=cfg.force_last, max_gap=cfg.gap,
                            sigmas=cfg.sigmas)
        if self.beat_interval is None:
            return self._run_pairs(trial, schedule)
        with Beat(trial.study._storage, trial._trial_id, self.beat_interval):
            return self._run_pairs(trial, schedule)

    def _run_pairs(self, trial: Any, schedule: Schedule) -> float:
        import optuna
        scores: list[float] = []
        for p in range(self.cfg.n_pairs):
            try:
                value = float(self.evaluate(schedule, p))
            except self.propagate:
                self._requeue(trial)
                raise
            except Exception as e:  # noqa: BLE001 - a failed run (OOM, NaN...) must not end the study
                msg = f"{type(e).__name__}: {e}"[:500]
                trial.set_user_attr("failed", msg)
                log.warning("[OTCache] anchor trial %d failed on pair %d (%s); scored +inf", trial.number, p, msg)
                return math.inf
            except BaseException:
                self._requeue(trial)
                raise
            if not math.isfinite(value):
                trial.set_user_attr("failed", f"non-finite score {value} on pair {p}")
                return math.inf
            scores.append(value)
            mean = float(np.mean(scores))
            trial.set_user_attr("pair_scores", scores)
            trial.report(mean, step=p)
            if self.cfg.prune and p < self.cfg.n_pairs - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after pair {p} (mean {mean:.4g})")
        return float(np.mean(scores))

    @staticmethod
    def _step_back(trial: Any, rival: Any) -> None:
        """Leave the schedule to the rival, which does the same work (a warm start or a retry included: if the
        rival dies, its own trial is retried)."""
        trial.set_user_attr("duplicate_of", rival.number)
        raise ClaimedElsewhere(f"trial {rival.number} is evaluating the same schedule")

    @staticmethod
    def _requeue(trial: Any) -> None:
        try:
            trial.set_user_attr("interrupted", True)
            trial.study.enqueue_trial(dict(trial.params), user_attrs=carried_attrs(trial))
        except Exception as e:  # noqa: BLE001 - never mask the interrupt itself
            log.warning("[OTCache] could not queue interrupted trial %d again: %s", trial.number, e)


# --- the search --------------------------------------------------------------------------

def make_study(cfg: AnchorConfig, storage: Any, name: str) -> Any:
    import optuna
    from .anchor_sampler import TrialSeededSampler
    sampler = TrialSeededSampler(cfg.seed, multivariate=True, n_startup_trials=max(10, 2 * cfg.dimension),
                                 constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=0) if cfg.prune \
        else optuna.pruners.NopPruner()
    return optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def enqueue_warm_starts(study: Any, cfg: AnchorConfig, starts: Sequence[tuple[str, Sequence[int]]]) -> None:
    """Queue each warm start once per study (skip_if_exists makes a resumed call a no-op; callers hold the
    storage's lock so that workers starting together do not each queue them)."""
    for name, steps in starts:
        steps = tuple(int(s) for s in steps)
        study.enqueue_trial(params_for(steps, cfg), user_attrs={"warm_start": name, "target_schedule": list(steps)},
                            skip_if_exists=True)


def search_anchor(evaluate: Evaluate, cfg: AnchorConfig, storage: Any, *, model_key: str = "model",
                  context: Mapping[str, Any] | None = None, reference: Schedule | None = None,
                  graph: Schedule | Sequence[int] | None = None, progress: Progress | None = None,
                  propagate: Sequence[type[BaseException]] = (), heartbeat_interval: float = HEARTBEAT_INTERVAL,
                  grace_period: float = GRACE_PERIOD, name: str | None = None) -> Schedule:
    """Run (or resume) the anchor search until the study holds ``cfg.n_trials`` finished trials.

    ``storage``: a journal file path, an Optuna storage URL, a ``StudyStorage`` or a storage object.
    ``context``: anything else that changes the objective (seeds, sampler, cfg...), hashed
    into the study name. ``progress(done, total, best)`` is called after every trial.
    ``heartbeat_interval`` / ``grace_period`` (seconds): how often a running trial shows it is alive, and
    after how much silence a trial counts as its worker's death (for a path or a URL).
    Returns the best schedule (kind ``anchor``) with its search provenance.
    """
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a trial stepping back is not worth a traceback
    try:
        store = connect(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        name = name or study_name(model_key, cfg, context)
        study = make_study(cfg, store.optuna, name)
        recover_stale_trials(study, store.grace_period)
        with store.exclusive(name):
            enqueue_warm_starts(study, cfg, warm_starts(cfg, reference, graph))
        objective = _Objective(evaluate, cfg, tuple(propagate), store.beat_interval)
        stepped_back = 0
        while True:
            done = finished_count(study)
            best = best_trial(study)
            if progress is not None:
                progress(min(done, cfg.n_trials), cfg.n_trials, best.value if best else None)
            if done >= cfg.n_trials:
                break
            recover_stale_trials(study, store.grace_period)
            try:
                study.optimize(objective, n_trials=1, catch=(ClaimedElsewhere,))
            except BaseException:
                _fail_if_running(study, objective.current)
                raise
            stepped_back = _back_off(objective.current, stepped_back)
    finally:
        optuna.logging.set_verbosity(previous)
    return _result(study, cfg, store.where, name, done)


def _back_off(trial: Any, streak: int) -> int:
    """After several trials in a row stepped back for a rival, wait a little for the rivals to finish
    (a tiny search space with every schedule in flight would otherwise spin)."""
    if trial is None or "duplicate_of" not in trial.user_attrs:
        return 0
    if streak >= 3:
        time.sleep(min(0.05 * 2 ** (streak - 3), 2.0))
    return streak + 1


def _fail_if_running(study: Any, trial: Any) -> None:
    """Optuna marks a trial FAIL only for Exception/KeyboardInterrupt; other BaseExceptions (newer
    ComfyUI's interrupt) leave it RUNNING. It is not running any more: say so."""
    from optuna.trial import TrialState
    if trial is None:
        return
    try:
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except Exception as e:  # noqa: BLE001 - never mask the original exception
        log.warning("[OTCache] could not close interrupted trial %d: %s", trial.number, e)


def _result(study: Any, cfg: AnchorConfig, where: str, name: str, done: int) -> Schedule:
    best = best_trial(study)
    if best is None:
        failures = [t.user_attrs.get("failed") for t in study.trials if "failed" in t.user_attrs]
        raise OTCacheError(f"the anchor search finished no trial with a finite score ({len(failures)} failed; "
                           f"first error: {failures[0] if failures else 'none'})")
    prov = dict(cfg.provenance)
    prov.update({"source": "anchor-search", "metric": cfg.metric, "trials": done, "score": float(best.value),
                 "best_trial": best.number, "storage": where, "study": name, "search_seed": cfg.seed,
                 "param": cfg.kind, "pairs": cfg.n_pairs, "budget": cfg.budget, "steps": cfg.num_steps})
    if "warm_start" in best.user_attrs:
        prov["warm_start"] = best.user_attrs["warm_start"]
    try:
        return Schedule(cfg.num_steps, tuple(best.user_attrs["schedule"]), kind="anchor", force_last=cfg.force_last,
                        max_gap=cfg.gap, sigmas=cfg.sigmas, provenance=prov)
    except ScheduleError as e:
        raise OTCacheError(f"study {name!r} holds a schedule that does not fit this search ({e})") from None
