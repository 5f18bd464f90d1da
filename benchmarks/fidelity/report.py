"""Tables and a plot from the in-host fidelity benchmark's JSON files (``docs/results/fidelity``).

``python -m benchmarks.fidelity.report [DIR]`` rewrites ``fidelity.md`` and ``fidelity.png`` from whatever
cells are there. The summary states each target of the method as measured, cell by cell, whatever it shows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "docs" / "results" / "fidelity"
TITLES = {"wan21": "Wan 2.1 class (WanModel, trained at its shift 8)",
          "wan21_plain": "Wan 2.1 class (WanModel, trained on unshifted noise, sampled at shift 8)",
          "flux": "FLUX.1-schnell class (Flux, shift 1.0, cfg 1)"}


def load_cells(folder: Path) -> list[dict[str, Any]]:
    cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*_N*.json"))]
    order = list(TITLES)
    return sorted(cells, key=lambda c: (order.index(c["family"]) if c["family"] in order else 99, c["steps"]))


def rows_of(cell: dict, method: str, operator: str | None = None) -> dict[int, dict]:
    return {r["budget"]: r for r in cell["rows"] if r["method"] == method
            and (operator is None or r["operator"] == operator)}


def chosen_operator(cell: dict) -> str:
    """The operator Calibrate chose, named as ``operators.Operator.label`` names it (read from the JSON alone)."""
    p = cell["schedules"]["reference"]["provenance"]
    reuse, gamma = p.get("reuse"), p.get("gamma")
    return f"omnicache(gamma={gamma:g})" if reuse == "omnicache" else str(reuse)


def cell_table(cell: dict) -> list[str]:
    n = cell["steps"]
    lines = [f"#### {TITLES.get(cell['family'], cell['family'])}, N = {n}", "",
             f"Calibrate chose reuse **{chosen_operator(cell)}** (`auto` ran: {operators_used(cell)}); reference "
             f"{cell['schedules']['reference']['provenance'].get('reference_source', 'graph')}, "
             f"K = {len(cell['schedules']['reference']['compute_steps'])}; anchor K = "
             f"{len(cell['schedules']['anchor']['compute_steps'])}. Uncached: "
             f"{cell['uncached_seconds']:.2f} s for the 16 held-out pairs (batched).", "",
             "| method | reuse | K | ran | N/K | PSNR mean | PSNR min | SSIM mean | SSIM min | wall x |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(cell["rows"], key=lambda r: (-r["budget"], r["method"], r["operator"])):
        per_pair = r["method"] in ("EasyCache", "LazyCache")
        wall = "" if per_pair else f"{cell['uncached_seconds'] / max(r['seconds'], 1e-9):.2f}"
        lines.append(f"| {r['method']} | {r['operator']} | {r['budget']} | {r['computed']:.1f} | "
                     f"{n / max(r['computed'], 1e-9):.2f} | {r['psnr']:.2f} | {r['psnr_min']:.2f} | "
                     f"{r['ssim']:.4f} | {r['ssim_min']:.4f} | {wall} |")
    return lines + [""]


def nearest(cell: dict, method: str, k: int) -> dict | None:
    """The sweep point of a dynamic cache whose mean computed steps is nearest K (within half a step of a
    whole step more, so it never gets fewer computes than the method it is compared with by much)."""
    pts = [x for x in cell["rows"] if x["method"] == method and x["computed"] >= k - 0.5]
    return min(pts, key=lambda x: abs(x["computed"] - k), default=None)


def role(cell: dict, k: int) -> str:
    """What OTCache's schedule at K is: the reference, the anchor, a ladder entry, or outside the range."""
    ref, anc = cell["schedules"]["reference"], cell["schedules"]["anchor"]
    if k == len(ref["compute_steps"]):
        return "reference"
    if k == len(anc["compute_steps"]):
        return "anchor"
    entry = (anc["provenance"].get("ladder") or {}).get("entries", {}).get(str(k))
    return f"ladder: {entry['source']}" if entry else "outside anchor..reference"


def ran_with(cell: dict, row: dict) -> str:
    """The operator a default row ran with (recorded by the bench; older files: the one Calibrate chose)."""
    return row.get("ran_with") or chosen_operator(cell)


def operators_used(cell: dict) -> str:
    """'output' or, when 'auto' changed operator with the budget, e.g. 'output; omnicache(gamma=1) at K=12-18'."""
    chosen, ot = chosen_operator(cell), rows_of(cell, "OTCache", "default")
    other = sorted(k for k, r in ot.items() if ran_with(cell, r) != chosen)
    if not other:
        return chosen
    labels = sorted({ran_with(cell, ot[k]) for k in other})
    return f"{chosen}; {', '.join(labels)} at K={other[0]}-{other[-1]}"


def targets(cell: dict) -> list[str]:
    """Each target of the method, measured in this cell."""
    n = cell["steps"]
    ot = rows_of(cell, "OTCache", "default")
    out = []
    for k, r in sorted(ot.items(), reverse=True):
        op = ran_with(cell, r)
        uni = rows_of(cell, "uniform", op)
        if k not in uni:
            continue
        gain = r["psnr"] - uni[k]["psnr"]
        line = f"K={k} ({role(cell, k)}): {gain:+.2f} dB over uniform ({op})"
        if n / k >= 2.5:
            best = best_simple(cell, k)
            if best is not None:
                line += f", {r['psnr'] - best['psnr']:+.2f} dB over the best simple cache ({best['method']} " \
                        f"{best['operator']}, {best['psnr']:.2f})"
        out.append(line)
    direct, interp = rows_of(cell, "direct optimisation"), rows_of(cell, "OT interpolation")
    for k in sorted(set(direct) & set(interp), reverse=True):
        out.append(f"K={k}: OT interpolation {interp[k]['psnr'] - direct[k]['psnr']:+.2f} dB vs direct optimisation")
    rank = cell.get("extra", {}).get("edge_error_ranking")
    if rank:
        out.append(f"edge errors vs measured end-to-end error of the ladder's candidates: Spearman rho "
                   f"{rank['spearman_rho']:.2f} over {rank['points']}; the predicted best was the measured best "
                   f"at {rank['best_agrees']} of {rank['budgets']} budgets")
    local, hybrid = rows_of(cell, "graph (local error)"), rows_of(cell, "graph (hybrid error)")
    both = sorted(set(local) & set(hybrid), reverse=True)
    if both:
        out.append("graph optimum, hybrid minus local error (dB): " +
                   ", ".join(f"K={k} {hybrid[k]['psnr'] - local[k]['psnr']:+.1f}" for k in both))
    return out


RATIOS = ("N/1.7", "N/2", "N/2.5", "N/3", "N/4", "N/5", "N/6")


def budgets_of(n: int) -> list[int]:
    """The budgets the bench used, largest first, in the order of ``RATIOS``."""
    return [round(n / 1.7), n // 2, round(n / 2.5), n // 3, round(n / 4), max(2, round(n / 5)), max(2, round(n / 6))]


def best_simple(cell: dict, k: int) -> dict | None:
    rivals = [rows_of(cell, "uniform", "output").get(k)] + [nearest(cell, m, k) for m in ("EasyCache", "LazyCache")]
    return max((x for x in rivals if x is not None), key=lambda x: x["psnr"], default=None)


def summary(cells: list[dict]) -> str:
    """The README's table: OTCache with defaults against uniform (same operator) and the simple caches."""
    head = "| model, N | reuse (auto) | " + " | ".join(RATIOS) + " |"
    lines = ["OTCache with every default (PSNR in dB against the uncached images, mean over the 16 held-out "
             "pairs), and in brackets its gain over a **uniform schedule with the same reuse operator** (†: over "
             "Apply with nothing connected, where the bench ran no uniform schedule with that operator):", "",
             head, "|---|---|" + "---:|" * len(RATIOS)]
    simple = ["", "Gain of the same OTCache rows over the **best of uniform output reuse, EasyCache and "
              "LazyCache** at the same K (N/K ≥ 2.5; EasyCache / LazyCache: the sweep point nearest K):", "",
              "| model, N | " + " | ".join(RATIOS[2:]) + " |", "|---|" + "---:|" * (len(RATIOS) - 2)]
    for cell in cells:
        n = cell["steps"]
        ot = rows_of(cell, "OTCache", "default")
        row = [f"{cell['family']}, {n}", operators_used(cell)]
        srow = [f"{cell['family']}, {n}"]
        for i, k in enumerate(budgets_of(n)):
            uni = rows_of(cell, "uniform", ran_with(cell, ot[k])) if k in ot else {}
            free = rows_of(cell, "Apply, nothing connected", "default")
            if k in ot and k in uni:
                row.append(f"{ot[k]['psnr']:.1f} ({ot[k]['psnr'] - uni[k]['psnr']:+.1f})")
            elif k in ot and k in free:      # no uniform row with the operator auto ran: against the free default
                row.append(f"{ot[k]['psnr']:.1f} ({ot[k]['psnr'] - free[k]['psnr']:+.1f}†)")
            else:
                row.append("")
            if i >= 2:
                b = best_simple(cell, k)
                srow.append(f"{ot[k]['psnr'] - b['psnr']:+.1f}" if b is not None and k in ot else "")
        lines.append("| " + " | ".join(row) + " |")
        simple.append("| " + " | ".join(srow) + " |")
    premise = ["", "OT interpolation against the anchor search run at the budget itself (dB, 4 budgets between "
               "anchor and reference; negative: direct optimisation was better):", ""]
    for cell in cells:
        direct, interp = rows_of(cell, "direct optimisation"), rows_of(cell, "OT interpolation")
        gaps = [f"K={k}: {interp[k]['psnr'] - direct[k]['psnr']:+.1f}" for k in sorted(set(direct) & set(interp))]
        if gaps:
            premise.append(f"- {cell['family']}, N={cell['steps']}: " + ", ".join(gaps))
    return "\n".join(lines + simple + (premise if len(premise) > 3 else [])) + "\n"


def write_report(folder: Path = OUT) -> Path:
    cells = load_cells(folder)
    lines = ["# In-host fidelity benchmark", "",
             "Generated by `python -m benchmarks.fidelity.bench` (`benchmarks/fidelity/`): the pack's nodes on "
             "small trained models of real ComfyUI families, 16 held-out prompt/seed pairs, PSNR/SSIM of the "
             "decoded images against the uncached ones. *ran*: mean computed steps per pair that actually ran.", ""]
    for cell in cells:
        lines += ["### Targets, " + f"{cell['family']} N={cell['steps']}", ""]
        lines += [f"- {t}" for t in targets(cell)] + [""]
    for cell in cells:
        lines += cell_table(cell)
    path = folder / "fidelity.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "summary.md").write_text(summary(cells), encoding="utf-8")
    plot(cells, folder / "fidelity.png")
    return path


def plot(cells: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        ot = rows_of(cell, "OTCache", "default")
        same = {k: rows_of(cell, "uniform", ran_with(cell, r)).get(k) for k, r in ot.items()}
        series = [("OTCache (defaults)", ot, "C3"), ("uniform, same operator", same, "C0"),
                  ("uniform, output", rows_of(cell, "uniform", "output"), "C7"),
                  ("Apply alone", rows_of(cell, "Apply, nothing connected", "default"), "C2")]
        for label, rs, colour in series:
            ks = sorted(k for k, r in rs.items() if r is not None)
            ax.plot([cell["steps"] / k for k in ks], [rs[k]["psnr"] for k in ks], "o-", label=label, color=colour)
        for m, colour in (("EasyCache", "C1"), ("LazyCache", "C4")):
            pts = sorted((cell["steps"] / r["computed"], r["psnr"]) for r in cell["rows"] if r["method"] == m)
            if pts:
                ax.plot(*zip(*pts), "s--", label=m, color=colour)
        ax.set_title(f"{cell['family']}, N={cell['steps']} (reuse: {chosen_operator(cell)})", fontsize=9)
        ax.set_xlabel("N / K (less transformer work)")
        ax.set_ylabel("PSNR vs uncached (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
