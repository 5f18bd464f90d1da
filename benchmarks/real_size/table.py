"""The real-size table: one row per (operator, N/K) under an ``uncached`` row, and its printed form.

Why rows of numbers with their cells beside them: the host test checks the numbers (a row per operator and
speed-up, positive finite speed-ups, the NFE ratio equal to N/K) and the cells (the VRAM columns read
"n/a (cpu)" on a CPU) of the very table a GPU run prints, without parsing text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .measure import UNCACHED, Rounds, budget
from .specs import ModelSpec

NA_CPU = "n/a (cpu)"
GIB = 2**30
COLUMNS = ("operator", "N/K", "K", "NFE ratio", "s/run", "speed-up", "/ NFE", "peak VRAM", "cache")


@dataclass(frozen=True)
class Row:
    """One configuration: its best run, the speed-up over the best uncached run, its peak memory."""

    operator: str
    target: int               # the N/K asked for (1: uncached)
    k: int                    # computed steps of its schedule
    nfe_ratio: float          # transformer passes uncached / passes of this run, counted
    seconds: float            # fastest round
    speedup: float            # uncached seconds / seconds
    peak: int | None          # bytes; None on the CPU
    peak_uncached: int | None

    @property
    def efficiency(self) -> float:
        """Speed-up per unit of NFE ratio: 1.0 when a skipped step costs nothing."""
        return self.speedup / self.nfe_ratio

    def cells(self) -> dict[str, str]:
        if self.peak is None or self.peak_uncached is None:
            peak = cache = NA_CPU
        else:
            peak, cache = f"{self.peak / GIB:.2f} GiB", f"{(self.peak - self.peak_uncached) / GIB:+.2f} GiB"
        return dict(zip(COLUMNS, (self.operator, str(self.target), str(self.k), f"{self.nfe_ratio:.2f}",
                                  f"{self.seconds:.3f}", f"{self.speedup:.2f}", f"{self.efficiency:.3f}",
                                  peak, cache)))


@dataclass
class ModelResult:
    """One model's table and what it was measured on."""

    spec: ModelSpec
    size: str
    card: str
    steps: int
    cfg: float
    repeats: int
    params: int
    weight_bytes: int
    batch: int = 0
    warm_up_s: float = 0.0
    rows: list[Row] = field(default_factory=list)
    rounds_done: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.rows[0].seconds / self.steps


def rows_from(rounds: Rounds, steps: int) -> list[Row]:
    """The uncached row first, then every (operator, N/K) in measuring order, from the rounds so far."""
    def best(key):
        return min(r[key].seconds for r in rounds)

    def peak(key):
        peaks = [r[key].peak for r in rounds]
        return None if any(p is None for p in peaks) else max(peaks)

    base = (UNCACHED, 1)
    t0, p0, passes0 = best(base), peak(base), rounds[0][base].passes
    out = []
    for key in rounds[0]:
        label, s = key
        k = steps if key == base else budget(steps, s)
        out.append(Row(label, s, k, passes0 / rounds[0][key].passes, best(key), t0 / best(key), peak(key), p0))
    return out


def amount(n: float) -> str:
    """A parameter count as people say it: 11.90 B, 38.8 M, 647.4 k."""
    for unit, scale, digits in (("B", 1e9, 2), ("M", 1e6, 1), ("k", 1e3, 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return str(int(n))


def size_of(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:.1f} MiB"


def render(result: ModelResult) -> str:
    """The model's header lines and its table, as printed and written to the results file."""
    spec, r = result.spec, result
    cfg_how = (f"cond and uncond batched: the transformer saw batch {r.batch}" if r.batch >= 2
               else f"the transformer saw batch {r.batch}: CFG was not batched")
    rounds = f"best of {r.rounds_done} interleaved round{'s' if r.rounds_done != 1 else ''}"
    if r.rounds_done < r.repeats:
        rounds += f" (partial: {r.repeats} asked)"
    lines = [spec.describe(r.size),
             f"  {amount(r.params)} parameters, {size_of(r.weight_bytes)} of weights in bf16; on {r.card}",
             f"  N={r.steps} euler / simple, cfg {r.cfg} ({cfg_how}); {rounds} after a {r.warm_up_s:.1f} s warm-up"]
    if r.rows:
        lines.append(f"  uncached: {r.seconds_per_step:.4f} s/step, {r.rows[0].seconds:.3f} s/run")
        table = [dict(zip(COLUMNS, COLUMNS))] + [row.cells() for row in r.rows]
        width = {c: max(len(t[c]) for t in table) for c in COLUMNS}
        for i, t in enumerate(table):
            lines.append("  " + "  ".join(t[c].ljust(width[c]) if c == "operator" else t[c].rjust(width[c])
                                          for c in COLUMNS))
            if i == 0:
                lines.append("  " + "  ".join("-" * width[c] for c in COLUMNS))
    return "\n".join(lines)


LEGEND = ("N/K: the speed-up asked for (uniform schedule, K computed steps of N); NFE ratio: transformer passes\n"
          "uncached / cached, counted; speed-up: wall clock, best uncached run / best run; / NFE: speed-up per\n"
          "NFE ratio (1.000 = a reused step costs nothing); peak VRAM: torch.cuda.max_memory_allocated over the\n"
          "run (weights included), reset before it; cache: peak VRAM minus the uncached run's (the cache's own\n"
          "memory and what reuse allocates); cpu offload: the cache kept in host memory")
