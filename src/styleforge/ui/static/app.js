// styleforge web UI: plain JavaScript over the JSON API (/api/*). One render request is in flight at a time; slider
// moves made meanwhile collapse into one follow-up request for the latest values (stale events are dropped).
"use strict";
const $ = (id) => document.getElementById(id);
const S = { network: null, info: null, base: { seed: 0 }, gridSeeds: [], files: [], job: null };
window.sfLatency = [];   // ms from a slider move to its image on screen (benchmarks/ui_latency.py reads it)
window.sfRenders = 0;    // images shown so far

function showError(e) { $("msg").textContent = e ? (e.message || String(e)) : ""; }

async function errorOf(r) {
  let text = r.status + " " + r.statusText;
  try { const j = await r.json(); if (j.error) text = j.error; } catch (_) { /* not JSON */ }
  return new Error(text);
}

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) throw await errorOf(r);
  return r;
}

async function upload(path, fields) {
  const fd = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v !== null && v !== undefined) fd.append(k, v);
  const r = await fetch(path, { method: "POST", body: fd });
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

const trunc = () => parseFloat($("trunc").value);
const wSpace = () => !S.info || S.info.w_space !== false;  // baselines (G(z, c)) have none
// the class of a conditional network (the picker), else nothing
const withClass = (o) => (S.info && S.info.c_dim ? { ...o, class: parseInt($("class-pick").value, 10) } : o);

function latent() {
  if (S.base.latent) return { latent: S.base.latent };
  if (S.base.mix) return { mix: { ...S.base.mix, trunc: trunc() } };
  return withClass({ seed: S.base.seed, trunc: trunc() });
}

function edits() {
  const out = [];
  if (!wSpace()) return out;  // no W space: no sliders to apply
  const method = $("method").value, layers = $("layers").value;
  document.querySelectorAll("#factors input[type=range]").forEach((el, k) => {
    const v = parseFloat(el.value);
    if (v !== 0) out.push({ direction: `${method}:${layers}:${k}`, strength: v });
  });
  document.querySelectorAll("#directions input[type=range]").forEach((el) => {
    const v = parseFloat(el.value);
    if (v !== 0) out.push({ direction: el.dataset.id, strength: v });
  });
  return out;
}

function baseLabel() {
  const b = S.base;
  $("base-label").textContent = b.latent ? `projected photo (${b.latent})`
    : b.mix ? `seed ${b.mix.row} with layers ${b.mix.layers} of seed ${b.mix.col}` : `seed ${b.seed}`;
}

// ---- rendering: latest wins --------------------------------------------------------------------------------------
let inflight = false, pending = null;

function requestRender(t0) {
  pending = { t0: t0 === undefined ? performance.now() : t0 };
  if (!inflight) pump();
}

function showImage(url) {
  return new Promise((resolve, reject) => {
    const img = $("main-img");
    const old = img.src;
    img.onload = () => requestAnimationFrame(() => resolve());
    img.onerror = () => reject(new Error("the image did not decode"));
    img.src = url;
    if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
  });
}

async function pump() {
  if (!pending) return;
  const job = pending;
  pending = null;
  inflight = true;
  try {
    const r = await api("/api/render", { network: S.network, latent: latent(), edits: edits(),
                                         noise_mode: $("noise").value });
    await showImage(URL.createObjectURL(await r.blob()));
    window.sfRenders += 1;
    if (!pending) window.sfLatency.push(performance.now() - job.t0);
    showError(null);
  } catch (e) {
    showError(e);
  } finally {
    inflight = false;
    if (pending) pump();
  }
}

// ---- seed grid ---------------------------------------------------------------------------------------------------
async function loadGrid() {
  const start = Math.max(0, parseInt($("grid-start").value || "0", 10));
  const n = Math.min(12, S.info ? S.info.limits.max_seeds : 12);
  const seeds = Array.from({ length: n }, (_, i) => start + i);
  try {
    const j = await (await api("/api/generate", withClass({ network: S.network, seeds, trunc: trunc(),
                                                            format: "json" }))).json();
    const grid = $("grid");
    grid.innerHTML = "";
    S.gridSeeds = seeds;
    for (const im of j.images) {
      const el = document.createElement("img");
      el.src = "data:image/png;base64," + im.png;
      el.title = `seed ${im.seed}`;
      el.dataset.seed = im.seed;
      if (!S.base.latent && !S.base.mix && S.base.seed === im.seed) el.classList.add("chosen");
      el.onclick = () => { S.base = { seed: im.seed }; markChosen(); baseLabel(); requestRender(); };
      grid.appendChild(el);
    }
  } catch (e) { showError(e); }
}

function markChosen() {
  document.querySelectorAll("#grid img").forEach((el) =>
    el.classList.toggle("chosen", !S.base.latent && !S.base.mix && String(S.base.seed) === el.dataset.seed));
}

// ---- sliders -----------------------------------------------------------------------------------------------------
function slider(label, id, extra) {
  const row = document.createElement("div");
  row.className = "slider";
  row.innerHTML = `<span></span><input type="range" min="-5" max="5" step="0.1" value="0"><output>0.0</output>`;
  row.children[0].textContent = label;
  const input = row.children[1], out = row.children[2];
  input.id = id;
  Object.assign(input.dataset, extra || {});
  input.addEventListener("input", () => { out.textContent = parseFloat(input.value).toFixed(1); requestRender(); });
  return row;
}

function buildFactors() {
  const box = $("factors");
  box.innerHTML = "";
  const n = Math.min(8, S.info.factors);
  const name = $("method").value === "sefa" ? "SeFa" : "PC";
  for (let k = 0; k < n; k++) box.appendChild(slider(`${name} ${k}`, `factor-${k}`));
}

function buildDirections() {
  const box = $("directions");
  box.innerHTML = "";
  S.files.forEach((d, i) => box.appendChild(slider(d.name, `direction-${i}`, { id: d.id })));
}

function resetSliders() {
  document.querySelectorAll("input[type=range]:not(#trunc)").forEach((el) => {
    el.value = 0; el.nextElementSibling.textContent = "0.0"; });
}

// ---- network -----------------------------------------------------------------------------------------------------
async function loadNetwork(spec) {
  try {
    const q = spec ? "?network=" + encodeURIComponent(spec) : "";
    const info = await (await api("/api/info" + q)).json();
    S.info = info;
    S.network = info.network;
    $("device").textContent = "device: " + info.device;
    $("net-info").textContent = `${info.label}: ${info.resolution}px, ${info.channels === 1 ? "gray" : "RGB"}, ` +
      (info.w_space === false ? "no W space" : `${info.num_ws} latent layers`) +
      (info.c_dim ? `, ${info.c_dim} classes` : "");
    // a network without a W space (a baseline): seeds, classes and Z interpolation; the W tools are hidden
    const noW = info.w_space === false;
    $("note").textContent = noW ? info.note : "";
    $("note").hidden = !noW;
    document.querySelectorAll(".w-only").forEach((el) => { el.hidden = noW; });
    $("trunc-label").textContent = noW ? "truncation (scales z)" : "truncation";
    const classes = info.classes || [];
    $("class-pick").innerHTML = classes.map((k) => `<option value="${k}">${k}</option>`).join("");
    $("class-row").hidden = classes.length === 0;
    const pick = $("net-pick");
    if (![...pick.options].some((o) => o.value === info.network)) {
      const o = new Option(info.label, info.network);
      pick.insertBefore(o, pick.lastElementChild);
    }
    pick.value = info.network;
    $("net-path").hidden = true;
    const up = $("net-upload-label");
    $("net-upload").disabled = !info.allow_uploads;
    up.classList.toggle("disabled", !info.allow_uploads);
    up.title = info.allow_uploads ? "read by the safe reader: nothing in the file is executed"
      : "this server refuses uploads (start it with --allow-uploads)";
    $("layers").innerHTML = info.layer_presets.map((p) => `<option>${p}</option>`).join("");
    S.files = info.directions.map((d) => ({ id: d.id, name: d.name }));
    buildFactors();
    buildDirections();
    S.base = { seed: parseInt($("grid-start").value || "0", 10) };
    baseLabel();
    await loadGrid();
    requestRender();
  } catch (e) { showError(e); }
}

async function init() {
  try {
    const info = await (await api("/api/info")).json();
    const pick = $("net-pick");
    const editable = info.editable || info.bundled;
    for (const name of info.bundled) {
      pick.appendChild(new Option(name + (editable.includes(name) ? " (bundled)" : " (bundled, no W space)"), name));
    }
    pick.appendChild(new Option("path on the server…", "__path__"));
    await loadNetwork(info.network);
  } catch (e) { showError(e); }
}

// ---- events ------------------------------------------------------------------------------------------------------
$("net-pick").onchange = () => { $("net-path").hidden = $("net-pick").value !== "__path__"; };
$("net-load").onclick = () => loadNetwork($("net-pick").value === "__path__" ? $("net-path").value : $("net-pick").value);
$("net-upload").onchange = async () => {
  const f = $("net-upload").files[0];
  if (!f) return;
  try { const info = await upload("/api/networks", { file: f }); await loadNetwork(info.network); }
  catch (e) { showError(e); }
};
$("trunc").addEventListener("input", () => { $("trunc-val").textContent = trunc().toFixed(2); requestRender(); });
$("trunc").addEventListener("change", loadGrid);
$("grid-start").onchange = loadGrid;
$("class-pick").onchange = () => { loadGrid(); requestRender(); };
$("grid-prev").onclick = () => { $("grid-start").value = Math.max(0, +$("grid-start").value - 12); loadGrid(); };
$("grid-next").onclick = () => { $("grid-start").value = +$("grid-start").value + 12; loadGrid(); };
$("noise").onchange = () => requestRender();
$("method").onchange = () => { buildFactors(); requestRender(); };
$("layers").onchange = () => { resetSliders(); requestRender(); };
$("reset").onclick = () => { resetSliders(); requestRender(); };
$("mix-go").onclick = () => {
  S.base = { mix: { row: +$("mix-row").value, col: +$("mix-col").value, layers: `${$("mix-from").value}-${$("mix-to").value}` } };
  markChosen(); baseLabel(); requestRender();
};
$("dir-file").onchange = async () => {
  const f = $("dir-file").files[0];
  if (!f) return;
  try {
    const j = await upload("/api/directions", { file: f });
    for (const d of j.directions) S.files.push({ id: d.id, name: d.name });
    buildDirections();
    showError(null);
  } catch (e) { showError(e); }
};
$("download").onclick = async () => {
  const items = S.gridSeeds.map((s) => ({ latent: withClass({ seed: s, trunc: trunc() }), name: `seed${s}` }));
  items.push({ latent: latent(), edits: edits(), name: "current" });
  try {
    const r = await api("/api/download", { network: S.network, items, noise_mode: $("noise").value });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = "images.zip";
    document.body.appendChild(a); a.click(); a.remove();
  } catch (e) { showError(e); }
};

// ---- interpolation in Z between two seeds (a GIF) ---------------------------------------------------------------
$("interp-go").onclick = async () => {
  const end = (id) => withClass({ seed: parseInt($(id).value || "0", 10), trunc: trunc() });
  try {
    const r = await api("/api/interpolate", { network: S.network, from: end("interp-from"), to: end("interp-to"),
                                              steps: parseInt($("interp-steps").value || "16", 10), format: "gif" });
    const img = $("interp-img");
    const old = img.src;
    img.src = URL.createObjectURL(await r.blob());
    img.hidden = false;
    if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
    showError(null);
  } catch (e) { showError(e); }
};

// ---- photo -> align -> project -> edit ---------------------------------------------------------------------------
$("photo-go").onclick = async () => {
  const f = $("photo").files[0];
  if (!f) { showError(new Error("choose a photo first")); return; }
  $("photo-status").textContent = $("photo-align").checked ? "aligning…" : "starting…";
  try {
    const job = await upload("/api/project", { photo: f, network: S.network, align: $("photo-align").checked,
                                              steps: $("photo-steps").value });
    S.job = job.job;
    $("photo-cancel").disabled = false;
    $("photo-progress").hidden = false;
    $("photo-images").innerHTML = `<img src="/api/jobs/${job.job}/target.png" title="target">`;
    poll(job.job);
  } catch (e) { $("photo-status").textContent = ""; showError(e); }
};
$("photo-cancel").onclick = async () => {
  if (!S.job) return;
  try { await api(`/api/jobs/${S.job}/cancel`, {}); } catch (e) { showError(e); }
};

async function poll(id) {
  let j;
  try { j = await (await api(`/api/jobs/${id}`)).json(); } catch (e) { showError(e); return; }
  $("photo-progress").max = j.total;
  $("photo-progress").value = j.step;
  $("photo-status").textContent = `${j.state} ${j.step}/${j.total}` + (j.dist !== null ? `, distance ${j.dist.toFixed(4)}` : "")
    + (j.error ? `: ${j.error}` : "");
  if (j.state === "queued" || j.state === "projecting") { setTimeout(() => poll(id), 300); return; }
  $("photo-cancel").disabled = true;
  if (j.state === "done") {
    $("photo-images").innerHTML += `<img src="/api/jobs/${id}/result.png" title="projection">`;
    S.base = { latent: j.latent };
    resetSliders(); markChosen(); baseLabel(); requestRender();
  } else if (j.state === "failed") {
    showError(new Error(j.error));
  }
}

init();
