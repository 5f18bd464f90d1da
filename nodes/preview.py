"""The data behind the schedule plot: one JSON shape for the graph widget, whatever produced it.

Used by three producers so that the JavaScript only draws:
- ``POST /otcache/preview`` (routes.py), while the user moves the budget before the graph runs;
- OTCache Apply's UI output after it executed (key ``otcache_schedule``);
- every node that outputs a schedule (Calibrate, Anchor Search, Load Schedule) for its own plot.

Payload (``PAYLOAD_VERSION`` 1), all plain JSON::

    {"version": 1,
     "num_steps": N, "budget": K, "speedup": N/K,      # the schedule the run will use (the last row)
     "compute_steps": [...], "sigmas": [N+1 floats] | null,
     "rows": [{"label", "kind", "num_steps", "compute_steps", "budget", "speedup", "source", "original"}...],
     "lambda": float | null, "rule": str | null,
     "warnings": [str...], "note": str,
     "schedule": <schedule dict of the last row>,
     "inputs": {"reference": <schedule dict> | null, "anchor": <schedule dict> | null}}

Rows are drawn top to bottom: reference, anchor, then the interpolated target. When the run has another
step count than a schedule, its row shows the schedule retargeted to the run's N (``original`` says what it
was). ``inputs`` carries the full schedules so the widget can ask for a new budget without re-running.

Nothing here imports ComfyUI or aiohttp.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..otcache_engine import Schedule, schedule_io
from ..otcache_engine.errors import OTCacheError, ScheduleError
from ..otcache_engine.schedules.schedule import MAX_STEPS
from ..otcache_engine.strict_json import brief, is_number

PAYLOAD_VERSION = 1
UI_KEY = "otcache_schedule"
ALLOWED_KEYS = ("reference", "anchor", "mode", "speedup", "budget", "compute_steps", "num_steps", "sigmas")


class PreviewError(ValueError):
    """A request the preview cannot answer; the message is shown to the user as is."""


# --- payload ------------------------------------------------------------------------------------

def _row(label: str, s: Schedule, original: Schedule | None = None) -> dict[str, Any]:
    row = {
        "label": label,
        "kind": s.kind,
        "num_steps": s.num_steps,
        "compute_steps": list(s.compute_steps),
        "budget": s.budget,
        "speedup": round(s.speedup, 4),
        "source": str(s.provenance.get("source", "")) or None,
        "original": None,
    }
    if original is not None and original.num_steps != s.num_steps:
        row["original"] = f"K={original.budget} of N={original.num_steps}"
    return row


def plot_payload(target: Schedule, reference: Schedule | None = None, anchor: Schedule | None = None,
                 *, sigmas: list[float] | None = None, label: str | None = None,
                 warnings_: list[str] | None = None, note: str = "",
                 shown_reference: Schedule | None = None, shown_anchor: Schedule | None = None,
                 ) -> dict[str, Any]:
    """The plot data for ``target`` (the schedule a run uses) and the schedules it came from.

    ``shown_reference`` / ``shown_anchor`` are the endpoints as drawn (retargeted to the target's N);
    ``reference`` / ``anchor`` are kept whole in ``inputs``. A node that outputs one schedule calls
    ``plot_payload(schedule, label="reference")`` (or "anchor", "schedule").
    """
    rows = []
    if reference is not None:
        rows.append(_row("reference", shown_reference or reference, reference))
    if anchor is not None:
        rows.append(_row("anchor", shown_anchor or anchor, anchor))
    is_mix = reference is not None and anchor is not None and target is not reference and target is not anchor
    rows.append(_row(label or ("interpolated" if is_mix else target.kind), target))
    sig = list(sigmas) if sigmas is not None else (list(target.sigmas) if target.sigmas is not None else None)
    if sig is not None and len(sig) != target.num_steps + 1:
        sig = None
    prov = target.provenance
    lam = prov.get("lambda")
    return {
        "version": PAYLOAD_VERSION,
        "num_steps": target.num_steps,
        "budget": target.budget,
        "speedup": round(target.speedup, 4),
        "compute_steps": list(target.compute_steps),
        "sigmas": sig,
        "rows": rows,
        "lambda": float(lam) if isinstance(lam, (int, float)) and not isinstance(lam, bool) else None,
        "rule": prov.get("rule") if isinstance(prov.get("rule"), str) else None,
        "warnings": list(warnings_ or []),
        "note": note,
        "schedule": target.to_dict(),
        "inputs": {"reference": reference.to_dict() if reference is not None else None,
                   "anchor": anchor.to_dict() if anchor is not None else None},
    }


def ui_output(payload: Mapping[str, Any]) -> dict[str, list]:
    """A node's ``ui`` dict: ComfyUI merges ui values as lists, so the payload is wrapped in one."""
    return {UI_KEY: [dict(payload)]}


# --- request validation -------------------------------------------------------------------------

def _is_int(x: Any) -> bool:
    return isinstance(x, int) and is_number(x)


def _schedule(value: Any, what: str, resolve_name) -> Schedule | None:
    if value is None:
        return None
    if isinstance(value, str):
        if resolve_name is None:
            raise PreviewError(f"'{what}' must be a schedule object")
        try:
            return resolve_name(value)
        except OTCacheError as e:
            raise PreviewError(f"'{what}': {e}") from None
    if not isinstance(value, Mapping):
        raise PreviewError(f"'{what}' must be a schedule object (as saved by OTCache) or null")
    try:
        return schedule_io.from_dict(value, what)
    except ScheduleError as e:
        raise PreviewError(str(e)) from None


def preview(body: Any, resolve_name=None) -> dict[str, Any]:
    """Answer a preview request (a decoded JSON body). Raises ``PreviewError`` with a clear message.

    ``resolve_name(name) -> Schedule`` lets the caller accept schedule *names* (presets, saved files)
    in place of schedule objects; without it only objects are accepted.
    """
    if not isinstance(body, Mapping):
        raise PreviewError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(ALLOWED_KEYS))
    if unknown:
        raise PreviewError(f"unknown field(s) {brief(unknown, 80)}; allowed: {list(ALLOWED_KEYS)}")
    reference = _schedule(body.get("reference"), "reference", resolve_name)
    anchor = _schedule(body.get("anchor"), "anchor", resolve_name)
    if reference is None and anchor is None:
        raise PreviewError("no schedule given: send 'reference' and/or 'anchor'")
    num_steps, sigmas = _run_grid(body)
    mode, speedup, budget = _budget(body)
    try:
        return _compute(reference, anchor, num_steps, sigmas, mode, speedup, budget)
    except PreviewError:
        raise
    except OTCacheError as e:
        raise PreviewError(str(e)) from None


def _run_grid(body: Mapping[str, Any]) -> tuple[int | None, list[float] | None]:
    """The run's step count and sigma grid the plot is shown on (both optional, consistent when both)."""
    num_steps = body.get("num_steps")
    if num_steps is not None and (not _is_int(num_steps) or not 1 <= num_steps <= MAX_STEPS):
        raise PreviewError(f"'num_steps' must be an integer between 1 and {MAX_STEPS}, got {brief(num_steps)}")
    sigmas = body.get("sigmas")
    if sigmas is None:
        return num_steps, None
    if (not isinstance(sigmas, list) or not 2 <= len(sigmas) <= MAX_STEPS + 1
            or not all(is_number(x) for x in sigmas)):
        raise PreviewError(f"'sigmas' must be a list of 2 to {MAX_STEPS + 1} finite numbers")
    sigmas = [float(x) for x in sigmas]
    if any(x < 0 for x in sigmas) or any(b > a for a, b in zip(sigmas, sigmas[1:])) or sigmas[0] <= sigmas[-1]:
        raise PreviewError("'sigmas' must be non-negative and decrease from noise to data")
    if num_steps is None:
        return len(sigmas) - 1, sigmas
    if len(sigmas) != num_steps + 1:
        raise PreviewError(f"'sigmas' has {len(sigmas)} values; num_steps={num_steps} needs {num_steps + 1}")
    return num_steps, sigmas


def _budget(body: Mapping[str, Any]) -> tuple[str, float | None, int | None]:
    """(mode, speedup, computed steps K) as OTCache Apply's budget inputs would give them."""
    from .runtime.resolver import MODES

    for key in ("budget", "compute_steps"):
        if body.get(key) is not None and (not _is_int(body[key]) or body[key] < 1):
            raise PreviewError(f"'{key}' must be a positive integer number of computed steps, got {brief(body[key])}")
    if body.get("budget") is not None and body.get("compute_steps") is not None:
        raise PreviewError("'budget' and 'compute_steps' mean the same; send one")
    budget = body.get("budget", body.get("compute_steps"))
    speedup = body.get("speedup")
    if speedup is not None and (not is_number(speedup) or speedup < 1.0):
        raise PreviewError(f"'speedup' must be a number >= 1 (N/K; 1 computes every step), got {brief(speedup)}")
    mode = body.get("mode")
    if mode is None:
        if budget is not None and speedup is not None:
            raise PreviewError("send either 'budget' (computed steps K) or 'speedup' (N/K), not both, "
                               "or say which one counts with 'mode'")
        mode = "compute steps" if budget is not None else "speedup"
    if mode not in MODES:
        raise PreviewError(f"'mode' must be one of {list(MODES)}, got {brief(mode)}")
    return mode, speedup, budget


def _compute(reference, anchor, num_steps, sigmas, mode, speedup, budget) -> dict[str, Any]:
    """The schedule OTCache Apply would use for these inputs (its own resolver: ``resolver.resolve``)."""
    from ..otcache_engine.schedules.warp import retarget
    from .runtime.resolver import BudgetRequest, quality_line, resolve, run_budget

    first = reference if reference is not None else anchor
    if mode == "speedup" and speedup is None:
        speedup = first.num_steps / first.budget
    if mode == "compute steps" and budget is None:
        budget = first.budget
    if mode == "compute steps" and budget > first.num_steps:
        raise PreviewError(f"'budget' must be at most the schedule's {first.num_steps} steps, got {budget}")
    res = resolve(BudgetRequest(reference=reference, anchor=anchor, mode=mode,
                                speedup=float(speedup) if speedup is not None else 2.0,
                                budget=int(budget) if budget is not None else 0))
    target, what = res.schedule, res.description
    n = num_steps if num_steps is not None else target.num_steps

    def shown(s):
        return retarget(s, n) if s is not None and s.num_steps != n else s

    extra: list[str] = []
    if reference is not None and anchor is not None:
        label = "interpolated"
        lo, hi = sorted((reference.budget, retarget(anchor, reference.num_steps).budget
                         if anchor.num_steps != reference.num_steps else anchor.budget))
        note = f"K={target.budget} of N={target.num_steps}, between the anchor and the reference ({lo}..{hi}): {what}"
        note += f"; {quality_line(res.quality)}" if res.quality else ""
        extra += list(res.warnings)
    else:
        label = "in use"
        role = "reference" if reference is not None else "anchor"
        note = f"only a{'n' if role == 'anchor' else ''} {role} is connected: {what}"
    target_shown = target if n == target.num_steps else retarget(target, n, budget=run_budget(target, n))
    if target_shown is not target:
        note += f"; shown on the run's {n} steps"
    payload = plot_payload(target_shown, reference, anchor, sigmas=sigmas, label=label, warnings_=extra, note=note,
                           shown_reference=shown(reference), shown_anchor=shown(anchor))
    payload["quality"] = dict(res.quality) if res.quality else None
    return payload
