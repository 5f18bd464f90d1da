"""CacheSession: the state of one sampling run (decisions, per-stream caches, counters).

One session is made when a sampling run starts and closed when it ends, also on
errors and interrupts, so nothing survives from one run to the next and nothing
lives on the (shared) model.

Decisions are per model *evaluation*, never per call: with classifier-free
guidance the cond and uncond streams may arrive batched in one call or as
separate calls, and both must take the same decision. Caches are per stream
(ComfyUI: the conditioning's uuid), so the batch composition may change from
step to step. A computed step runs the transformer at its first evaluation;
further evaluations that fall in the same step (heun's corrector, midpoint
samplers) reuse the cache just made, so the block stack runs exactly once per
computed step whatever the sampler. A plan that computes every step turns
caching off entirely: the run is then bit-identical to an unpatched one.

Operators that forecast (``taylor``) get each step's time from the plan (the
run step's sigma) and count, in ``forecast_fallbacks``, the predictions their
safety check replaced by plain reuse.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Hashable, NamedTuple, Sequence

import torch

from .reuse import CacheEntry, ReuseOperator, make_reuse
from .step_plan import StepPlan


class Decision(NamedTuple):
    """compute: run the transformer; step: the run step (None for an empty plan);
    store: keep what a computed call produces (False when caching is off)."""

    compute: bool
    step: int | None
    store: bool = True


_OFF = Decision(True, None, False)


class CacheSession:
    """Per-run cache state; see the module docstring for the rules."""

    def __init__(self, plan: StepPlan, reuse: ReuseOperator | None = None,
                 device: str | torch.device | None = None, label: str = "OTCache",
                 always_on: bool = False) -> None:
        self.plan = plan
        self.reuse = reuse or make_reuse("residual")
        self.device = torch.device(device) if device is not None else None
        self.label = label
        # always_on keeps the machinery running even when every step computes (overhead measurements).
        self.enabled = plan.num_steps > 0 and (always_on or not plan.all_compute)
        self.disabled_reason: str | None = None
        # Caches are keyed by each stream's rank (the order this run first saw it), not by ComfyUI's uuid,
        # which is new on every run: so a run resumed from another run's state finds that run's caches.
        self._ranks: dict[Hashable, int] = {}
        self._streams: dict[int, CacheEntry] = {}
        self._groups: dict[tuple[int, ...], CacheEntry] = {}
        self._decision: Decision | None = None
        self._last_step: int | None = None
        self._pin = self.device is not None and self.device.type == "cpu" and torch.cuda.is_available()
        self.evaluations = 0
        self.calls = 0
        self.calls_computed = 0
        self.forced = 0
        self.forecast_fallbacks = 0   # forecasts refused by the operator's safety check (plain reuse instead)
        self.bypassed: Counter[str] = Counter()
        self.steps_seen: set[int] = set()
        self.steps_computed: set[int] = set()
        self.closed = False
        self.watch: Callable[[int, "CacheSession"], None] | None = None   # told when each step starts

    def disable(self, reason: str) -> None:
        """Turn caching off for this run (every call computes), saying why in the summary."""
        self.enabled = False
        self.disabled_reason = reason

    # --- decisions ------------------------------------------------------------
    def begin_evaluation(self) -> None:
        """A new model evaluation starts (ComfyUI: CALC_COND_BATCH); forget the last decision."""
        self._decision = None
        self.evaluations += 1

    def decide(self, sigma: float) -> Decision:
        """The decision for the current evaluation at ``sigma`` (taken once, then repeated)."""
        d = self._decision
        if d is not None:
            return d
        step = self.plan.step_of(sigma)
        if step is None:
            d = _OFF
        else:
            self.steps_seen.add(step)
            if not self.enabled:
                d = Decision(True, step, False)
            else:
                first = step != self._last_step
                if first and self.watch is not None:
                    self.watch(step, self)   # before this step stores anything: the state it starts from
                d = Decision(first and self.plan.compute[step], step, True)
            self._last_step = step
        self._decision = d
        return d

    @property
    def decision(self) -> Decision | None:
        return self._decision

    # --- counters ------------------------------------------------------------
    def note_call(self, computed: bool, forced: bool = False, d: Decision | None = None) -> None:
        """Count one model call; ``forced`` = reuse was decided but no usable cache existed."""
        self.calls += 1
        if computed:
            self.calls_computed += 1
            d = d or self._decision
            if d is not None and d.step is not None:
                self.steps_computed.add(d.step)
        if forced:
            self.forced += 1

    def note_bypass(self, reason: str, d: Decision | None = None) -> None:
        """A call that had to run uncached (ControlNet, foreign block patches, ...)."""
        self.bypassed[reason] += 1
        self.note_call(True, d=d)

    # --- caches ---------------------------------------------------------------
    def store(self, key: Hashable, value: torch.Tensor, d: Decision, sig: tuple | None = None) -> None:
        """Keep ``value`` (residual or output of stream ``key``) computed at ``d.step``."""
        if not (self.enabled and d.store) or d.step is None:
            return
        key = self._rank(key)
        entry = self._streams.get(key)
        if entry is None:
            entry = self._streams[key] = CacheEntry()
        self.reuse.update(entry, self._keep(value), d.step, sig, self._time(d.step))

    def predict(self, key: Hashable, d: Decision, sig: tuple | None = None,
                device: torch.device | None = None) -> torch.Tensor | None:
        """The reused value of stream ``key`` at ``d.step``; None when it has no cache for ``sig``."""
        entry = self._streams.get(self._rank(key))
        if entry is None or entry.value is None or entry.sig != sig or d.step is None:
            return None
        return self._forecast(entry, d.step, device)

    def store_batch(self, keys: Sequence[Hashable], value: torch.Tensor, d: Decision,
                    sig: tuple | None = None) -> None:
        """Store a batch made of ``len(keys)`` equal chunks, one per stream."""
        if not (self.enabled and d.store) or d.step is None:
            return
        n = len(keys)
        if n == 1:
            self.store(keys[0], value, d, sig)
            return
        if n == 0 or value.shape[0] % n:
            return
        kept = self._keep(value)
        group = self._groups.get(self._ranked(keys))
        if group is None:
            group = self._groups[self._ranked(keys)] = CacheEntry()
        time = self._time(d.step)
        self.reuse.update(group, kept, d.step, sig, time)
        chunk, ssig = value.shape[0] // n, _split_sig(sig, n)
        for i, key in enumerate(self._ranked(keys)):
            entry = self._streams.get(key)
            if entry is None:
                entry = self._streams[key] = CacheEntry()
            self.reuse.update(entry, kept[i * chunk:(i + 1) * chunk], d.step, ssig, time)

    def predict_batch(self, keys: Sequence[Hashable], d: Decision, sig: tuple | None = None,
                      device: torch.device | None = None) -> torch.Tensor | None:
        """The reused value for a batch of streams; None if any stream lacks a matching cache."""
        n = len(keys)
        if n == 1:
            return self.predict(keys[0], d, sig, device)
        if d.step is None or n == 0:
            return None
        group = self._groups.get(self._ranked(keys))
        if group is not None and group.value is not None and group.sig == sig and self._group_fresh(group, keys):
            return self._forecast(group, d.step, device)
        ssig = _split_sig(sig, n)
        parts = [self.predict(k, d, ssig, device) for k in keys]
        if any(p is None for p in parts):
            return None
        return torch.cat(parts, dim=0)

    # --- resuming mid-run (measurement runs that share a trajectory prefix) ----------
    def snapshot(self, keep: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> "CacheSnapshot":
        """The caches as they are now, every tensor passed through ``keep`` (a copy elsewhere, or itself:
        stored tensors are never changed in place, an update rebinds them)."""
        return CacheSnapshot({k: e.copied(keep) for k, e in self._streams.items()},
                             {k: e.copied(keep) for k, e in self._groups.items()})

    def restore(self, snap: "CacheSnapshot") -> None:
        """Start this run from ``snap``'s caches (taken at the step the run resumes at)."""
        keep: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
        self._streams = {k: e.copied(keep) for k, e in snap.streams.items()}
        self._groups = {k: e.copied(keep) for k, e in snap.groups.items()}

    def has_cache(self, keys: Sequence[Hashable]) -> bool:
        ranks = self._ranked(keys)
        return all(k in self._streams and self._streams[k].value is not None for k in ranks)

    def entry(self, key: Hashable) -> CacheEntry | None:
        """Stream ``key``'s cache entry (for inspection)."""
        rank = self._ranks.get(key)
        return self._streams.get(rank) if rank is not None else None

    def group(self, keys: Sequence[Hashable]) -> CacheEntry | None:
        """The entry of the batch of streams ``keys`` (for inspection)."""
        if any(k not in self._ranks for k in keys):
            return None
        return self._groups.get(tuple(self._ranks[k] for k in keys))

    def _rank(self, key: Hashable) -> int:
        rank = self._ranks.get(key)
        if rank is None:
            rank = self._ranks[key] = len(self._ranks)
        return rank

    def _ranked(self, keys: Sequence[Hashable]) -> tuple[int, ...]:
        return tuple(self._rank(k) for k in keys)

    def _group_fresh(self, group: CacheEntry, keys: Sequence[Hashable]) -> bool:
        for k in self._ranked(keys):
            e = self._streams.get(k)
            if e is None or e.step != group.step or e.prev_step != group.prev_step or e.steps != group.steps:
                return False
        return True

    def _time(self, step: int) -> float | None:
        """The sampler's time at run step ``step``: its sigma (what forecasting operators differentiate in)."""
        sigmas = self.plan.run_sigmas
        return sigmas[step] if 0 <= step < len(sigmas) else None

    def _forecast(self, entry: CacheEntry, step: int, device: torch.device | None) -> torch.Tensor:
        value, fell_back = self.reuse.forecast(entry, step, self._time(step), device)
        if fell_back:
            self.forecast_fallbacks += 1
        return self._bring(value, device)

    def _keep(self, value: torch.Tensor) -> torch.Tensor:
        dev = self.device
        if dev is None or value.device == dev:
            return value
        if self._pin and value.device.type == "cuda":
            buf = torch.empty(value.shape, dtype=value.dtype, device="cpu", pin_memory=True)
            return buf.copy_(value, non_blocking=True)
        return value.to(dev)

    @staticmethod
    def _bring(value: torch.Tensor, device: torch.device | None) -> torch.Tensor:
        if device is None or value.device == device:
            return value
        return value.to(device, non_blocking=True)

    # --- reporting and end of run ----------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counters of the run as plain data (also for the UI)."""
        seen, computed = len(self.steps_seen), len(self.steps_computed & self.steps_seen)
        if not self.enabled and not self.calls:
            seen = computed = self.plan.num_steps  # caching off: the host never asked us anything
        ran = self.calls_computed
        return {
            "steps": self.plan.num_steps,
            "steps_seen": seen,
            "computed_steps": computed,
            "reused_steps": seen - computed,
            "evaluations": self.evaluations,
            "calls": self.calls,
            "calls_computed": ran,
            "forced_computes": self.forced,
            "forecast_fallbacks": self.forecast_fallbacks,
            "bypassed": dict(self.bypassed),
            "work_speedup": (self.calls / ran) if ran else 1.0,
            "planned_budget": self.plan.budget,
            "planned_speedup": self.plan.speedup,
            "mapping": self.plan.mapping,
            "mask": self.plan.mask_string(),
            "reuse": self.reuse.describe(),
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
        }

    def summary_line(self) -> str:
        s = self.summary()
        line = (f"{self.label}: computed {s['computed_steps']}/{s['steps_seen']} steps "
                f"(reused {s['reused_steps']}), {s['work_speedup']:.2f}x less transformer work")
        extra = []
        if not self.enabled:
            extra.append(f"caching off: {self.disabled_reason or 'every step of this run computes'}")
        if s["forced_computes"]:
            extra.append(f"{s['forced_computes']} calls computed for lack of a matching cache")
        if s["forecast_fallbacks"]:
            extra.append(f"{s['forecast_fallbacks']} forecasts refused (non-finite or too large): plain reuse")
        for reason, count in sorted(s["bypassed"].items()):
            extra.append(f"{count} calls uncached ({reason})")
        if s["mapping"] not in ("identity", "empty"):
            extra.append(f"schedule {s['mapping']} to this run: {s['mask']}")
        return line + (" [" + "; ".join(extra) + "]" if extra else "")

    def close(self) -> None:
        """Drop every cached tensor (idempotent)."""
        for entry in list(self._streams.values()) + list(self._groups.values()):
            entry.clear()
        self._streams.clear()
        self._groups.clear()
        self._decision = None
        self.closed = True


class CacheSnapshot(NamedTuple):
    """Every cache entry of a session at one step boundary (per stream and per batch of streams)."""

    streams: dict
    groups: dict

    def tensors(self) -> list[torch.Tensor]:
        """The distinct tensors it holds (what it costs in memory)."""
        seen: dict[int, torch.Tensor] = {}
        for e in list(self.streams.values()) + list(self.groups.values()):
            for t in e.tensors():
                seen.setdefault(id(t), t)
        return list(seen.values())


def _split_sig(sig: tuple | None, n: int) -> tuple | None:
    if sig is None or not sig:
        return sig
    return (sig[0] // n,) + tuple(sig[1:])
