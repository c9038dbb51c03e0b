// Spool's dashboard: draws each page from the JSON API of the admin
// listener (docs/api.md, "Dashboard API"). No framework and no build step:
// this file is served as it is, from inside spoold.
//
// Every page has `render()` (first draw) and may have `refresh()` (called
// about once a second while the tab is visible). `#main[data-ready]` turns
// "true" once a page has drawn its data, for the browser tests.
"use strict";

const LIVE_MS = 1000;
// The metrics history is sampled every 5 s: charts refresh at that pace.
const CHART_MS = 5000;

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces a node's children, skipping null, undefined and false (as
// `el` does; the DOM's replaceChildren would print them).
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// The session's CSRF token, when the server has authentication on and this
// browser logged in: every POST repeats it (the session cookie itself is
// HTTP-only and never seen here).
let csrfToken = null;

// An answer of 401: the session ended or there was none; the page then
// shows the login form.
class LoggedOut extends Error {}

async function answerOf(response) {
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 401) throw new LoggedOut(body.error || "log in");
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function api(path) {
  return answerOf(await fetch(path, { headers: { Accept: "application/json" } }));
}

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  const user = localStorage.getItem("spool-user");
  if (user) headers["X-Spool-User"] = user;
  if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  return answerOf(await fetch(path, { method: "POST", headers, body: JSON.stringify(body) }));
}

function qs(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
function fmt(value) {
  if (value === null || value === undefined) return "–";
  return number.format(value);
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = value;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${number.format(n)} ${units[unit]}`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${number.format(s)} s`;
  if (s < 3600) return `${number.format(s / 60)} min`;
  if (s < 86400) return `${number.format(s / 3600)} h`;
  return `${number.format(s / 86400)} d`;
}

function when(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// A cell whose number the browser tests read back: `data-field` names it.
function cell(field, text) {
  return el("td", { "data-field": field, class: "num" }, text);
}

function table(headings, rows, attrs) {
  return el(
    "table",
    attrs || {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

function failure(error) {
  return el("p", { class: "error", role: "alert" }, String(error.message || error));
}

// Marks the page drawn, and when (milliseconds since the navigation
// started: what scripts/bench-dashboard.sh reports as the page's time).
function ready() {
  const main = document.getElementById("main");
  if (main.dataset.ready !== "true") main.dataset.readyMs = String(Math.round(performance.now()));
  main.dataset.ready = "true";
}

// Asks the user to confirm an action that changes state; resolves to true
// or false. A <dialog>, not window.confirm, so it can be styled and tested.
function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// ----------------------------------------------------------------- charts

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2"];

// A line chart of `lines` ([{label, points: [[time_ms, value]]}]) in an SVG.
function chart(title, lines, format) {
  const width = 460;
  const height = 160;
  const pad = { left: 56, right: 8, top: 8, bottom: 20 };
  const all = lines.flatMap((line) => line.points);
  const box = el("figure", { class: "chart" }, el("figcaption", {}, title));
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  box.append(svg);
  if (all.length === 0) {
    box.append(el("p", { class: "empty" }, "no data in this range"));
    return box;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const top = Math.max(...all.map((p) => p[1]), 0) || 1;
  const x = (t) => pad.left + ((t - t0) / Math.max(t1 - t0, 1)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  svg.append(svgEl("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), class: "axis" }));
  for (const [value, at] of [[top, y(top)], [top / 2, y(top / 2)]]) {
    const label = svgEl("text", { x: pad.left - 4, y: at + 4, class: "tick", "text-anchor": "end" });
    label.textContent = format(value);
    svg.append(label);
    svg.append(svgEl("line", { x1: pad.left, y1: at, x2: width - pad.right, y2: at, class: "grid" }));
  }
  for (const [time, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svgEl("text", { x: x(time), y: height - 4, class: "tick", "text-anchor": anchor });
    label.textContent = new Date(time).toTimeString().slice(0, 5);
    svg.append(label);
  }
  const legend = el("div", { class: "legend" });
  lines.forEach((line, index) => {
    const color = COLORS[index % COLORS.length];
    if (line.points.length > 0) {
      // A gap in the samples (the server was down) breaks the line.
      let d = "";
      let previous = null;
      for (const [t, v] of line.points) {
        d += `${previous !== null && t - previous > 3 * line.step ? "M" : d ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
        previous = t;
      }
      svg.append(svgEl("path", { d, stroke: color, fill: "none", "stroke-width": 1.5 }));
      const [lastT, lastV] = line.points[line.points.length - 1];
      svg.append(svgEl("circle", { cx: x(lastT).toFixed(1), cy: y(lastV).toFixed(1), r: 2.5, fill: color }));
    }
    const last = line.points.length ? line.points[line.points.length - 1][1] : null;
    legend.append(el("span", { style: `color:${color}` }, `${line.label}: ${last === null ? "–" : format(last)}`));
  });
  box.append(legend);
  return box;
}

async function readHistory(series, range) {
  const step = { "1h": "30s", "24h": "10m", "7d": "1h" }[range];
  const params = new URLSearchParams({ from: `-${range}`, step });
  for (const expr of series) params.append("series", expr);
  return api(`/api/v1/history?${params}`);
}

// The one series of result `index` (summed when it has several).
function single(answer, index, label) {
  const result = answer.results[index];
  const sum = new Map();
  for (const series of result.series) {
    for (const [t, v] of series.points) sum.set(t, (sum.get(t) || 0) + v);
  }
  const points = [...sum.entries()].sort((a, b) => a[0] - b[0]);
  return { label, points, step: answer.step_ms };
}

// ------------------------------------------------------------------ pages

const pages = {};

pages.overview = {
  range: localStorage.getItem("spool-range") || "1h",
  async render(main) {
    this.cards = el("section", { class: "cards", id: "overview-cards" });
    this.charts = el("section", { class: "charts", id: "overview-charts" });
    const picker = el(
      "div",
      { class: "range", role: "group", "aria-label": "range" },
      ["1h", "24h", "7d"].map((range) =>
        el(
          "button",
          {
            "data-range": range,
            class: range === this.range ? "active" : null,
            onclick: () => {
              this.range = range;
              localStorage.setItem("spool-range", range);
              picker.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset.range === range));
              this.drawCharts();
            },
          },
          range,
        ),
      ),
    );
    fill(main, el("h1", {}, "Overview"), this.cards, el("h2", {}, "Over time ", picker), this.charts);
    await this.refresh();
    await this.drawCharts();
    ready();
  },
  async refresh() {
    const o = await api("/api/v1/overview");
    const card = (field, label, value) =>
      el("div", { class: "card" }, el("div", { class: "value", "data-field": field }, value), el("div", { class: "label" }, label));
    const jobs = o.jobs || {};
    fill(this.cards, 
      card("topics", "topics", fmt(o.topics)),
      card("partitions", "partitions", fmt(o.partitions)),
      card("records", "records held", fmt(o.records)),
      card("size_bytes", "on disk", bytes(o.size_bytes)),
      card("consumers", "consumers", fmt(o.consumers)),
      card("queues", "queues", fmt(o.queues)),
      card("available", "jobs available", fmt(jobs.available)),
      card("running", "jobs running", fmt(jobs.running)),
      card("scheduled", "jobs scheduled", fmt(jobs.scheduled)),
      card("dead", "jobs dead", fmt(jobs.dead)),
    );
    if (Date.now() - (this.chartsAt || 0) >= CHART_MS) await this.drawCharts();
  },
  async drawCharts() {
    this.chartsAt = Date.now();
    const series = [
      "sum(rate(spool_log_appended_records_total))",
      "sum(rate(spool_log_fetched_records_total))",
      "sum(rate(spool_jobs_enqueued_total))",
      "sum(rate(spool_jobs_completed_total))",
      "sum(rate(spool_jobs_failed_total))",
      "quantile(0.5, sum(spool_job_queue_wait_seconds))",
      "quantile(0.99, sum(spool_job_queue_wait_seconds))",
      "quantile(0.5, sum(spool_job_run_seconds))",
      "quantile(0.99, sum(spool_job_run_seconds))",
      "rate(spool_rpc_duration_seconds)",
    ];
    let answer;
    try {
      answer = await readHistory(series, this.range);
    } catch (error) {
      fill(this.charts, failure(error));
      return;
    }
    const perSecond = (v) => `${fmt(v)}/s`;
    const seconds = (v) => duration(v * 1000);
    // Errors: calls that ended with any code but ok.
    const errors = new Map(single(answer, 0, "").points.map(([t]) => [t, 0]));
    for (const s of answer.results[9].series) {
      if (s.labels.code === "ok") continue;
      for (const [t, v] of s.points) errors.set(t, (errors.get(t) || 0) + v);
    }
    fill(this.charts, 
      chart("Records per second", [single(answer, 0, "produced"), single(answer, 1, "consumed")], perSecond),
      chart("Jobs per second", [single(answer, 2, "enqueued"), single(answer, 3, "completed"), single(answer, 4, "failed")], perSecond),
      chart("Queue wait", [single(answer, 5, "p50"), single(answer, 6, "p99")], seconds),
      chart("Run time", [single(answer, 7, "p50"), single(answer, 8, "p99")], seconds),
      chart("Errors per second (calls not ok)", [{ label: "errors", points: [...errors.entries()].sort((a, b) => a[0] - b[0]), step: answer.step_ms }], perSecond),
    );
  },
};

pages.topics = {
  async render(main) {
    this.body = el("div", {});
    fill(main, el("h1", {}, "Topics"), this.body);
    await this.refresh();
    ready();
  },
  async refresh() {
    // Rates come from the history, sampled every 5 s: read at that pace.
    if (Date.now() - (this.ratesAt || 0) >= CHART_MS) {
      this.ratesAt = Date.now();
      this.rates = await readHistory(["rate(spool_log_appended_records_total)", "rate(spool_log_fetched_records_total)"], "1h").catch(() => null);
    }
    const answer = await api("/api/v1/topics");
    const rates = this.rates;
    const rate = (index, topic) => {
      const series = rates && rates.results[index].series.find((s) => s.labels.topic === topic);
      return series && series.points.length ? series.points[series.points.length - 1][1] : null;
    };
    const rows = answer.topics.map((t) =>
      el(
        "tr",
        { "data-topic": t.name },
        el("td", {}, el("a", { href: `/topics/${encodeURIComponent(t.name)}` }, t.name)),
        cell("partitions", fmt(t.partitions)),
        cell("records", fmt(t.records)),
        cell("high_watermark_sum", fmt(t.high_watermark_sum)),
        cell("size_bytes", bytes(t.size_bytes)),
        cell("segments", fmt(t.segments)),
        cell("produce_rate", rate(0, t.name) === null ? "–" : `${fmt(rate(0, t.name))}/s`),
        cell("consume_rate", rate(1, t.name) === null ? "–" : `${fmt(rate(1, t.name))}/s`),
        cell("retention_ms", t.retention_ms === null ? "none" : duration(t.retention_ms)),
        cell("retention_bytes", t.retention_bytes === null ? "none" : bytes(t.retention_bytes)),
      ),
    );
    fill(this.body, 
      table(["topic", "partitions", "records", "end offsets", "size", "segments", "produced", "consumed", "retention", "size limit"], rows, { id: "topics" }),
    );
  },
};

pages.topic = {
  async render(main, name) {
    const t = await api(`/api/v1/topics/${encodeURIComponent(name)}`);
    this.name = name;
    const partitions = t.partition_list.map((p) =>
      el(
        "tr",
        { "data-partition": p.partition },
        cell("partition", p.partition),
        cell("log_start_offset", fmt(p.log_start_offset)),
        cell("high_watermark", fmt(p.high_watermark)),
        cell("records", fmt(p.records)),
        cell("size_bytes", bytes(p.size_bytes)),
        cell("segments", fmt(p.segments)),
      ),
    );
    const form = el(
      "form",
      { id: "browse", class: "inline", onsubmit: (event) => { event.preventDefault(); this.browse(); } },
      el("label", {}, "partition ", el("select", { name: "partition" }, t.partition_list.map((p) => el("option", { value: p.partition }, p.partition)))),
      el("label", {}, "from ", el("select", { name: "from" }, el("option", { value: "newest" }, "newest"), el("option", { value: "offset" }, "offset"), el("option", { value: "timestamp" }, "time (ISO or ms)"))),
      el("input", { name: "at", placeholder: "offset or time", size: 22 }),
      el("input", { name: "key", placeholder: "key (exact)", size: 14 }),
      el("input", { name: "header", placeholder: "header name[=value]", size: 18 }),
      el("label", {}, "as ", el("select", { name: "format" }, ["auto", "text", "json", "hex"].map((f) => el("option", { value: f }, f)))),
      el("button", { type: "submit" }, "Show"),
    );
    this.messages = el("div", { id: "messages" });
    fill(main, 
      el("h1", {}, "Topic ", el("code", {}, t.name)),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "partitions"), el("dd", { "data-field": "partitions" }, t.partitions),
        el("dt", {}, "records"), el("dd", { "data-field": "records" }, fmt(t.records)),
        el("dt", {}, "size"), el("dd", {}, bytes(t.size_bytes)),
        el("dt", {}, "retention"), el("dd", {}, t.retention_ms === null ? "none" : duration(t.retention_ms)),
        el("dt", {}, "size limit"), el("dd", {}, t.retention_bytes === null ? "none" : bytes(t.retention_bytes)),
        el("dt", {}, "segment size"), el("dd", {}, bytes(t.segment_bytes)),
      ),
      el("h2", {}, "Partitions"),
      el("div", { class: "scroll" }, table(["partition", "log start", "high watermark", "records", "size", "segments"], partitions, { id: "partitions" })),
      el("h2", {}, "Messages"),
      form,
      this.messages,
    );
    ready();
  },
  async browse(from) {
    const form = document.getElementById("browse");
    const data = new FormData(form);
    const params = { partition: data.get("partition"), limit: 50, key: data.get("key"), header: data.get("header"), format: data.get("format") };
    const at = String(data.get("at") || "").trim();
    if (from !== undefined) params.offset = from;
    else if (data.get("from") === "offset") params.offset = at;
    else if (data.get("from") === "timestamp") params.timestamp_ms = /^\d+$/.test(at) ? at : Date.parse(at);
    try {
      const answer = await api(`/api/v1/topics/${encodeURIComponent(this.name)}/messages${qs(params)}`);
      const rows = answer.records.map((r) =>
        el(
          "tr",
          { "data-offset": r.offset },
          cell("offset", r.offset),
          el("td", {}, when(r.timestamp_ms)),
          el("td", { "data-field": "key" }, r.key === null ? "–" : r.key),
          el("td", {}, r.headers.map((h) => el("div", {}, `${h.key}=${h.value === null ? "" : h.value}`))),
          el("td", {}, el("pre", { "data-field": "value", "data-format": r.value_format }, r.value === null ? "(null)" : r.value)),
        ),
      );
      const more = answer.next_offset < answer.high_watermark
        ? el("button", { id: "more", onclick: () => this.browse(answer.next_offset) }, `Next from offset ${answer.next_offset}`)
        : null;
      fill(this.messages, 
        el("p", {}, `Offsets ${answer.start_offset} to ${answer.next_offset - 1} read (${answer.scanned} records), ${answer.records.length} shown; the partition holds [${answer.log_start_offset}, ${answer.high_watermark}).`),
        table(["offset", "time", "key", "headers", "value"], rows, { id: "message-list" }),
        more,
      );
    } catch (error) {
      fill(this.messages, failure(error));
    }
  },
};

function sparkline(points) {
  const width = 120;
  const height = 24;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark" });
  if (points.length < 2) return svg;
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  const top = Math.max(...points.map((p) => p[1]), 1);
  const d = points
    .map(([t, v], i) => `${i ? "L" : "M"}${(((t - t0) / Math.max(t1 - t0, 1)) * width).toFixed(1)},${(height - (v / top) * height).toFixed(1)}`)
    .join(" ");
  svg.append(svgEl("path", { d, stroke: COLORS[0], fill: "none" }));
  return svg;
}

pages.consumers = {
  async render(main) {
    this.body = el("div", {});
    fill(main, el("h1", {}, "Consumers"), this.body);
    await this.refresh();
    ready();
  },
  async refresh() {
    if (this.body.querySelector("form.reset:focus-within")) return;
    const answer = await api("/api/v1/consumers");
    const rows = answer.consumers.flatMap((c) => [
      el(
        "tr",
        { "data-consumer": c.consumer, "data-topic": c.topic },
        el("td", {}, c.consumer),
        el("td", {}, el("a", { href: `/topics/${encodeURIComponent(c.topic)}` }, c.topic)),
        cell("lag_records", fmt(c.lag_records)),
        cell("lag_seconds", duration(c.lag_seconds * 1000)),
        el("td", {}, sparkline(c.trend)),
        cell("time_to_drain", c.time_to_drain_seconds === null ? "not draining" : duration(c.time_to_drain_seconds * 1000)),
        el("td", {}, c.partitions.map((p) => el("div", { class: "small" }, `p${p.partition}: ${fmt(p.offset)} / ${fmt(p.high_watermark)}`))),
        el("td", {}, this.resetForm(c)),
      ),
    ]);
    fill(this.body, 
      table(["consumer", "topic", "lag (records)", "lag (time)", "trend (15 min)", "time to drain", "positions", "reset"], rows, { id: "consumers" }),
    );
  },
  resetForm(c) {
    const form = el(
      "form",
      { class: "reset inline" },
      el("select", { name: "to" }, ["earliest", "latest", "offset", "timestamp"].map((to) => el("option", { value: to }, to))),
      el("input", { name: "value", placeholder: "offset or time", size: 12 }),
      el("button", { type: "submit" }, "Reset"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const to = data.get("to");
      const value = String(data.get("value") || "").trim();
      const body = { to };
      if (to === "offset") body.offset = Number(value);
      if (to === "timestamp") body.timestamp_ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
      const what = to === "offset" || to === "timestamp" ? `${to} ${value}` : to;
      if (!(await confirmAction(`Reset consumer ${c.consumer} on ${c.topic} to ${what}? It will read from there on its next start.`))) return;
      try {
        await post(`/api/v1/consumers/${encodeURIComponent(c.consumer)}/${encodeURIComponent(c.topic)}/reset`, body);
        await this.refresh();
      } catch (error) {
        form.append(failure(error));
      }
    });
    return form;
  },
};

function latency(p) {
  return p ? duration(p.p99_ms) : "–";
}

pages.queues = {
  async pause(queue, paused) {
    const text = paused
      ? `Pause queue ${queue}? Workers get none of its jobs until it is resumed; its jobs stay available.`
      : `Resume queue ${queue}? Waiting workers get its jobs at once.`;
    if (!(await confirmAction(text))) return;
    try {
      await post(`/api/v1/queues/${encodeURIComponent(queue)}/${paused ? "pause" : "resume"}`, {});
      await this.refresh();
    } catch (error) {
      this.body.prepend(failure(error));
    }
  },
  async render(main) {
    this.body = el("div", {});
    fill(main, el("h1", {}, "Queues"), this.body);
    await this.refresh();
    ready();
  },
  async refresh() {
    const answer = await api("/api/v1/queues");
    const rows = answer.queues.map((q) =>
      el(
        "tr",
        { "data-queue": q.queue },
        el("td", {}, el("a", { href: `/jobs?queue=${encodeURIComponent(q.queue)}` }, q.queue)),
        ["scheduled", "available", "running", "succeeded", "dead", "cancelled"].map((state) =>
          el("td", { "data-field": state, class: "num" }, el("a", { href: `/jobs?queue=${encodeURIComponent(q.queue)}&state=${state}` }, fmt(q.counts[state]))),
        ),
        cell("oldest_available_age", duration(q.oldest_available_age_ms)),
        cell("enqueued_per_second", fmt(q.enqueued_per_second)),
        cell("completed_per_second", fmt(q.completed_per_second)),
        cell("failed_per_second", fmt(q.failed_per_second)),
        cell("queue_wait_p99", latency(q.queue_wait_last_minute)),
        cell("run_time_p99", latency(q.run_time_last_minute)),
        cell("leases_held", fmt(q.leases_held)),
        cell("workers_connected", fmt(q.workers_connected)),
        cell("limits", limits(q)),
        el("td", { "data-field": "paused" }, q.paused ? "paused" : "running"),
        el("td", {}, el("button", { class: q.paused ? "resume" : "pause danger", onclick: () => this.pause(q.queue, !q.paused) }, q.paused ? "Resume" : "Pause")),
      ),
    );
    fill(this.body, 
      el("div", { class: "scroll" },
        table(
          ["queue", "scheduled", "available", "running", "succeeded", "dead", "cancelled", "oldest waiting", "enqueued/s", "completed/s", "failed/s", "wait p99", "run p99", "leases", "workers", "limits", "claims", ""],
          rows,
          { id: "queues" },
        )),
    );
  },
};

// A queue's limits with what is in use: "3/5 running, 42/100 per 1s".
function limits(q) {
  const parts = [];
  if (q.limits.concurrency_limit != null) {
    parts.push(`${fmt(q.leases_held)}/${fmt(q.limits.concurrency_limit)} running`);
  }
  if (q.limits.rate_limit) {
    parts.push(`${fmt(q.limits.rate_window_claims)}/${fmt(q.limits.rate_limit.jobs)} per ${duration(q.limits.rate_limit.per_ms)}`);
  }
  return parts.length ? parts.join(", ") : "-";
}

function jobRow(job) {
  return el(
    "tr",
    { "data-job": job.id },
    el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.id)),
    el("td", {}, job.queue),
    el("td", { "data-field": "state" }, job.state),
    cell("attempt", `${job.attempt}/${job.attempts_max}`),
    el("td", {}, when(job.created_at_ms)),
    el("td", { class: "error-text" }, job.last_error || ""),
  );
}

pages.jobs = {
  async render(main) {
    const params = new URLSearchParams(location.search);
    const search = el(
      "form",
      { id: "search", class: "inline", onsubmit: (event) => { event.preventDefault(); this.search(); } },
      el("input", { name: "q", placeholder: "job id, key, header, payload or error text", size: 40, value: params.get("q") || "" }),
      el("select", { name: "field" }, ["any", "id", "key", "payload", "header", "error"].map((f) => el("option", { value: f, selected: f === (params.get("field") || "any") }, f))),
      el("button", { type: "submit" }, "Search"),
    );
    const list = el(
      "form",
      { id: "list", class: "inline", onsubmit: (event) => { event.preventDefault(); this.token = ""; this.list(); } },
      el("input", { name: "queue", placeholder: "queue", value: params.get("queue") || "" }),
      el("select", { name: "state" }, ["any", "scheduled", "available", "running", "succeeded", "dead", "cancelled"].map((s) => el("option", { value: s, selected: s === (params.get("state") || "any") }, s))),
      el("button", { type: "submit" }, "List"),
    );
    this.results = el("div", { id: "results" });
    fill(main, el("h1", {}, "Jobs"), el("h2", {}, "Search"), search, el("h2", {}, "By queue and state"), list, this.results);
    this.token = "";
    if (params.get("q")) await this.search();
    else if (params.get("queue")) await this.list();
    ready();
  },
  async search() {
    const data = new FormData(document.getElementById("search"));
    const q = String(data.get("q") || "").trim();
    if (!q) return;
    history.replaceState(null, "", `/jobs${qs({ q, field: data.get("field") })}`);
    try {
      const answer = await api(`/api/v1/search${qs({ q, field: data.get("field") })}`);
      fill(this.results, 
        el("p", { id: "search-summary" }, `${answer.jobs.length}${answer.more ? "+" : ""} jobs found in ${fmt(answer.elapsed_ms)} ms`),
        table(["job", "queue", "state", "attempt", "enqueued", "last error"], answer.jobs.map(jobRow), { id: "job-list" }),
      );
    } catch (error) {
      fill(this.results, failure(error));
    }
  },
  async list() {
    const data = new FormData(document.getElementById("list"));
    const queue = String(data.get("queue") || "").trim();
    if (!queue) return;
    const state = data.get("state") === "any" ? "" : data.get("state");
    history.replaceState(null, "", `/jobs${qs({ queue, state })}`);
    try {
      const answer = await api(`/api/v1/jobs${qs({ queue, state, page_token: this.token, limit: 50 })}`);
      const next = answer.next_page_token
        ? el("button", { id: "next-page", onclick: () => { this.token = answer.next_page_token; this.list(); } }, "Next page")
        : null;
      fill(this.results, table(["job", "queue", "state", "attempt", "enqueued", "last error"], answer.jobs.map(jobRow), { id: "job-list" }), next);
    } catch (error) {
      fill(this.results, failure(error));
    }
  },
};

pages.job = {
  async render(main, id) {
    this.id = id;
    this.main = main;
    await this.refresh();
    ready();
  },
  async refresh() {
    const { job, timeline, timeline_truncated: truncated } = await api(`/api/v1/jobs/${this.id}`);
    const fact = (label, field, value) => [el("dt", {}, label), el("dd", { "data-field": field }, value === null || value === undefined ? "–" : value)];
    const cancellable = ["scheduled", "available", "running"].includes(job.state);
    const cancel = cancellable
      ? el("button", {
          id: "cancel",
          class: "danger",
          onclick: async () => {
            if (!(await confirmAction(`Cancel job ${job.id}?${job.state === "running" ? " Its worker is told on its next heartbeat." : ""}`))) return;
            try {
              await post(`/api/v1/jobs/${job.id}/cancel`, {});
              await this.refresh();
            } catch (error) {
              this.main.append(failure(error));
            }
          },
        }, "Cancel job")
      : null;
    const attempts = job.attempts.map((a) =>
      el("tr", {}, cell("attempt", a.attempt), el("td", {}, a.outcome), el("td", {}, when(a.available_at_ms)), cell("queue_wait_ms", duration(a.queue_wait_ms)), cell("run_ms", duration(a.run_ms))),
    );
    const errors = job.errors.map((e) => el("tr", {}, cell("attempt", e.attempt), el("td", {}, when(e.failed_at_ms)), el("td", { class: "error-text" }, e.error)));
    const events = timeline.map((e) =>
      el(
        "tr",
        { "data-kind": e.kind },
        el("td", {}, when(e.time_ms)),
        cell("offset_ms", `+${duration(e.offset_ms)}`),
        el("td", { "data-field": "kind" }, e.kind),
        cell("attempt", e.attempt),
        el("td", {}, e.worker_id || ""),
        el("td", { class: "error-text" }, e.error || e.progress || e.detail || ""),
        el("td", { "data-field": "position" }, `${e.topic}/${e.partition}@${e.offset}`),
      ),
    );
    fill(this.main, 
      el("h1", {}, "Job ", el("code", { id: "job-id" }, job.id), " ", cancel),
      el(
        "dl",
        { class: "facts" },
        fact("queue", "queue", el("a", { href: `/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)),
        fact("state", "state", job.state),
        fact("attempt", "attempt", `${job.attempt} of ${job.attempts_max}`),
        fact("priority", "priority", job.priority),
        fact("idempotency key", "idempotency_key", job.idempotency_key),
        fact("trace id", "trace_id", job.trace_id),
        fact("enqueued", "created_at_ms", when(job.created_at_ms)),
        fact("finished", "finished_at_ms", when(job.finished_at_ms)),
        fact("worker", "worker_id", job.worker_id),
        fact("progress", "progress", job.progress),
        job.from_history ? fact("from", "from_history", "rebuilt from the log (left memory)") : null,
      ),
      el("h2", {}, "Payload ", el("small", {}, `${job.content_type || "no content type"}, ${bytes(job.payload_bytes)}`)),
      el("pre", { id: "payload" }, job.payload),
      el("h2", {}, "Headers"),
      el("pre", { id: "headers" }, Object.entries(job.headers).map(([k, v]) => `${k}: ${v}`).join("\n") || "none"),
      job.result !== null ? [el("h2", {}, "Result"), el("pre", { id: "result" }, job.result)] : null,
      el("h2", {}, "Attempts"),
      table(["attempt", "outcome", "available", "queue wait", "run time"], attempts, { id: "attempts" }),
      errors.length ? [el("h2", {}, "Errors"), table(["attempt", "failed", "error"], errors, { id: "errors" })] : null,
      el("h2", {}, "Timeline from the log"),
      table(["time", "after enqueue", "event", "attempt", "worker", "detail", "topic/partition@offset"], events, { id: "timeline" }),
      truncated ? el("p", {}, "More events follow; the first 10,000 are shown.") : null,
    );
  },
};

pages.dead = {
  async render(main) {
    this.body = el("div", {});
    this.notice = el("p", { id: "dead-notice", role: "status" });
    fill(main, el("h1", {}, "Dead letters"), this.notice, this.body);
    await this.draw();
    ready();
  },
  async draw() {
    const answer = await api("/api/v1/dead");
    const rows = answer.groups.map((g) => {
      const target = { queue: g.queue, fingerprint: g.fingerprint };
      return el(
        "tr",
        { "data-queue": g.queue, "data-fingerprint": g.fingerprint },
        el("td", {}, el("input", { type: "checkbox", class: "select", "data-ids": g.job_ids.join(","), "aria-label": "select" })),
        el("td", {}, g.queue),
        el("td", { class: "error-text" }, el("code", {}, g.fingerprint || "(no error text)"), el("div", { class: "small" }, g.example_error || "")),
        cell("count", fmt(g.count)),
        el("td", {}, when(g.newest_dead_at_ms)),
        el("td", {}, el("a", { href: `/jobs/${g.job_ids[0]}` }, "example")),
        el(
          "td",
          {},
          el("button", { class: "retry", onclick: () => this.act("retry", target, `${fmt(g.count)} dead jobs of ${g.queue} with error “${g.fingerprint}”`) }, "Retry"),
          " ",
          el("button", { class: "purge danger", onclick: () => this.act("purge", target, `${fmt(g.count)} dead jobs of ${g.queue} with error “${g.fingerprint}”`) }, "Purge"),
        ),
      );
    });
    const selection = el(
      "p",
      {},
      el("button", { id: "retry-selected", onclick: () => this.actOnSelection("retry") }, "Retry selected"),
      " ",
      el("button", { id: "purge-selected", class: "danger", onclick: () => this.actOnSelection("purge") }, "Purge selected"),
      " (the listed jobs of each selected group, up to 20 each)",
    );
    fill(this.body, 
      rows.length ? table(["", "queue", "error fingerprint", "jobs", "newest", "", "actions"], rows, { id: "dead-groups" }) : el("p", { id: "no-dead" }, "No dead jobs."),
      rows.length ? selection : null,
      answer.truncated_queues.length ? el("p", {}, `Only the first 10,000 dead jobs of ${answer.truncated_queues.join(", ")} are grouped.`) : null,
    );
  },
  async act(action, target, what) {
    try {
      // The dry run tells how many jobs the action will touch right now.
      const dry = await post(`/api/v1/dead/${action}`, { ...target, dry_run: true });
      const ok = await confirmAction(`${action === "retry" ? "Retry" : "Purge"} ${what}? A dry run counts ${fmt(dry.count)} jobs now${dry.count >= 1000 ? " (at least)" : ""}.${action === "purge" ? " Purged jobs leave the job table; their history stays in the log." : ""}`);
      if (!ok) return;
      const done = await post(`/api/v1/dead/${action}`, target);
      this.notice.textContent = `${action === "retry" ? "Retried" : "Purged"} ${fmt(done.count)} jobs.`;
      await this.draw();
    } catch (error) {
      fill(this.notice, failure(error));
    }
  },
  async actOnSelection(action) {
    const ids = [...this.body.querySelectorAll("input.select:checked")].flatMap((box) => box.dataset.ids.split(",")).filter(Boolean);
    if (!ids.length) return;
    await this.act(action, { job_ids: ids }, `${ids.length} selected dead jobs`);
  },
};

pages.audit = {
  async render(main) {
    this.body = el("div", {});
    fill(main, el("h1", {}, "Audit trail"), el("p", {}, "Actions taken through this dashboard and its API, kept in the internal topic __audit."), this.body);
    await this.refresh();
    ready();
  },
  async refresh() {
    const answer = await api("/api/v1/audit?limit=200");
    const rows = answer.records.map((r) =>
      el(
        "tr",
        { "data-action": r.action },
        el("td", {}, when(r.time_ms)),
        el("td", { "data-field": "action" }, r.action),
        el("td", {}, r.user ? `${r.user} (${r.address})` : r.address),
        el("td", {}, el("code", {}, JSON.stringify(r.target))),
        cell("count", fmt(r.count)),
        cell("offset", r.offset),
      ),
    );
    fill(this.body, table(["when", "action", "who", "what", "count", "offset"], rows, { id: "audit" }));
  },
};

// ----------------------------------------------------------------- router

function route(path) {
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return ["overview", []];
  if (parts[0] === "topics" && parts.length === 2) return ["topic", [parts[1]]];
  if (parts[0] === "jobs" && parts.length === 2) return ["job", [parts[1]]];
  return [parts[0], []];
}

// The login form: a token of a principal with cluster=admin opens a
// session (a cookie the page cannot read) and reloads the page.
function showLogin(main, reason) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "spool_..." });
  const problem = el("p", { id: "login-error", class: "error", role: "alert" }, reason || "");
  const form = el(
    "form",
    { id: "login" },
    el("h1", {}, "Log in"),
    el("p", {}, "This server has authentication on. Log in with a token of a principal granted cluster=admin (spool token create NAME --grant cluster=admin)."),
    el("label", { for: "token" }, "Token "),
    input,
    el("button", { type: "submit", id: "login-submit" }, "Log in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await fetch("/api/v1/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: input.value }),
      });
      await answerOf(response);
      location.reload();
    } catch (error) {
      problem.textContent = error.message;
    }
  });
  fill(main, form);
  document.querySelector("nav").style.display = "none";
  ready();
}

// Who is logged in, with a way out, in the header.
function showSession(session) {
  const out = el("button", { id: "logout", type: "button" }, "Log out");
  out.addEventListener("click", async () => {
    await post("/api/v1/session/logout", {});
    location.reload();
  });
  document.querySelector("header").append(el("span", { id: "principal" }, session.principal), out);
}

async function start() {
  const main0 = document.getElementById("main");
  let session;
  try {
    session = await answerOf(await fetch("/api/v1/session", { headers: { Accept: "application/json" } }));
  } catch (error) {
    showLogin(main0, error instanceof LoggedOut ? "" : error.message);
    return;
  }
  if (session.authentication) {
    csrfToken = session.csrf_token;
    showSession(session);
  }
  const [name, args] = route(location.pathname);
  const page = pages[name];
  const main = document.getElementById("main");
  const nav = name === "topic" ? "topics" : name === "job" ? "jobs" : name;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
  if (!page) {
    fill(main, failure(new Error(`no page ${location.pathname}`)));
    return;
  }
  try {
    await page.render(main, ...args);
  } catch (error) {
    if (error instanceof LoggedOut) {
      showLogin(main, error.message);
      return;
    }
    fill(main, failure(error));
    ready();
    return;
  }
  if (!page.refresh) return;
  const live = document.getElementById("live");
  let busy = false;
  setInterval(async () => {
    if (busy || document.visibilityState !== "visible") return;
    busy = true;
    try {
      await page.refresh();
      live.textContent = `live · ${new Date().toTimeString().slice(0, 8)}`;
      live.classList.remove("stale");
    } catch (error) {
      if (error instanceof LoggedOut) location.reload();
      live.textContent = `not updating: ${error.message}`;
      live.classList.add("stale");
    } finally {
      busy = false;
    }
  }, LIVE_MS);
}

start();
