// Drive the real ComfyUI frontend in Debian's chromium and report what the OTCache tests need, as JSON.
//
//   node run_browser.mjs PLAN.json  >  RESULT.json
//
// PLAN: {"url": "http://127.0.0.1:PORT",
//        "workflows": ["/abs/path/a.json", ...],             // UI-format workflows to load and check
//        "plot": {"workflow": "/abs/apply.json", "values": [2.0, 3.0]},   // move the budget widget
//        "run": {"workflow": "/abs/tiny.json"},              // queue it and read the plot afterwards
//        "screenshot": "/abs/out.png"}                       // the Apply node after the run
// Assertions are made by the Python test (tests/browser/test_browser.py); this script only observes.
// The browser is /usr/bin/chromium (or $CHROMIUM); playwright-core never downloads one.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TIMEOUT = Number(process.env.OTCACHE_BROWSER_TIMEOUT_MS || 120000);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage"];

async function setting(id, value) {
  const r = await fetch(`${plan.url}/settings/${id}`, { method: "POST", body: JSON.stringify(value) });
  if (!r.ok) throw new Error(`setting ${id}: HTTP ${r.status}`);
}

const result = { consoleErrors: [], pageErrors: [], workflows: {}, frontend: null };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: FLAGS,
  headless: true,
  timeout: TIMEOUT,
});
try {
  // A fresh user gets a template dialog and missing-model prompts over the canvas: switch them off.
  await setting("Comfy.TutorialCompleted", true);
  for (const id of ["Comfy.Workflow.ShowMissingModelsWarning", "Comfy.Workflow.ShowMissingNodesWarning"])
    await setting(id, false).catch(() => {});
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 }, deviceScaleFactor: 2 });
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => result.pageErrors.push(String(e?.stack || e)));
  await page.goto(plan.url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.OTCacheApply,
    null, { timeout: TIMEOUT, polling: 200 });
  // Frontend 1.49 loads a start-up template after the graph exists: wait until the node count settles.
  await page.evaluate(async () => {
    let last = -1, stable = 0;
    for (let i = 0; i < 150 && stable < 8; i++) {
      const n = window.app.graph.nodes.length;
      stable = n === last ? stable + 1 : 0;
      last = n;
      await new Promise((r) => setTimeout(r, 250));
    }
  });
  result.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);

  for (const file of plan.workflows || []) {
    const wf = JSON.parse(readFileSync(file, "utf8"));
    result.workflows[file] = await page.evaluate(checkWorkflow, wf);
  }

  if (plan.sigma) result.sigma = await page.evaluate(drawWithSigmas, plan.sigma.module);
  if (plan.plot) result.plot = await movePlot(page, JSON.parse(readFileSync(plan.plot.workflow, "utf8")), plan.plot.values);
  if (plan.run) result.run = await runWorkflow(page, JSON.parse(readFileSync(plan.run.workflow, "utf8")));
  if (plan.screenshot && result.run?.nodeId != null) result.screenshot = await shoot(page, result.run.nodeId, plan.screenshot);
} catch (e) {
  result.fatal = String(e?.stack || e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));

// ------------------------------------------------------------------------------------------ in the page
async function checkWorkflow(wf) {
  const { app, LiteGraph } = window;
  const out = { missing: [], brokenLinks: [], nodes: 0, links: 0, expectedNodes: wf.nodes.length,
    expectedLinks: (wf.links || []).length, widgetMismatch: [], prompt: null, error: null };
  try {
    await app.loadGraphData(structuredClone(wf), true, true, "otcache-test");
    const g = app.graph;
    out.nodes = g.nodes.length;
    for (const n of g.nodes) {
      // A node type the frontend does not know is "missing". (has_errors alone is also set by newer
      // frontends for loaders whose model file is absent, which is expected for the examples here.)
      if (!LiteGraph.registered_node_types[n.type]) out.missing.push(n.type);
    }
    const links = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
    out.links = links.filter(Boolean).length;
    for (const l of links) {
      if (!l) continue;
      const o = g.getNodeById(l.origin_id), t = g.getNodeById(l.target_id);
      const oslot = o?.outputs?.[l.origin_slot], tslot = t?.inputs?.[l.target_slot];
      const ok = o && t && oslot && tslot && tslot.link === l.id && (oslot.links || []).includes(l.id)
        && LiteGraph.isValidConnection(oslot.type, tslot.type);
      if (!ok) out.brokenLinks.push({ id: l.id, type: l.type, from: o?.type, to: t?.type, out: oslot?.type, in: tslot?.type });
    }
    // The frontend keeps our widget values as written (same count, same order).
    const byId = new Map(wf.nodes.map((n) => [n.id, n]));
    for (const n of g.nodes) {
      const src = byId.get(n.id);
      if (!src?.widgets_values || n.type === "Note" || n.type === "MarkdownNote") continue;
      const ser = n.serialize().widgets_values;
      if (JSON.stringify(ser) !== JSON.stringify(src.widgets_values)) out.widgetMismatch.push({ type: n.type, expected: src.widgets_values, got: ser });
    }
    const p = await app.graphToPrompt();
    out.prompt = { nodes: Object.keys(p.output).length, types: [...new Set(Object.values(p.output).map((x) => x.class_type))] };
  } catch (e) {
    out.error = String(e?.stack || e);
  }
  return out;
}

async function drawWithSigmas(modulePath) {
  // The drawing module alone, on a detached canvas: a payload with a sigma grid gets the sigma curve.
  const { draw, layout, COLORS } = await import(modulePath);
  const n = 20;
  const sigmas = Array.from({ length: n + 1 }, (_, i) => (i === n ? 0 : Math.pow(1 - i / n, 2)));
  const payload = { num_steps: n, budget: 8, speedup: 2.5, sigmas, note: "", warnings: [],
    rows: [{ label: "interpolated", num_steps: n, compute_steps: [0, 1, 2, 4, 7, 11, 15, 19], budget: 8 }] };
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position:fixed;left:0;top:0;width:360px;height:170px";
  document.body.appendChild(canvas);
  const summary = draw(canvas, { status: "ready", payload });
  const L = layout(payload, 360, 170);
  const ctx = canvas.getContext("2d");
  const dpr = canvas.width / 360;
  const hex = COLORS.sigma.replace("#", "");
  const want = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const band = ctx.getImageData(Math.round(L.cells.x0 * dpr), Math.round(L.sigma.y * dpr),
    Math.round(L.cells.width * dpr), Math.round(L.sigma.h * dpr)).data;
  let curve = 0;
  for (let i = 0; i < band.length; i += 4)
    if (Math.abs(band[i] - want[0]) < 40 && Math.abs(band[i + 1] - want[1]) < 40 && Math.abs(band[i + 2] - want[2]) < 40) curve++;
  canvas.remove();
  return { summary, hasBand: !!L.sigma, curvePixels: curve };
}

async function waitPlot(page, predicateSrc, arg) {
  return page.waitForFunction(predicateSrc, arg, { timeout: TIMEOUT, polling: 100 });
}

async function movePlot(page, wf, values) {
  await page.evaluate(async (wf) => { await window.app.loadGraphData(structuredClone(wf), true, true, "otcache-plot"); }, wf);
  const find = () => {
    const node = window.app.graph.nodes.find((n) => n.type === "OTCacheApply");
    return { node, plot: node?.widgets?.find((w) => w.name === "otcache_plot")?.otcache };
  };
  await waitPlot(page, `(${find})().plot?.state?.status === "ready"`);
  const read = async () => page.evaluate((f) => {
    const { node, plot } = eval(f)();
    const bw = node.widgets.find((w) => ["speedup", "target_speedup", "budget"].includes(w.name));
    return { widget: bw?.name, value: bw?.value, summary: plot.summary, status: plot.state.status,
      steps: plot.state.payload?.compute_steps, pixels: plot.canvas.toDataURL(), draws: plot.draws };
  }, `(${find})`);
  const states = [await read()];
  for (const v of values) {
    const before = states[states.length - 1];
    await page.evaluate(([f, v]) => {
      const { node } = eval(f)();
      const bw = node.widgets.find((w) => ["speedup", "target_speedup", "budget"].includes(w.name));
      // The path a drag or a typed value takes: setValue runs the widget callback like the UI does.
      if (typeof bw.setValue === "function") bw.setValue(v, { node, canvas: window.app.canvas, e: undefined });
      else { bw.value = v; bw.callback?.(v); }
    }, [`(${find})`, v]);
    await waitPlot(page, `(() => { const p = (${find})().plot; return p.state.status === "ready" && JSON.stringify(p.state.payload?.compute_steps) !== ${JSON.stringify(JSON.stringify(before.steps))}; })()`);
    states.push(await read());
  }
  return { states, emptyState: await page.evaluate(emptyState) };
}

async function emptyState() {
  // A fresh Apply node with nothing connected shows the "no schedule" state.
  const { app, LiteGraph } = window;
  const node = LiteGraph.createNode("OTCacheApply");
  app.graph.add(node);
  const plot = node.widgets.find((w) => w.name === "otcache_plot")?.otcache;
  for (let i = 0; i < 50 && plot && plot.state.status !== "empty"; i++) await new Promise((r) => setTimeout(r, 100));
  const out = { status: plot?.state?.status, summary: plot?.summary, size: [...node.size] };
  app.graph.remove(node);
  return out;
}

async function runWorkflow(page, wf) {
  await page.evaluate(async (wf) => { await window.app.loadGraphData(structuredClone(wf), true, true, "otcache-run"); }, wf);
  const find = `(() => { const node = window.app.graph.nodes.find((n) => n.type === "OTCacheApply"); return { node, plot: node?.widgets?.find((w) => w.name === "otcache_plot")?.otcache }; })`;
  const executedBefore = await page.evaluate((f) => eval(f)().plot.executed, find);
  await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
  await waitPlot(page, `${find}().plot.executed > ${executedBefore} && ${find}().plot.state.status === "ready"`);
  // The Apply node reports before the sampler has finished: wait until the queue is empty again.
  const idle = await page.evaluate(async (timeout) => {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      const q = await (await fetch("/api/queue")).json();
      if (q.queue_running.length === 0 && q.queue_pending.length === 0) return true;
      await new Promise((r) => setTimeout(r, 250));
    }
    return false;
  }, TIMEOUT);
  if (!idle) throw new Error("the queued workflow did not finish in time");
  return page.evaluate((f) => {
    const { node, plot } = eval(f)();
    return { nodeId: node.id, summary: plot.summary, payload: plot.state.payload, saved: node.properties.otcache_plot?.compute_steps ?? null };
  }, find);
}

async function shoot(page, nodeId, path) {
  const clip = await page.evaluate((id) => {
    const { app, LiteGraph } = window;
    const node = app.graph.getNodeById(id);
    const ds = app.canvas.ds;
    ds.scale = 1.6;
    const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
    const rect = app.canvas.canvas.getBoundingClientRect();
    ds.offset[0] = (rect.width / ds.scale - node.size[0]) / 2 - node.pos[0];
    ds.offset[1] = (rect.height / ds.scale - node.size[1]) / 2 - node.pos[1];
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
    const m = 14;
    return { x: rect.left + x - m, y: rect.top + y - m, width: node.size[0] * ds.scale + 2 * m, height: (node.size[1] + title) * ds.scale + 2 * m };
  }, nodeId);
  // Let the DOM widget follow the new transform (it is positioned on the next animation frames).
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(r)))));
  await page.screenshot({ path, clip });
  return { path, clip };
}
