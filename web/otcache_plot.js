// Drawing of the OTCache schedule plot on a <canvas>. No ComfyUI imports: it takes the plot payload that the
// pack's Python side produces (nodes/preview.py: rows of compute steps, sigmas, K/N, speed-up) and draws it.
// The schedule math lives in Python only; this file never decides which step computes.

export const COLORS = {
  background: "#15181d",
  frame: "#2b313a",
  text: "#d8dee9",
  dim: "#8a93a3",
  reused: "#262c34",
  reusedEdge: "#323a45",
  sigma: "#9ccc65",
  warn: "#f0b35a",
  error: "#ef6f6c",
  rows: { reference: "#e8a64b", anchor: "#b58cf0", interpolated: "#3fb5ea", default: "#3fb5ea" },
};

const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

/** Mask (array of booleans) of a row: true where the transformer runs. */
export function rowMask(row) {
  const n = row.num_steps | 0;
  const mask = new Array(Math.max(n, 0)).fill(false);
  for (const s of row.compute_steps || []) if (s >= 0 && s < n) mask[s] = true;
  return mask;
}

export function rowColor(row, index, count) {
  const c = COLORS.rows;
  if (c[row.label]) return c[row.label];
  return index === count - 1 ? c.interpolated : c.default;
}

function fmtSpeed(x) {
  return `${(Math.round(x * 100) / 100).toFixed(2)}×`;
}

function ellipsize(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= width) lo = mid; else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

/**
 * Geometry of the plot for a payload in a W x H box (CSS pixels). Pure: used by draw() and by tests.
 * Returns {header, sigma, rows: [{y, h}], cells: {x0, width, cell}, axis, footer}.
 */
export function layout(payload, W, H, labelW = null) {
  const pad = 8;
  const rows = payload?.rows || [];
  const n = payload?.num_steps || 1;
  labelW = labelW ?? Math.min(110, Math.max(64, Math.round(W * 0.26)));
  const header = { x: pad, y: pad, h: 16 };
  let y = header.y + header.h + 6;
  const footerH = payload?.note || (payload?.warnings || []).length ? 14 : 0;
  const axisH = 12;
  const avail = H - y - pad - axisH - footerH;
  const hasSigma = Array.isArray(payload?.sigmas) && payload.sigmas.length === n + 1;
  const sigmaH = hasSigma ? Math.max(14, Math.min(34, Math.round(avail * 0.28))) : 0;
  const sigma = hasSigma ? { y, h: sigmaH } : null;
  y += sigmaH + (hasSigma ? 5 : 0);
  const rowSpace = Math.max(0, H - y - pad - axisH - footerH - 4);
  const rowGap = 4;
  const rowH = rows.length ? Math.max(8, Math.min(34, Math.floor((rowSpace - (rows.length - 1) * rowGap) / rows.length))) : 0;
  const rowBoxes = rows.map((_, i) => ({ y: y + i * (rowH + rowGap), h: rowH }));
  y += rows.length ? rows.length * (rowH + rowGap) - rowGap : 0;
  const x0 = pad + labelW;
  const width = Math.max(10, W - x0 - pad);
  return {
    pad, labelW, header, sigma,
    rows: rowBoxes,
    cells: { x0, width, cell: width / n },
    axis: { y: y + 3, h: axisH },
    footer: footerH ? { y: y + 3 + axisH + 2, h: footerH } : null,
  };
}

/**
 * Draw the plot. state = {status: "empty" | "waiting" | "loading" | "ready" | "error", payload, message}.
 * Returns a summary of what was drawn (the widget keeps it for tests and debugging).
 */
export function draw(canvas, state) {
  const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
  const W = Math.max(50, canvas.clientWidth || canvas.width / dpr);
  const H = Math.max(40, canvas.clientHeight || canvas.height / dpr);
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = COLORS.background;
  roundRect(ctx, 0.5, 0.5, W - 1, H - 1, 6);
  ctx.fill();
  ctx.strokeStyle = COLORS.frame;
  ctx.lineWidth = 1;
  ctx.stroke();

  const payload = state?.payload;
  if (!payload || state.status === "empty" || state.status === "waiting" || (state.status === "error" && !payload)) {
    drawMessage(ctx, W, H, state);
    return { status: state?.status || "empty", rows: [] };
  }
  ctx.font = `600 12px ${FONT}`;
  const widest = Math.max(40, ...(payload.rows || []).map((r) => ctx.measureText(String(r.label)).width));
  const L = layout(payload, W, H, Math.min(Math.round(W * 0.4), Math.ceil(widest) + 34));
  const n = payload.num_steps;

  // header: K / N and the predicted speed-up of the schedule in use
  ctx.textBaseline = "middle";
  ctx.font = `600 12px ${FONT}`;
  ctx.fillStyle = COLORS.text;
  // legend first (right-aligned), so the header knows how much room it has
  ctx.font = `10px ${FONT}`;
  const cy = L.header.y + L.header.h / 2;
  const wComputed = ctx.measureText("computed").width, wReused = ctx.measureText("reused").width;
  const legendW = 11 + wComputed + 10 + 11 + wReused;
  const legendX = W - L.pad - legendW;
  const showLegend = legendX > L.pad + 150;
  if (showLegend) {
    ctx.fillStyle = COLORS.rows.interpolated;
    ctx.fillRect(legendX, cy - 4, 8, 8);
    ctx.fillStyle = COLORS.dim;
    ctx.fillText("computed", legendX + 11, cy);
    const rx = legendX + 11 + wComputed + 10;
    ctx.fillStyle = COLORS.reused;
    ctx.fillRect(rx, cy - 4, 8, 8);
    ctx.strokeStyle = COLORS.reusedEdge;
    ctx.strokeRect(rx + 0.5, cy - 3.5, 7, 7);
    ctx.fillStyle = COLORS.dim;
    ctx.fillText("reused", rx + 11, cy);
  }
  ctx.font = `600 12px ${FONT}`;
  ctx.fillStyle = COLORS.text;
  const head = `${payload.budget} of ${n} steps computed  ·  ${fmtSpeed(payload.speedup)}`;
  ctx.fillText(ellipsize(ctx, head, (showLegend ? legendX - 10 : W - L.pad) - L.pad), L.pad, cy);
  if (state.status === "loading") {
    ctx.fillStyle = COLORS.dim;
    ctx.fillText("…", W - L.pad - 6, L.header.y + L.header.h / 2);
  }

  const { x0, width, cell } = L.cells;
  // sigma curve
  if (L.sigma) {
    const sig = payload.sigmas;
    const s0 = sig[0] || 1;
    ctx.font = `10px ${FONT}`;
    ctx.fillStyle = COLORS.dim;
    ctx.fillText("σ (noise)", L.pad, L.sigma.y + L.sigma.h / 2);
    ctx.strokeStyle = COLORS.frame;
    ctx.strokeRect(x0 + 0.5, L.sigma.y + 0.5, width - 1, L.sigma.h - 1);
    ctx.beginPath();
    for (let i = 0; i <= n; i++) {
      const x = x0 + Math.min(i, n) * cell;
      const y = L.sigma.y + 2 + (1 - sig[i] / s0) * (L.sigma.h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.strokeStyle = COLORS.sigma;
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  // one row per schedule: computed vs reused steps
  const drawnRows = [];
  const gap = cell >= 4 ? 1 : 0;
  payload.rows.forEach((row, i) => {
    const box = L.rows[i];
    const color = rowColor(row, i, payload.rows.length);
    const mask = rowMask(row);
    const rc = width / Math.max(1, row.num_steps);
    const last = i === payload.rows.length - 1;
    ctx.font = `${last ? 600 : 400} ${box.h >= 20 ? 12 : 11}px ${FONT}`;
    ctx.fillStyle = last ? COLORS.text : COLORS.dim;
    const fs = box.h >= 20 ? 12 : Math.min(11, box.h);
    ctx.textBaseline = "middle";
    ctx.fillText(ellipsize(ctx, String(row.label), L.labelW - 32), L.pad, box.y + box.h / 2);
    ctx.font = `600 ${Math.max(8, fs - 1)}px ${FONT}`;
    ctx.fillStyle = color;
    ctx.textAlign = "right";
    ctx.fillText(`${row.budget}`, L.pad + L.labelW - 6, box.y + box.h / 2);
    ctx.textAlign = "left";
    for (let s = 0; s < mask.length; s++) {
      const x = x0 + s * rc;
      if (mask[s]) {
        ctx.fillStyle = color;
        ctx.fillRect(x, box.y, Math.max(1, rc - gap), box.h);
      } else {
        ctx.fillStyle = COLORS.reused;
        ctx.fillRect(x, box.y, Math.max(1, rc - gap), box.h);
      }
    }
    drawnRows.push({ label: row.label, budget: row.budget, num_steps: row.num_steps, computed: mask.filter(Boolean).length });
  });

  // step axis
  ctx.font = `9px ${FONT}`;
  ctx.fillStyle = COLORS.dim;
  ctx.textBaseline = "top";
  const ticks = n <= 10 ? [...Array(n).keys()] : [0, Math.round((n - 1) / 4), Math.round((n - 1) / 2), Math.round((3 * (n - 1)) / 4), n - 1];
  ctx.fillText("step", L.pad, L.axis.y);
  for (const t of ticks) {
    const x = x0 + (t + 0.5) * cell;
    ctx.textAlign = t === 0 ? "left" : t === n - 1 ? "right" : "center";
    ctx.fillText(String(t), t === 0 ? x0 : t === n - 1 ? x0 + width : x, L.axis.y);
  }
  ctx.textAlign = "left";

  // footer: warnings first, else the note
  if (L.footer) {
    const warns = payload.warnings || [];
    const text = state.status === "error" ? state.message : warns.length ? `⚠ ${warns[0]}` : payload.note;
    ctx.fillStyle = state.status === "error" ? COLORS.error : warns.length ? COLORS.warn : COLORS.dim;
    ctx.font = `10px ${FONT}`;
    ctx.fillText(ellipsize(ctx, text || "", W - 2 * L.pad), L.pad, L.footer.y + 1);
  } else if (state.status === "error") {
    ctx.fillStyle = COLORS.error;
    ctx.font = `10px ${FONT}`;
    ctx.fillText(ellipsize(ctx, state.message || "", W - 2 * L.pad), L.pad, H - L.pad - 10);
  }
  ctx.textBaseline = "alphabetic";
  return { status: state.status, budget: payload.budget, num_steps: n, speedup: payload.speedup, rows: drawnRows };
}

function drawMessage(ctx, W, H, state) {
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const status = state?.status || "empty";
  const title = status === "error" ? "Cannot show the schedule" : status === "waiting" ? "Schedule not known yet" : "No schedule connected yet";
  const hint = state?.message || (status === "empty"
    ? "Connect a reference and an anchor (Calibrate, Anchor Search or Load Schedule). Without them, Apply uses its built-in schedule for the model."
    : "");
  ctx.font = `11px ${FONT}`;
  const lines = wrap(ctx, hint, W - 24).slice(0, 4);
  const barY = H - 22;
  const blockH = 16 + lines.length * 14;
  const top = Math.max(8, (barY - 6 - blockH) / 2);
  ctx.font = `600 12px ${FONT}`;
  ctx.fillStyle = status === "error" ? COLORS.error : COLORS.text;
  ctx.fillText(title, W / 2, top + 8);
  ctx.font = `11px ${FONT}`;
  ctx.fillStyle = COLORS.dim;
  lines.forEach((line, i) => ctx.fillText(line, W / 2, top + 24 + i * 14));
  // a faint empty mask under the message: the plot's place
  const n = 24, x0 = 16, w = W - 32;
  for (let s = 0; s < n; s++) {
    ctx.fillStyle = COLORS.reused;
    ctx.fillRect(x0 + (s * w) / n, barY, w / n - 1, 8);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
}

function wrap(ctx, text, width) {
  const words = String(text || "").split(/\s+/).filter(Boolean);
  const lines = [];
  let line = "";
  for (const w of words) {
    const t = line ? `${line} ${w}` : w;
    if (ctx.measureText(t).width > width && line) { lines.push(line); line = w; } else line = t;
  }
  if (line) lines.push(line);
  return lines;
}
