// tuneforge dashboard: a few lines of vanilla JS, no library (everything ships in the package, nothing from a CDN).
// Curves are drawn as SVG polylines: three line charts do not need a charting library.
"use strict";
const tuneforge = (() => {
  const fmt = (v, digits = 3) => (v === null || v === undefined) ? "" : (typeof v === "number" ? +v.toFixed(digits) : v);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const ago = (t) => { if (!t) return ""; const s = Date.now() / 1000 - t; return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 129600 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`; };

  // ---- runs list: sortable, filterable, replaced by each server-sent "runs" event
  function runsPage(initial) {
    let runs = initial, sortKey = "updated", desc = true;
    const table = document.getElementById("runs"), body = table.tBodies[0];
    const filter = document.getElementById("run-filter"), state = document.getElementById("state-filter");
    const row = (r) => `<tr data-name="${esc(r.name)}"><td><a href="/runs/${encodeURIComponent(r.name)}">${esc(r.name)}</a></td>`
      + `<td><span class="state ${esc(r.state)}">${esc(r.state)}</span>${r.encrypted ? ' <span class="state encrypted" title="encrypted at rest: rows and weights need the key">encrypted</span>' : ""}${r.error ? `<div class="error">${esc(r.error)}</div>` : ""}</td>`
      + `<td>${esc(r.objective)}</td><td>${esc(r.method)}</td><td>${esc(r.model)}</td><td class="num">${esc(r.rows)}</td>`
      + `<td class="num">${r.best_metric ? esc(r.best_metric) + " " + fmt(r.best_value) : ""}</td>`
      + `<td class="num">${r.wall_seconds == null ? "" : Math.round(r.wall_seconds) + " s"}</td><td class="num">${ago(r.updated)}</td></tr>`;
    function render() {
      const q = filter.value.toLowerCase(), s = state.value;
      const shown = runs.filter((r) => (!s || r.state === s)
        && (!q || [r.name, r.model, r.method, r.objective, r.state].join(" ").toLowerCase().includes(q)));
      shown.sort((a, b) => { const x = a[sortKey], y = b[sortKey]; const c = x == null ? 1 : y == null ? -1 : x < y ? -1 : x > y ? 1 : 0; return desc ? -c : c; });
      body.innerHTML = shown.map(row).join("") || `<tr class="empty"><td colspan="9">No runs match.</td></tr>`;
      for (const th of table.tHead.rows[0].cells) th.className = th.dataset.key === sortKey ? (desc ? "desc" : "asc") : "";
    }
    for (const th of table.tHead.rows[0].cells) th.addEventListener("click", () => { desc = th.dataset.key === sortKey ? !desc : false; sortKey = th.dataset.key; render(); });
    filter.addEventListener("input", render); state.addEventListener("change", render);
    const source = new EventSource("/api/runs/events");
    source.addEventListener("runs", (e) => { runs = JSON.parse(e.data); render(); });
    const live = document.getElementById("live");
    source.onopen = () => { live.textContent = "live"; };
    source.onerror = () => { live.textContent = "reconnecting…"; }; // EventSource retries by itself
    render();
  }

  // ---- one run: curves that grow as metrics.jsonl grows
  function chart(svg, series) {
    const W = 400, H = 200, L = 46, B = 18, pts = series.flatMap((s) => s.points);
    if (!pts.length) { svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text>`; return; }
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 += Math.abs(y1) * 0.05 || 1; y0 -= Math.abs(y0) * 0.05 || 1; }
    const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - 6), Y = (y) => 6 + (y1 - y) / (y1 - y0) * (H - B - 6);
    const label = (v) => Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(1) : +v.toPrecision(3);
    svg.innerHTML = `<line class="axis" x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}"/><line class="axis" x1="${L}" y1="0" x2="${L}" y2="${H - B}"/>`
      + `<text x="${L - 3}" y="12" text-anchor="end">${label(y1)}</text><text x="${L - 3}" y="${H - B}" text-anchor="end">${label(y0)}</text>`
      + `<text x="${L}" y="${H - 4}">${x0}</text><text x="${W - 4}" y="${H - 4}" text-anchor="end">step ${x1}</text>`
      + series.filter((s) => s.points.length).map((s) => `<polyline class="${s.cls}"${s.color ? ` style="stroke:${s.color}"` : ""} data-points="${s.points.length}" points="${s.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ")}"/>`).join("");
  }

  function runPage(name, maxSteps) {
    const data = {loss: [], eval_loss: [], learning_rate: [], tokens_per_second: []};
    const seen = []; // [arrival time, step] to estimate the time left while the page watches
    const set = (id, v) => { document.getElementById(id).textContent = v; };
    function draw() {
      chart(document.getElementById("chart-loss"), [{cls: "train", points: data.loss}, {cls: "eval", points: data.eval_loss}]);
      chart(document.getElementById("chart-lr"), [{cls: "train", points: data.learning_rate}]);
      chart(document.getElementById("chart-tps"), [{cls: "train", points: data.tokens_per_second}]);
    }
    const source = new EventSource(`/api/runs/${encodeURIComponent(name)}/metrics`);
    source.addEventListener("metrics", (e) => {
      let step = null;
      for (const r of JSON.parse(e.data)) {
        for (const key of Object.keys(data)) if (typeof r[key] === "number") data[key].push([r.step, r[key]]);
        step = r.step;
        if (typeof r.loss === "number") set("last-loss", fmt(r.loss, 4));
        if (typeof r.learning_rate === "number") set("last-lr", r.learning_rate.toExponential(2));
        if (typeof r.tokens_per_second === "number") set("last-tps", Math.round(r.tokens_per_second));
      }
      if (step !== null) {
        set("step", step); seen.push([Date.now() / 1000, step]);
        const [t0, s0] = seen[0];
        if (maxSteps && seen.length > 1 && step > s0) set("eta", `${Math.round((maxSteps - step) * (Date.now() / 1000 - t0) / (step - s0))} s`);
      }
      draw();
    });
    source.addEventListener("eval", (e) => { // the final evaluation's progress (eval/progress.json)
      const p = JSON.parse(e.data), line = document.getElementById("eval-progress");
      const finished = p.total > 0 && p.done >= p.total;
      const eta = p.done > 0 && !finished ? ` · ETA ${Math.round(p.elapsed_s * (p.total - p.done) / p.done)} s` : "";
      line.hidden = false; line.dataset.done = p.done; line.dataset.total = p.total;
      line.textContent = finished ? `evaluated: ${p.done} / ${p.total} examples in ${Math.round(p.elapsed_s)} s`
        : `evaluating: ${p.done} / ${p.total} examples · ${p.phase}${eta}`;
      if (p.models > 1) line.textContent += ` (${p.examples} examples × ${p.models} models)`;
    });
    source.addEventListener("end", (e) => {
      source.close(); // the run is not training: no more lines will come (EventSource would reconnect forever)
      const s = JSON.parse(e.data).state, badge = document.getElementById("run-state");
      badge.textContent = s; badge.className = `state ${s}`; set("eta", "–");
      const line = document.getElementById("eval-progress"); // an evaluation the run's end cut short
      if (!line.hidden && line.dataset.done !== line.dataset.total) line.textContent = `evaluation ended at ${line.dataset.done} / ${line.dataset.total} examples (run ${s})`;
    });
    draw();
  }

  // ---- exports: while one runs, look every second and reload the page when any export changes state
  function watchExports(name) {
    const states = () => [...document.querySelectorAll("#exports tr[data-kind]")].map((r) => `${r.dataset.kind}:${r.dataset.state}`).sort().join();
    if (!document.querySelector('#exports tr[data-state="running"]')) return;
    const shown = states();
    const timer = setInterval(async () => {
      const response = await fetch(`/api/runs/${encodeURIComponent(name)}/exports`);
      if (!response.ok) return;
      const now = (await response.json()).filter((j) => j.state !== "none").map((j) => `${j.kind}:${j.state}`).sort().join();
      if (now !== shown) { clearInterval(timer); location.reload(); } // (assigning the same URL + #export would only scroll)
    }, 1000);
  }

  // ---- predictions: changing a select applies the filter at once
  function predictionsPage() {
    const form = document.getElementById("filters");
    for (const id of ["kind", "label"]) document.getElementById(id).addEventListener("change", () => form.submit());
  }

  // ---- playground: the same prompt to two models, both answers streamed at once.
  // fetch + a streamed body rather than EventSource: the prompt goes in a POST body, never in a URL.
  async function streamAnswer(side, body) {
    const out = document.getElementById(`answer-${side}`), status = document.getElementById(`status-${side}`);
    out.textContent = ""; status.textContent = "loading the model…";
    const response = await fetch("/api/playground", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    if (!response.ok) { status.textContent = `error ${response.status}: ${await response.text()}`; return; }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const event = (block.match(/^event: (.*)$/m) || [])[1], data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "null");
        if (event === "delta") { out.textContent += data.text; status.textContent = "generating…"; }
        else if (event === "done") status.textContent = `done: ${data.tokens} tokens (${data.finish_reason})`;
        else if (event === "error") status.textContent = `error: ${data.message}`;
      }
    }
  }

  function playgroundPage() {
    const form = document.getElementById("playground");
    if (!form) return;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const num = (id) => document.getElementById(id).value === "" ? null : Number(document.getElementById(id).value);
      const settings = {prompt: document.getElementById("prompt").value, max_tokens: num("max_tokens"),
        temperature: num("temperature"), top_p: num("top_p"), seed: num("seed")};
      for (const side of ["a", "b"]) {
        const [run, which] = document.getElementById(`model-${side}`).value.split("|");
        streamAnswer(side, {...settings, run, side: which});
      }
    });
  }

  // ---- launch: bring the first line with a problem into view
  function launchPage() {
    const bad = document.querySelector("#annotated tr.bad");
    if (bad) bad.scrollIntoView({block: "center"});
    const button = document.getElementById("upload"), use = document.getElementById("use-upload");
    const result = document.getElementById("upload-result");
    // The file is the request body (no multipart form): the server counts bytes as they arrive.
    button.addEventListener("click", async () => {
      const file = document.getElementById("data-file").files[0];
      if (!file) { result.innerHTML = `<p class="error">choose a file first</p>`; return; }
      result.innerHTML = `<p class="muted">uploading ${esc(file.name)}…</p>`; use.hidden = true;
      const response = await fetch(`/launch/upload?filename=${encodeURIComponent(file.name)}`, {method: "POST", body: file});
      const r = await response.json().catch(() => ({ok: false, problem: `error ${response.status}`}));
      if (!r.ok) { result.innerHTML = `<p class="error" id="upload-problem">${esc(r.problem)}</p>`; return; }
      result.innerHTML = `<p class="ok" id="upload-ok">${esc(r.name)}: ${r.rows} rows, format ${esc(r.format)}, stored as <code>${esc(r.path)}</code></p>`;
      document.getElementById("upload-name").value = r.stored; use.hidden = false;
    });
    use.addEventListener("submit", () => { document.getElementById("use-config").value = document.getElementById("config").value; });
  }

  // ---- compare: every run's curve overlaid, one colour per run (the table's swatches say which)
  const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bc4c00", "#1b7c83", "#656d76"];
  function comparePage(runs) { // [[name, {loss: [[step, value]...], eval_loss: [...]}], ...] in the table's order
    for (const swatch of document.querySelectorAll(".swatch")) swatch.style.background = PALETTE[swatch.dataset.run % PALETTE.length];
    for (const [id, key] of [["compare-loss", "loss"], ["compare-eval", "eval_loss"]]) {
      const svg = document.getElementById(id);
      if (svg) chart(svg, runs.map(([, curves], i) => ({cls: "train", color: PALETTE[i % PALETTE.length], points: curves[key]})));
    }
  }

  return {runsPage, runPage, watchExports, predictionsPage, playgroundPage, launchPage, comparePage, chart};
})();
