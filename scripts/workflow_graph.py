"""The workflow graph the example workflows are built with: nodes and links as the ComfyUI frontend saves
them, laid out from a server's node definitions (/object_info), so types, sockets and widget order are
right by construction. ``scripts/make_workflows.py`` builds the pack's workflows with it.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")
TITLE_H = 30
SLOT_H = 22
WIDGET_H = 24
# Extra height of our nodes: the schedule plot (web/otcache.js) is a DOM widget below the inputs.
PLOT_H = {"OTCacheApply": 170, "OTCacheCalibrate": 120, "OTCacheAnchorSearch": 120, "OTCacheLoadSchedule": 120}


def _spec_inputs(spec: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) of a node's inputs in the order the frontend creates them."""
    inputs = spec.get("input", {})
    order = spec.get("input_order") or {g: list(inputs.get(g, {})) for g in ("required", "optional")}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            entry = inputs.get(group, {}).get(name)
            if entry is None:
                continue
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, kind, opts, group == "optional"))
    return out


def _is_widget(kind: Any, opts: dict) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _default(name: str, kind: Any, opts: dict) -> Any:
    if isinstance(kind, list):
        return opts.get("default", kind[0] if kind else "")
    if kind == "COMBO":
        options = opts.get("options") or []
        return opts.get("default", options[0] if options else "")
    if "default" in opts:
        return opts["default"]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _has_control(name: str, opts: dict) -> bool:
    # The frontend adds a "control after generate" widget (one more value) to seeds and flagged INTs.
    flag = opts.get("control_after_generate")
    return bool(flag) if flag is not None else name in SEED_NAMES


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    spec: dict | None
    widgets: dict = field(default_factory=dict)
    title: str | None = None
    size: tuple[float, float] | None = None
    color: str | None = None
    bgcolor: str | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def output_slot(self, ref: str | int) -> int:
        if isinstance(ref, int):
            return ref
        names = [o["name"] for o in self.outputs]
        types = [o["type"] for o in self.outputs]
        if ref in names:
            return names.index(ref)
        if types.count(ref) == 1:
            return types.index(ref)
        raise KeyError(f"{self.type} has no output {ref!r} (outputs: {names})")

    def input_slot(self, name: str) -> int:
        for i, inp in enumerate(self.inputs):
            if inp["name"] == name:
                return i
        raise KeyError(f"{self.type} has no linkable input {name!r} (inputs: {[i['name'] for i in self.inputs]})")


class Workflow:
    def __init__(self, info: dict):
        self.info = info
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    # --- nodes -----------------------------------------------------------------------------------
    def add(self, type_: str, pos: tuple[float, float], title: str | None = None, node_width: float | None = None,
            **widgets: Any) -> Node:
        if type_ not in self.info:
            raise SystemExit(f"node type {type_!r} is not known to this ComfyUI (is the pack installed and up to date?)")
        spec = self.info[type_]
        node = Node(len(self.nodes) + 1, type_, pos, spec, title=title)
        values: list = []
        known = set()
        for name, kind, opts, optional in _spec_inputs(spec):
            if _is_widget(kind, opts):
                known.add(name)
                values.append(widgets.get(name, _default(name, kind, opts)))
                if kind == "INT" and _has_control(name, opts):
                    values.append(widgets.get(f"{name}_control", "fixed"))
            else:
                node.inputs.append({"name": name, "type": kind if isinstance(kind, str) else "COMBO",
                                    "link": None, **({"shape": 7} if optional else {})})
        unknown = set(widgets) - known - {f"{n}_control" for n in known}
        if unknown:
            raise SystemExit(f"{type_}: no widget(s) {sorted(unknown)}; it has {sorted(known)}")
        node.widgets = {"values": values}
        names = spec.get("output_name") or spec.get("output") or []
        for i, t in enumerate(spec.get("output") or []):
            node.outputs.append({"name": names[i] if i < len(names) else t, "type": t, "links": [],
                                 "slot_index": i})
        n_widgets = len(values)
        rows = max(len(node.inputs), len(node.outputs))
        h = TITLE_H // 2 + rows * SLOT_H + n_widgets * WIDGET_H + PLOT_H.get(type_, 0) + 10
        node.size = (node_width or (360 if type_.startswith("OTCache") else 320), h)
        if type_.startswith("OTCache"):
            node.color, node.bgcolor = "#1d3a4a", "#16303d"
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 260),
             title: str = "Read me") -> Node:
        node = Node(len(self.nodes) + 1, "Note", pos, None, title=title, size=size, color="#432", bgcolor="#653")
        node.widgets = {"values": [text]}
        self.nodes.append(node)
        return node

    def link(self, src: Node, out: str | int, dst: Node, inp: str) -> None:
        o = src.output_slot(out)
        i = dst.input_slot(inp)
        otype, itype = src.outputs[o]["type"], dst.inputs[i]["type"]
        if otype != itype and "*" not in (otype, itype) and otype not in itype.split(","):
            raise SystemExit(f"cannot link {src.type}.{src.outputs[o]['name']} ({otype}) to {dst.type}.{inp} ({itype})")
        if dst.inputs[i]["link"] is not None:
            raise SystemExit(f"{dst.type}.{inp} is already linked")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, o, dst.id, i, otype])
        src.outputs[o]["links"].append(link_id)
        dst.inputs[i]["link"] = link_id

    def wire(self, dst: Node, sources: dict[str, tuple[Node, str | int]], required_only: bool = False) -> None:
        """Link every socket input of ``dst`` from ``sources`` (keyed by input name, else by type)."""
        spec_inputs = {name: optional for name, *_rest, optional in _spec_inputs(dst.spec)}
        for inp in dst.inputs:
            if inp["link"] is not None:
                continue
            # by name first (a name mapped to None stays unconnected), else by type
            src = sources[inp["name"]] if inp["name"] in sources else sources.get(inp["type"])
            if src is None:
                if not spec_inputs.get(inp["name"], False):
                    raise SystemExit(f"{dst.type}: nothing to connect to required input {inp['name']!r} ({inp['type']})")
                continue
            if required_only and spec_inputs.get(inp["name"], False):
                continue
            self.link(src[0], src[1], dst, inp["name"])

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e") -> None:
        x0 = min(n.pos[0] for n in nodes) - 20
        y0 = min(n.pos[1] for n in nodes) - 60
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + 20
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + 20
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 22, "flags": {}})

    # --- output ------------------------------------------------------------------------------------
    def to_json(self, name: str = "otcache-workflow") -> dict:
        order = self._order()
        nodes = []
        for n in self.nodes:
            d: dict[str, Any] = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size),
                                 "flags": {}, "order": order[n.id], "mode": 0}
            if n.inputs:
                d["inputs"] = [dict(i) for i in n.inputs]
            d["outputs"] = [dict(o) for o in n.outputs]
            d["properties"] = {} if n.type == "Note" else {"Node name for S&R": n.type}
            d["widgets_values"] = list(n.widgets["values"])
            if n.title:
                d["title"] = n.title
            if n.color:
                d["color"], d["bgcolor"] = n.color, n.bgcolor
            nodes.append(d)
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-otcache/{name}")), "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": nodes, "links": [list(l) for l in self.links], "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.65, "offset": [60, 80]}}, "version": 0.4}

    def _order(self) -> dict[int, int]:
        deps = {n.id: set() for n in self.nodes}
        for _lid, src, _o, dst, _i, _t in self.links:
            deps[dst].add(src)
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order


# ----------------------------------------------------------------------------------------------- pieces

def _typed_output(node: Node, type_: str):
    for i, o in enumerate(node.outputs):
        if o["type"] == type_:
            return (node, i)
    return None


def _schedule_output(node: Node) -> int:
    for i, o in enumerate(node.outputs):
        if o["type"] == "OTCACHE_SCHEDULE":
            return i
    raise SystemExit(f"{node.type} has no OTCACHE_SCHEDULE output")


def _has_widget(info: dict, type_: str, name: str) -> bool:
    return any(n == name and _is_widget(k, o) for n, k, o, _ in _spec_inputs(info[type_]))


def _matching_widgets(info: dict, type_: str, values: dict) -> dict:
    """The sampler settings the node has widgets for (steps, cfg, sampler_name, scheduler, seed...)."""
    if type_ not in info:
        raise SystemExit(f"node type {type_!r} is not known to this ComfyUI (is the pack installed?)")
    out = {}
    for name, kind, opts, _ in _spec_inputs(info[type_]):
        if name in values and _is_widget(kind, opts):
            options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
            if options is None or values[name] in options:
                out[name] = values[name]
    return out


def dumps(wf: dict) -> str:
    return json.dumps(wf, indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------- CLI

def _object_info(args) -> dict:
    if args.object_info:
        return json.loads(Path(args.object_info).read_text())
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=120) as r:
            return json.loads(r.read())
    sys.path.insert(0, str(ROOT / "tests" / "host"))
    import comfy_server  # the test harness: a temporary base directory, nothing written into the checkout

    base = Path(tempfile.mkdtemp(prefix="otcache-wf-"))
    server = comfy_server.start_server(Path(args.comfy).expanduser(), base)
    try:
        return server.get("/object_info")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- the end of every workflow: sample, decode, save -----------------------------------

def _sample_and_decode(wf: Workflow, x: float, y: float, model, positive: Node, negative: Node, latent: Node,
                       vae: Node, sampler: dict, decoder: str = "VAEDecode", **decode: Any) -> Node:
    """KSampler on the cached model, then the VAE decode (returned, for the save node)."""
    ks = wf.add("KSampler", (x, y), denoise=1.0, **sampler)
    wf.wire(ks, {"model": model, "positive": (positive, 0), "negative": (negative, 0), "latent_image": (latent, 0)})
    dec = wf.add(decoder, (x + 380, y), **decode)
    wf.wire(dec, {"samples": (ks, 0), "vae": (vae, 0)})
    return dec


def _save_image(wf: Workflow, dec: Node, pos, prefix: str) -> Node:
    save = wf.add("SaveImage", pos, filename_prefix=prefix, node_width=420)
    wf.link(dec, "IMAGE", save, "images")
    return save


def _save_video(wf: Workflow, images, pos, prefix: str, fps: float) -> Node:
    node = wf.add("SaveAnimatedWEBP", pos, filename_prefix=prefix, fps=fps, lossless=False, quality=90,
                  method="default")
    wf.link(images[0], images[1], node, "images")
    return node
