"""The schedule value: which of the N sampling steps run the transformer.

A schedule is the one object every stage exchanges (calibration -> reference,
anchor search -> anchor, interpolation -> target, runtime -> decisions), so it
is immutable and validated once, when it is made. Step 0 is always computed
(there is nothing to reuse before it); the last step is computed unless
``force_last`` is off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ScheduleError
from ..strict_json import brief

FORMAT = "otcache.schedule"   # the file format (schedule_io) of to_dict()
VERSION = 1


def budget_for_speedup(num_steps: int, speedup: float, least: int = 1) -> int:
    """K for a target speed-up N/K: N / speedup rounded half up (float noise absorbed), within [least, N].

    The one rounding of a speed-up: OTCache Apply's slider, the preview, retargeting to another step count
    (which keeps the speed-up) and the toy benchmark's budgets all go through it.
    """
    return max(least, min(num_steps, int(math.floor(num_steps / speedup + 0.5 + 1e-9))))

KINDS = frozenset({
    "custom", "reference", "anchor", "interpolated", "optimized", "graph", "uniform",
    "omnicache", "magcache", "teacache", "easycache", "fbcache", "preset", "full",
})
COORDS = frozenset({"index", "sigma"})
# ComfyUI's own step limit (KSampler's ``steps`` input). A schedule file claiming more steps is refused:
# 57 bytes asking for 10^8 steps would otherwise stall a run for minutes and allocate gigabytes.
MAX_STEPS = 10_000


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Schedule:
    """A compute mask over ``num_steps`` steps, stored as its sorted compute set.

    ``sigmas`` (optional, N+1 values) is the noise grid the schedule was made on;
    it lets the runtime map a run with another grid onto this one.
    ``provenance`` records where the schedule came from (model, sampler, budget,
    metric...) and is carried through every transformation.
    """

    num_steps: int
    compute_steps: tuple[int, ...]
    kind: str = "custom"
    force_last: bool = True
    coord: str = "index"
    sigmas: tuple[float, ...] | None = None
    max_gap: int | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compute_steps", tuple(int(s) for s in self.compute_steps))
        if self.sigmas is not None:
            object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        object.__setattr__(self, "provenance", _freeze(dict(self.provenance or {})))
        _validate(self)

    # --- construction -------------------------------------------------
    @classmethod
    def from_mask(cls, mask: Sequence[bool | int], **kwargs: Any) -> "Schedule":
        return cls(len(mask), tuple(i for i, m in enumerate(mask) if m), **kwargs)

    @classmethod
    def full(cls, num_steps: int, **kwargs: Any) -> "Schedule":
        kwargs.setdefault("kind", "full")
        return cls(num_steps, tuple(range(num_steps)), **kwargs)

    def replace(self, **changes: Any) -> "Schedule":
        fields = dict(num_steps=self.num_steps, compute_steps=self.compute_steps, kind=self.kind,
                      force_last=self.force_last, coord=self.coord, sigmas=self.sigmas,
                      max_gap=self.max_gap, provenance=_thaw(self.provenance))
        fields.update(changes)
        return Schedule(**fields)

    def with_provenance(self, **entries: Any) -> "Schedule":
        merged = _thaw(self.provenance)
        merged.update(entries)
        return self.replace(provenance=merged)

    # --- views --------------------------------------------------------
    @property
    def budget(self) -> int:
        """K, the number of computed steps."""
        return len(self.compute_steps)

    @property
    def speedup(self) -> float:
        """NFE speedup N/K (an upper bound of the wall-clock speedup)."""
        return self.num_steps / self.budget

    @property
    def mask(self) -> tuple[bool, ...]:
        computed = set(self.compute_steps)
        return tuple(n in computed for n in range(self.num_steps))

    @property
    def gaps(self) -> tuple[int, ...]:
        s = self.compute_steps
        return tuple(b - a for a, b in zip(s, s[1:]))

    @property
    def largest_gap(self) -> int:
        tail = [self.num_steps - self.compute_steps[-1]] if not self.force_last else []
        return max(list(self.gaps) + tail + [1])

    def is_computed(self, step: int) -> bool:
        return step in set(self.compute_steps)

    def last_compute(self, step: int) -> int:
        """c(n): the latest computed step at or before ``step``."""
        return max(s for s in self.compute_steps if s <= step)

    def mask_string(self, on: str = "#", off: str = ".") -> str:
        return "".join(on if m else off for m in self.mask)

    def to_dict(self) -> dict[str, Any]:
        """The file format's JSON object (``schedule_io`` writes and reads it)."""
        return {"format": FORMAT, "version": VERSION, "num_steps": self.num_steps,
                "compute_steps": list(self.compute_steps), "kind": self.kind, "force_last": self.force_last,
                "coord": self.coord, "sigmas": list(self.sigmas) if self.sigmas is not None else None,
                "max_gap": self.max_gap, "provenance": _thaw(self.provenance)}


def _validate(s: Schedule) -> None:
    n = s.num_steps
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STEPS:
        raise ScheduleError(f"num_steps must be an integer from 1 to {MAX_STEPS} (ComfyUI's step limit), "
                            f"got {brief(n)}")
    steps = s.compute_steps
    if len(steps) > n:
        raise ScheduleError(f"compute_steps has {len(steps)} entries, more than num_steps={n}")
    if not steps:
        raise ScheduleError("compute_steps is empty: step 0 must always be computed")
    if steps[0] != 0:
        raise ScheduleError(f"compute_steps must start with step 0 (there is nothing to reuse before it), "
                            f"got {brief(steps[0])}")
    for a, b in zip(steps, steps[1:]):
        if b <= a:
            raise ScheduleError(f"compute_steps must be strictly increasing without duplicates, found {brief(a)} "
                                f"then {brief(b)}")
    if steps[-1] >= n:
        raise ScheduleError(f"compute step {brief(steps[-1])} is out of range for num_steps={n} (valid: 0..{n - 1})")
    if s.force_last and steps[-1] != n - 1:
        raise ScheduleError(f"the last step ({n - 1}) must be computed when force_last is true")
    if s.kind not in KINDS:
        raise ScheduleError(f"unknown schedule kind {s.kind!r}; expected one of {sorted(KINDS)}")
    if s.coord not in COORDS:
        raise ScheduleError(f"unknown coordinate {s.coord!r}; expected 'index' or 'sigma'")
    if s.max_gap is not None:
        if isinstance(s.max_gap, bool) or not isinstance(s.max_gap, int) or not 1 <= s.max_gap <= MAX_STEPS:
            raise ScheduleError(f"max_gap must be an integer from 1 to {MAX_STEPS} or null, got {brief(s.max_gap)}")
    if s.sigmas is not None:
        _validate_sigmas(s.sigmas, n)


def _validate_sigmas(sigmas: Iterable[float], n: int) -> None:
    sig = list(sigmas)
    if len(sig) != n + 1:
        raise ScheduleError(f"sigmas must have num_steps+1 = {n + 1} values, got {len(sig)}")
    if any(not math.isfinite(x) for x in sig):
        raise ScheduleError("sigmas contain NaN or infinity")
    if any(x < 0 for x in sig):
        raise ScheduleError("sigmas must be non-negative")
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ScheduleError("sigmas must be non-increasing (from noise to data)")
    if sig[0] <= sig[-1]:
        raise ScheduleError("sigmas must decrease from the first to the last value")
