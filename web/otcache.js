// OTCache frontend extension: a plot of the caching schedule on the nodes that make or use schedules.
//
// - OTCache Apply: one row per schedule (reference, anchor, the interpolated one the run uses), computed vs
//   reused steps, the sigma curve when known, K/N and the predicted speed-up. It follows the budget widget
//   live, before the graph runs: every change asks the pack's route POST /otcache/preview (the schedule math
//   is Python's; this file only draws) with the schedules last seen on the connected inputs.
// - Nodes with an OTCACHE_SCHEDULE output (Calibrate, Anchor Search, Load Schedule, ...): their schedule.
//
// Data arrives after execution through the node's UI output (key "otcache_schedule"): per-instance
// onExecuted and the extension hook onNodeOutputsUpdated (newer frontends). What a plot needs to be redrawn
// after a reload is kept in node.properties.otcache_plot (saved with the workflow). The plot is a DOM widget
// (works in the LiteGraph canvas and in the Vue node renderer); it is never serialised or sent in a prompt.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { draw } from "./otcache_plot.js";

const EXT_NAME = "OTCache.SchedulePlot";
const SCHEDULE_TYPE = "OTCACHE_SCHEDULE";
const UI_KEY = "otcache_schedule";
const APPLY_CLASS = "OTCacheApply";
const LOAD_CLASS = "OTCacheLoadSchedule";
const PLOT_WIDGET = "otcache_plot";
const PROP = "otcache_plot";
// OTCache Apply's budget widgets: budget_mode chooses which of speedup (N/K) and compute_steps (K) counts.
const BUDGET_WIDGETS = ["budget_mode", "speedup", "compute_steps"];
const SCHEDULE_INPUTS = ["reference", "anchor"];
const DEBOUNCE_MS = 60;

// ------------------------------------------------------------------------------------------ node roles
const isApply = (node) => node?.comfyClass === APPLY_CLASS || node?.type === APPLY_CLASS;
const isSource = (node) => !!node?.outputs?.some((o) => o?.type === SCHEDULE_TYPE);
const isLoad = (node) => node?.comfyClass === LOAD_CLASS || node?.type === LOAD_CLASS;

function getLink(graph, id) {
  if (id == null || !graph) return null;
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

/** The node feeding input `name` of `node`, through Reroute nodes; null when nothing is connected. */
function upstreamNode(node, name) {
  const graph = node.graph;
  let input = node.inputs?.find((i) => i.name === name);
  let origin = null;
  for (let hops = 0; input && input.link != null && hops < 32; hops++) {
    const link = getLink(graph, input.link);
    origin = link ? graph.getNodeById(link.origin_id) : null;
    if (!origin || origin.type !== "Reroute") return origin;
    input = origin.inputs?.[0];
    origin = null;
  }
  return origin;
}

function downstreamApplyNodes(node) {
  const out = [];
  const seen = new Set();
  const visit = (n, depth) => {
    for (const o of n.outputs || []) {
      for (const id of o.links || []) {
        const link = getLink(n.graph, id);
        const target = link && n.graph.getNodeById(link.target_id);
        if (!target || seen.has(target.id)) continue;
        seen.add(target.id);
        if (isApply(target)) out.push(target);
        else if (target.type === "Reroute" && depth < 32) visit(target, depth + 1);
      }
    }
  };
  visit(node, 0);
  return out;
}

function nameWidget(node) {
  return node.widgets?.find((w) => w.type === "combo" && typeof w.value === "string");
}

function budgetWidgets(node) {
  return BUDGET_WIDGETS.map((name) => node.widgets?.find((x) => x.name === name)).filter(Boolean);
}

function widgetValue(node, name) {
  return node.widgets?.find((x) => x.name === name)?.value;
}

/**
 * What the preview route needs for one schedule input: a schedule object seen in an executed UI output,
 * or a schedule name (Load Schedule's dropdown: a preset or a file in models/otcache, known before any run).
 * Returns {linked: bool, value: object | string | null}.
 */
function scheduleForInput(node, name) {
  const input = node.inputs?.find((i) => i.name === name);
  if (!input || input.link == null) return { linked: false, value: null };
  const origin = upstreamNode(node, name);
  if (origin && isLoad(origin)) {
    const w = nameWidget(origin);
    if (w?.value) return { linked: true, value: w.value };
  }
  const seen = origin?.properties?.[PROP]?.schedule;
  if (seen) return { linked: true, value: seen };
  const own = node.properties?.[PROP]?.inputs?.[name];
  return { linked: true, value: own ?? null };
}

// ------------------------------------------------------------------------------------------ the plot widget
class Plot {
  constructor(node, role) {
    this.node = node;
    this.role = role; // "apply" | "source"
    this.state = { status: "empty", payload: null, message: "" };
    this.seq = 0;
    this.draws = 0;
    this.executed = 0; // UI outputs received from runs of this node
    this.summary = null;
    this.timer = null;
    this.lastJson = "";

    const el = document.createElement("div");
    el.className = "otcache-plot";
    el.style.cssText = "width:100%;height:100%;min-height:0;box-sizing:border-box;padding:0;overflow:hidden;";
    const canvas = document.createElement("canvas");
    canvas.style.cssText = "display:block;width:100%;height:100%;";
    el.appendChild(canvas);
    this.element = el;
    this.canvas = canvas;

    const minH = role === "apply" ? 150 : 104;
    this.widget = node.addDOMWidget(PLOT_WIDGET, "otcache-plot", el, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => minH,
      getMaxHeight: () => 420,
      getValue: () => undefined,
      setValue: () => {},
    });
    this.widget.serialize = false; // not in widgets_values (the options flag keeps it out of the prompt)
    this.widget.otcache = this;

    if (typeof ResizeObserver !== "undefined") {
      this.observer = new ResizeObserver(() => this.redraw());
      this.observer.observe(el);
    }
    const onRemoved = node.onRemoved;
    node.onRemoved = function () {
      this.__otcachePlot?.observer?.disconnect();
      return onRemoved?.apply(this, arguments);
    };
  }

  set(status, payload = this.state.payload, message = "") {
    this.state = { status, payload, message };
    this.redraw();
  }

  redraw() {
    try {
      this.summary = draw(this.canvas, this.state);
      this.draws += 1;
      this.canvas.dataset.status = this.state.status;
      this.canvas.dataset.budget = this.state.payload?.budget ?? "";
      this.canvas.dataset.numSteps = this.state.payload?.num_steps ?? "";
    } catch (e) {
      console.error("[OTCache] plot drawing failed", e);
    }
    this.node.setDirtyCanvas?.(true, false);
  }

  /** A payload from an executed node (UI output) or restored from the workflow. */
  showPayload(payload, { persist = true, executed = false } = {}) {
    const json = JSON.stringify(payload);
    if (executed) {
      // What the run used wins over any preview still pending or in flight.
      clearTimeout(this.timer);
      this.seq += 1;
    }
    if (persist) this.node.properties[PROP] = payload;
    if (json === this.lastJson && this.state.status === "ready") return;
    this.lastJson = json;
    this.set("ready", this.role === "source" ? relabel(this.node, payload) : payload);
  }

  /** Ask the server for the plot of the current inputs and budget (debounced). */
  refresh() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fetchPreview(), DEBOUNCE_MS);
  }

  requestBody() {
    const node = this.node;
    if (this.role === "source") {
      if (!isLoad(node)) return { body: null, linked: true };
      const name = nameWidget(node)?.value;
      return { body: name ? { reference: name } : null, linked: !!name };
    }
    const got = {};
    let linked = false;
    for (const name of SCHEDULE_INPUTS) {
      const s = scheduleForInput(node, name);
      linked = linked || s.linked;
      if (s.value != null) got[name] = s.value;
    }
    if (!Object.keys(got).length) return { body: null, linked };
    const mode = widgetValue(node, "budget_mode");
    const speedup = Number(widgetValue(node, "speedup"));
    const steps = Number(widgetValue(node, "compute_steps"));
    if (typeof mode === "string") got.mode = mode;
    if (Number.isFinite(speedup)) got.speedup = speedup;
    if (Number.isInteger(steps) && steps >= 1) got.compute_steps = steps;
    return { body: got, linked };
  }

  async fetchPreview() {
    const { body, linked } = this.requestBody();
    if (!body) {
      if (this.role === "apply") {
        if (!linked) this.set("empty", null, "");
        else this.set("waiting", null, "Run the graph once, or pick a preset in Load Schedule, to see the schedule.");
      } else if (!this.state.payload) {
        this.set("waiting", null, "Run the graph to see this node's schedule.");
      }
      return;
    }
    const seq = ++this.seq;
    if (this.state.payload) this.set("loading");
    let res, data;
    try {
      res = await api.fetchApi("/otcache/preview", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      data = await res.json();
    } catch (e) {
      if (seq === this.seq) this.set("error", this.state.payload, `Preview unavailable: ${e?.message || e}`);
      return;
    }
    if (seq !== this.seq) return; // a newer request or an executed output won
    if (!res.ok) {
      this.set("error", this.state.payload, data?.error || `Preview failed (HTTP ${res.status})`);
      return;
    }
    this.lastJson = "";
    this.showPayload(data);
  }
}

function relabel(node, payload) {
  // A node that outputs one schedule shows that schedule, its row named after the output ("reference",
  // "anchor", "schedule"). A preview of a Load Schedule selection comes back as [input, in use]: keep the last.
  if (!payload?.rows?.length) return payload;
  if (payload.rows.length > 2 || (payload.rows.length === 2 && payload.rows[1].label !== "in use")) return payload;
  const out = node.outputs?.find((o) => o?.type === SCHEDULE_TYPE);
  const label = out?.label || out?.localized_name || out?.name || payload.rows.at(-1).label;
  return { ...payload, rows: [{ ...payload.rows.at(-1), label }] };
}

/** Turn a UI output into a plot payload; accepts the pack's payload or a bare schedule object. */
function payloadFromOutput(output) {
  const item = output?.[UI_KEY]?.[0];
  if (!item || typeof item !== "object") return null;
  if (Array.isArray(item.rows)) return item;
  if (Number.isInteger(item.num_steps) && Array.isArray(item.compute_steps)) {
    const k = item.compute_steps.length;
    return {
      version: 1, num_steps: item.num_steps, budget: k, speedup: item.num_steps / Math.max(1, k),
      compute_steps: item.compute_steps, sigmas: item.sigmas ?? null,
      rows: [{ label: item.kind || "schedule", kind: item.kind, num_steps: item.num_steps,
               compute_steps: item.compute_steps, budget: k, speedup: item.num_steps / Math.max(1, k) }],
      warnings: [], note: "", schedule: item, inputs: { reference: null, anchor: null },
    };
  }
  return null;
}

// ------------------------------------------------------------------------------------------ wiring
function plotOf(node) {
  return node?.__otcachePlot ?? null;
}

function handleOutput(node, output) {
  const plot = plotOf(node);
  const payload = payloadFromOutput(output);
  if (!plot || !payload) return;
  plot.executed += 1;
  plot.showPayload(payload, { executed: true });
  if (plot.role === "source") for (const t of downstreamApplyNodes(node)) plotOf(t)?.refresh();
}

function chain(obj, key, fn) {
  const prev = obj[key];
  obj[key] = function () {
    const r = prev?.apply(this, arguments);
    try {
      fn.apply(this, arguments);
    } catch (e) {
      console.error(`[OTCache] ${key} handler failed`, e);
    }
    return r;
  };
}

function setUp(node) {
  if (plotOf(node)) return;
  const role = isApply(node) ? "apply" : isSource(node) ? "source" : null;
  if (!role) return;
  const plot = new Plot(node, role);
  Object.defineProperty(node, "__otcachePlot", { value: plot, enumerable: false, configurable: true });
  // A new node is made big enough for the plot (a loaded one keeps its saved size).
  const min = node.computeSize?.();
  const width = role === "apply" ? 360 : 320;
  if (min && (node.size[1] < min[1] || node.size[0] < width))
    node.setSize([Math.max(node.size[0], min[0], width), Math.max(node.size[1], min[1])]);

  chain(node, "onExecuted", function (output) {
    handleOutput(this, output);
  });

  if (role === "apply") {
    for (const w of budgetWidgets(node)) chain(w, "callback", () => plot.refresh());
    chain(node, "onConnectionsChange", () => plot.refresh());
  }
  if (isLoad(node)) {
    const w = nameWidget(node);
    if (w)
      chain(w, "callback", () => {
        plot.refresh();
        for (const t of downstreamApplyNodes(node)) plotOf(t)?.refresh();
      });
  }
  // First picture: restored from the workflow, else whatever the inputs give (done once the graph is wired).
  queueMicrotask(() => restore(node));
}

function restore(node) {
  const plot = plotOf(node);
  if (!plot) return;
  const saved = node.properties?.[PROP];
  if (saved && Array.isArray(saved.rows)) plot.showPayload(saved, { persist: false });
  else plot.refresh();
  if (!saved) plot.redraw();
}

app.registerExtension({
  name: EXT_NAME,

  async nodeCreated(node) {
    setUp(node);
  },

  loadedGraphNode(node) {
    // Called after a workflow's node got its properties and links: redraw from what was saved.
    if (plotOf(node)) queueMicrotask(() => restore(node));
  },

  onNodeOutputsUpdated(nodeOutputs) {
    // Newer frontends (and 1.27 when outputs are replaced wholesale) report outputs per node locator id.
    const graph = app.graph;
    if (!graph || !nodeOutputs) return;
    for (const [id, output] of Object.entries(nodeOutputs)) {
      if (!output?.[UI_KEY]) continue;
      const node = graph.getNodeById(Number.isNaN(Number(id)) ? id : Number(id));
      if (node && plotOf(node)) handleOutput(node, output);
    }
  },
});
