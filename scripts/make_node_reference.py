"""Write the node reference of docs/nodes.md from the node definitions a real ComfyUI reports.

Every input with its type, default and range comes from /object_info, so the documentation cannot drift
from the nodes. Same sources as make_workflows.py:

    python scripts/make_node_reference.py --comfy ~/comfy/ComfyUI
    python scripts/make_node_reference.py --server http://127.0.0.1:8188
    python scripts/make_node_reference.py --object-info object_info.json

Replaces the text between the markers ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "nodes.md"
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"
ORDER = ("OTCacheCalibrate", "OTCacheAnchorSearch", "OTCacheApply", "OTCacheSaveSchedule", "OTCacheLoadSchedule")

sys.path.insert(0, str(ROOT / "scripts"))
from workflow_graph import _object_info, _spec_inputs  # noqa: E402


def _fmt_num(x) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, int) and x >= 2**31 - 1:
        return "2^64-1" if x >= 2**63 else "2^31-1"
    return str(x)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def describe_input(name: str, kind, opts: dict, optional: bool) -> tuple[str, str, str, str]:
    """(type, default, range or options, tooltip)."""
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options", [])
        shown = [o for o in options if not str(o).startswith("preset:")]
        presets = len(options) - len(shown)
        text = ", ".join(f"`{o}`" for o in shown[:12]) + (" …" if len(shown) > 12 else "")
        if presets:
            text += (", " if text else "") + f"{presets} `preset:` entries"
        default = opts.get("default", options[0] if options else "")
        return "choice", f"`{default}`" if default != "" else "—", text or "—", opts.get("tooltip", "")
    if kind in ("INT", "FLOAT"):
        lo, hi = opts.get("min"), opts.get("max")
        rng = f"{_fmt_num(lo) if lo is not None else '−∞'} … {_fmt_num(hi) if hi is not None else '∞'}"
        step = opts.get("step")
        if step is not None and (kind == "FLOAT" or step != 1):
            rng += f" (step {_fmt_num(opts['step'])})"
        return kind.lower(), f"`{_fmt_num(opts.get('default', 0))}`", rng, opts.get("tooltip", "")
    if kind == "BOOLEAN":
        return "boolean", f"`{str(opts.get('default', False)).lower()}`", "on / off", opts.get("tooltip", "")
    if kind == "STRING":
        d = opts.get("default", "")
        return "text", f"`{d}`" if d else "(empty)", "—", opts.get("tooltip", "")
    return f"`{kind}` link", "—" if not optional else "(optional)", "—", opts.get("tooltip", "")


def node_reference(info: dict) -> str:
    out = []
    for node_id in ORDER:
        if node_id not in info:
            raise SystemExit(f"{node_id} is not registered in this ComfyUI")
        spec = info[node_id]
        out.append(f"#### {spec.get('display_name') or node_id} (`{node_id}`)\n")
        if spec.get("description"):
            out.append(_cell(spec["description"]) + "\n")
        out.append("| input | type | default | range / options | what it does |")
        out.append("| --- | --- | --- | --- | --- |")
        for name, kind, opts, optional in _spec_inputs(spec):
            t, d, r, tip = describe_input(name, kind, opts, optional)
            label = f"`{name}`" + (" (optional)" if optional else "")
            out.append(f"| {label} | {t} | {d} | {_cell(r)} | {_cell(tip)} |")
        outputs = spec.get("output") or []
        names = spec.get("output_name") or outputs
        tips = spec.get("output_tooltips") or [None] * len(outputs)
        shown = ", ".join(f"`{n}` ({t})" + (f": {_cell(tip).rstrip('.')}" if tip else "") for n, t, tip in zip(names, outputs, tips))
        out.append(f"\nOutputs: {shown or 'none'}.\n")
    return "\n".join(out).strip() + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--server")
    src.add_argument("--comfy")
    src.add_argument("--object-info")
    args = ap.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no {START} ... {END} markers")
    ref = node_reference(_object_info(args))
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{ref}{END}", text, flags=re.S)
    DOC.write_text(new, encoding="utf-8")
    print(f"node reference written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
