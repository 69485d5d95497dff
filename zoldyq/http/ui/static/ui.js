// ZoldyQ admin page: plain DOM, no library, no build step, no other host.
// Every request goes to this origin's JSON API with the `X-Zoldyq-UI: 1` marker
// (the server refuses the page's actions in read-only mode) and, when the server
// has a token, `Authorization: Bearer` from sessionStorage (never in the URL).
"use strict";

const POLL_MS = 1000;
const HISTORY = 30; // sparkline points, one a second
const TOKEN_KEY = "zoldyq-token";
const meta = (name, fallback) => {
  const v = document.querySelector(`meta[name="${name}"]`)?.content || "";
  return v.startsWith("{{") ? fallback : v;
};
const MODE = meta("zoldyq-ui", "on"); // "on" | "read-only"
const NEEDS_TOKEN = meta("zoldyq-auth", "none") === "token";
const CAN_ACT = MODE === "on";

// -- formatting for people ---------------------------------------------------------

const PREFIX = ["", " k", " M", " G", " T"];
function fmtNum(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "—";
  let i = 0;
  while (Math.abs(n) >= 1000 && i < PREFIX.length - 1) { n /= 1000; i++; }
  const digits = i === 0 ? (Math.abs(n) < 10 && n % 1 ? 1 : 0) : (Math.abs(n) < 100 ? 1 : 0);
  return n.toFixed(digits).replace(/\.0$/, "") + PREFIX[i];
}
const fmtRate = (r) => (r === null || r === undefined ? "—" : `${fmtNum(r)}/s`.replace(" ", "\u202f"));
function fmtBytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i ? n.toFixed(n < 100 ? 1 : 0).replace(/\.0$/, "") : n} ${units[i]}`;
}
function fmtDuration(s) {
  if (s === undefined || s === null || Number.isNaN(s)) return "—";
  if (s < 1) return s <= 0 ? "0 s" : "<1 s";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1).replace(/\.0$/, "")} h`;
  return `${(s / 86400).toFixed(1).replace(/\.0$/, "")} d`;
}
const utf8 = new TextEncoder();
const fmtTime = (us) => new Date(us / 1000).toLocaleString();

// -- DOM ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}
const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

function sparkline(values, label) {
  const w = 80, hgt = 20;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const base = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: w, y1: hgt - 0.5, y2: hgt - 0.5 })) base.setAttribute(k, v);
  const line = document.createElementNS(SVG, "polyline");
  svg.append(base, line);
  svg.update = (vals) => {
    const max = Math.max(1e-9, ...vals);
    svg.classList.toggle("idle", max <= 1e-9);
    const pts = vals.length === 1 ? [vals[0], vals[0]] : vals; // until HISTORY: the samples so far, stretched
    const step = w / Math.max(1, pts.length - 1);
    line.setAttribute("points", pts.map((v, i) =>
      `${(i * step).toFixed(1)},${(hgt - 1 - (v / max) * (hgt - 2)).toFixed(1)}`).join(" "));
  };
  svg.update(values);
  return svg;
}

function bar(value, max, label) {
  const fill = h("span");
  const el = h("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-label": label }, fill);
  el.update = (v, m) => {
    const frac = m ? Math.min(1, v / m) : 0;
    fill.style.width = `${(frac * 100).toFixed(2)}%`; // CSSOM, allowed by the CSP
    el.classList.toggle("warn", frac >= 0.8);
    el.setAttribute("aria-valuenow", v);
    el.setAttribute("aria-valuemax", m);
    el.setAttribute("aria-valuetext", `${v} of ${m} (${(frac * 100).toFixed(0)}%)`);
  };
  el.update(value, max);
  return el;
}

function say(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
  clearTimeout(say.timer);
  if (text) say.timer = setTimeout(() => { s.textContent = ""; }, 8000);
}

function confirmAction(title, text, okLabel) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
  });
}

// -- the API -------------------------------------------------------------------------

let token = sessionStorage.getItem(TOKEN_KEY);
let asking = null;

function askToken(message) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dlg = $("#login");
      const input = $("#login-token");
      $("#login-error").textContent = message || "";
      input.value = "";
      dlg.addEventListener("cancel", (e) => e.preventDefault()); // nothing works without it
      dlg.addEventListener("close", () => {
        token = input.value.trim();
        sessionStorage.setItem(TOKEN_KEY, token);
        asking = null;
        resolve();
      }, { once: true });
      dlg.showModal();
    });
  }
  return asking;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error || "http_error";
  }
}

async function api(method, path, body, raw = false) {
  for (;;) {
    if (NEEDS_TOKEN && !token) await askToken();
    const headers = { "X-Zoldyq-UI": "1", Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    let data;
    if (body !== undefined) {
      headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
      data = raw ? body : JSON.stringify(body);
    }
    const r = await fetch(path, { method, headers, body: data, cache: "no-store" });
    if (r.status === 401) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken("That token was refused; try again.");
      continue;
    }
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (!r.ok) throw new ApiError(r.status, json);
    return json;
  }
}
const q = (name) => `/queues/${encodeURIComponent(name)}`;

// -- per-queue rate history, shared by both pages ---------------------------------------

const history = new Map(); // name -> {t, enq, deq, enqRate, deqRate, enqHist, deqHist}

function track(s, now) {
  let st = history.get(s.name);
  if (!st || s.enqueued_total < st.enq || s.created_at !== st.created) {
    st = { created: s.created_at, enqHist: [], deqHist: [], enqRate: null, deqRate: null };
    history.set(s.name, st);
  } else {
    const dt = (now - st.t) / 1000;
    if (dt <= 0) return st;
    st.enqRate = Math.max(0, (s.enqueued_total - st.enq) / dt);
    st.deqRate = Math.max(0, (s.dequeued_total - st.deq) / dt);
    st.enqHist.push(st.enqRate);
    st.deqHist.push(st.deqRate);
    if (st.enqHist.length > HISTORY) { st.enqHist.shift(); st.deqHist.shift(); }
  }
  st.t = now;
  st.enq = s.enqueued_total;
  st.deq = s.dequeued_total;
  return st;
}

// A queue is a DLQ when another queue names it as its dead_letter_queue, or by the
// default name <queue>.dlq; `sources` maps a DLQ's name to the queues that feed it.
const sources = new Map();
function learnDlqs(queues) {
  sources.clear();
  for (const q of queues) {
    if (!q.dead_letter_queue) continue;
    if (!sources.has(q.dead_letter_queue)) sources.set(q.dead_letter_queue, []);
    sources.get(q.dead_letter_queue).push(q.name);
  }
}
const isDlq = (s) => sources.has(s.name) || s.name.endsWith(".dlq");
const dlqSource = (s) => (sources.get(s.name) || [s.name.endsWith(".dlq") ? s.name.slice(0, -4) : null])
  .filter(Boolean).join(", ") || null;

// -- views ---------------------------------------------------------------------------

let view = null; // the page on screen; its poll loop stops when another replaces it

function show(next) {
  if (view) view.stopped = true;
  view = next;
  const main = $("#main");
  main.replaceChildren(...next.render());
  const tick = async () => {
    if (next.stopped) return;
    if (!next.paused) {
      next.inflight = next.tick().then(() => { next.failing = false; }, (e) => {
        if (!next.stopped && !next.failing) say(`Cannot refresh: ${e.message}`, true);
        next.failing = true;
      });
      await next.inflight;
    }
    if (!next.stopped && next.poll !== false) setTimeout(tick, POLL_MS);
  };
  tick();
}

function totals(items) {
  $("#totals").replaceChildren(...items.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v }))));
}

function enqueueForm(fixedName, onDone) {
  const id = fixedName ? "q" : "o";
  const nameInput = fixedName ? null : h("input", {
    id: `${id}-name`, name: "queue", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}",
    placeholder: "emails", autocomplete: "off",
  });
  const payload = h("textarea", { id: `${id}-payload`, name: "payload", rows: 3, required: true,
    placeholder: '{"to": "a@b.c"}' });
  const kind = h("select", { id: `${id}-kind`, name: "kind" },
    h("option", { value: "json", text: "JSON" }), h("option", { value: "raw", text: "Raw text (bytes)" }));
  const form = h("form", {
    class: "card enqueue", "aria-labelledby": `${id}-title`,
    onsubmit: async (e) => {
      e.preventDefault();
      const name = fixedName || nameInput.value.trim();
      let body;
      if (kind.value === "json") {
        try { body = { payload: JSON.parse(payload.value) }; } catch (err) {
          say(`The payload is not valid JSON: ${err.message}`, true);
          payload.focus();
          return;
        }
      } else body = payload.value;
      try {
        const r = await api("POST", `${q(name)}/enqueue`, body, kind.value === "raw");
        say(`Enqueued to ${name}; it now holds ${fmtNum(r.queue_size)} message(s).`);
        payload.value = "";
        onDone?.();
      } catch (err) { say(`Enqueue failed: ${err.message}`, true); }
    },
  },
  h("h2", { id: `${id}-title`, text: "Enqueue a message" }),
  nameInput && h("label", { for: nameInput.id, text: "Queue" }), nameInput,
  h("label", { for: payload.id, text: "Payload" }), payload,
  h("label", { for: kind.id, text: "Format" }), kind,
  h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", text: "Enqueue" })));
  return form;
}

function curlLine() {
  const auth = NEEDS_TOKEN ? ' -H "Authorization: Bearer $ZOLDYQ_TOKEN"' : "";
  return `curl -X POST ${location.origin}/queues/hello/enqueue${auth} -H 'Content-Type: application/json' -d '{"payload": "hello"}'`;
}

class Overview {
  ticks = 0;

  render() {
    document.title = "Queues · ZoldyQ";
    this.body = h("tbody");
    this.rows = new Map();
    this.table = h("table", { class: "queues" },
      h("caption", { text: "Every queue, refreshed each second" }),
      h("thead", {}, h("tr", {},
        ...["Queue", "Size", "In flight", "Delayed", "Enqueue rate", "Dequeue rate", "Oldest", "Rejected (429)"]
          .map((t) => h("th", { scope: "col", text: t })))),
      this.body);
    this.empty = h("section", { class: "card empty", hidden: true, "aria-labelledby": "empty-title" },
      h("h2", { id: "empty-title", text: "No queues yet" }),
      h("p", { text: "A queue is created by its first message. Enqueue one from a shell:" }),
      h("pre", {}, h("code", { text: curlLine() })),
      CAN_ACT ? h("p", { text: "or with the form below." }) : null);
    this.wrap = h("div", { class: "table-wrap" }, this.table);
    this.more = CAN_ACT ? h("details", { class: "more" }, h("summary", { text: "Enqueue a message…" }),
      enqueueForm(null, () => this.tick())) : null;
    return [h("h1", { text: "Queues" }), this.empty, this.wrap, this.more];
  }

  async tick() {
    // /health (for the uptime) probes every lock: fetch it rarely and never wait for it
    if (this.ticks++ % 10 === 0) {
      api("GET", "/health").then((doc) => { this.uptime = [doc.uptime_seconds, performance.now()]; },
        () => {});
    }
    const list = await api("GET", "/queues");
    if (this.stopped) return;
    performance.mark("zoldyq:data");
    const now = performance.now();
    // names are ASCII: a plain comparison (localeCompare would load ICU's collator first)
    learnDlqs(list.queues);
    const queues = list.queues.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const seen = new Set();
    let size = 0, inflight = 0, enq = 0, deq = 0;
    for (const s of queues) {
      seen.add(s.name);
      const st = track(s, now);
      size += s.size;
      inflight += s.inflight || 0;
      enq += st.enqRate || 0;
      deq += st.deqRate || 0;
      let row = this.rows.get(s.name);
      if (!row) row = this.addRow(s);
      row.update(s, st);
    }
    let changed = this.added;
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) { row.tr.remove(); this.rows.delete(name); changed = true; }
    }
    if (changed) { // rows move only when the set of queues changed: no relayout each second
      const rows = [...this.rows.keys()].sort().map((n) => this.rows.get(n).tr);
      this.body.replaceChildren(...rows);
      this.added = false;
    }
    performance.mark("zoldyq:rows");
    if (this.more && !queues.length) this.more.open = true;
    this.empty.hidden = queues.length > 0;
    this.wrap.hidden = queues.length === 0;
    totals([["Queues", fmtNum(queues.length)], ["Messages", fmtNum(size)],
      ["In flight", fmtNum(inflight)], ["Enqueue", fmtRate(enq)], ["Dequeue", fmtRate(deq)],
      ["Uptime", this.uptime ? fmtDuration(this.uptime[0] + (now - this.uptime[1]) / 1000) : "—"]]);
  }

  addRow(s) {
    const cells = {};
    const td = (key, label, ...kids) => (cells[key] = h("td", { class: key, "data-label": label }, ...kids));
    const size = h("span", { class: "num" });
    const meter = bar(0, 1, `${s.name} size against capacity`);
    const enqSpark = sparkline([], `${s.name} enqueue rate, last ${HISTORY} s`);
    const deqSpark = sparkline([], `${s.name} dequeue rate, last ${HISTORY} s`);
    const enqText = h("span", { class: "num" });
    const deqText = h("span", { class: "num" });
    const link = h("a", { href: `#/queues/${encodeURIComponent(s.name)}`, text: s.name });
    let badge = null;
    const tr = h("tr", { "data-queue": s.name },
      h("th", { scope: "row" }, link),
      td("size", "Size", h("div", { class: "sizecell" }, size, meter)),
      td("inflight", "In flight"), td("delayed", "Delayed"),
      td("enq", "Enqueue", h("div", { class: "ratecell" }, enqText, enqSpark)),
      td("deq", "Dequeue", h("div", { class: "ratecell" }, deqText, deqSpark)),
      td("oldest", "Oldest"), td("full", "Rejected (429)"));
    const row = {
      tr,
      update: (st, hist) => {
        size.textContent = `${fmtNum(st.size)} / ${fmtNum(st.capacity)}`;
        meter.update(st.size, st.capacity);
        if (isDlq(st) !== Boolean(badge)) {
          if (badge) { badge.remove(); badge = null; } else {
            badge = h("span", { class: "badge", title: "dead-letter queue", text: "DLQ" });
            link.after(badge);
          }
        }
        cells.inflight.textContent = fmtNum(st.inflight);
        cells.delayed.textContent = fmtNum(st.delayed);
        enqText.textContent = fmtRate(hist.enqRate);
        deqText.textContent = fmtRate(hist.deqRate);
        enqSpark.update(hist.enqHist);
        deqSpark.update(hist.deqHist);
        cells.oldest.textContent = st.size ? fmtDuration(st.oldest_age_seconds) : "—";
        cells.full.textContent = fmtNum(st.queue_full_total);
        cells.full.classList.toggle("hot", st.queue_full_total > 0);
      },
    };
    this.rows.set(s.name, row);
    this.added = true;
    return row;
  }
}

const LIMITS = [
  ["capacity", "Capacity (messages)", fmtNum], ["max_bytes", "Ring size", fmtBytes],
  ["max_message_bytes", "Largest message", fmtBytes], ["max_deliveries", "Max deliveries", fmtNum],
  ["dead_letter_queue", "Dead-letter queue", String], ["created_at", "Created", fmtTime],
];
const COUNTERS = [
  ["size", "Messages", fmtNum], ["bytes", "Bytes", fmtBytes], ["inflight", "In flight", fmtNum],
  ["delayed", "Delayed", fmtNum], ["oldest_age_seconds", "Oldest message", fmtDuration],
  ["enqueued_total", "Enqueued", fmtNum], ["dequeued_total", "Dequeued", fmtNum],
  ["acked_total", "Acked", fmtNum], ["redelivered_total", "Redelivered", fmtNum],
  ["dead_lettered_total", "Dead-lettered", fmtNum], ["queue_full_total", "Rejected (429)", fmtNum],
  ["dequeue_timeout_total", "Empty long-polls", fmtNum], ["cleared_total", "Purged", fmtNum],
  ["bytes_in_total", "Bytes in", fmtBytes], ["bytes_out_total", "Bytes out", fmtBytes],
  ["waiters", "Waiting consumers", fmtNum],
];

function hexdump(bytes, limit = 4096) {
  const lines = [];
  const n = Math.min(bytes.length, limit);
  for (let i = 0; i < n; i += 16) {
    const chunk = bytes.subarray(i, Math.min(i + 16, n));
    const hex = [...chunk].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = [...chunk].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${text}`);
  }
  if (bytes.length > limit) lines.push(`… ${fmtBytes(bytes.length - limit)} more`);
  return lines.join("\n");
}

class QueuePage {
  constructor(name) { this.name = name; }

  render() {
    const name = this.name;
    document.title = `${name} · ZoldyQ`;
    this.limits = h("dl", { class: "facts" });
    this.counters = h("dl", { class: "facts" });
    this.enqSpark = sparkline([], "enqueue rate");
    this.deqSpark = sparkline([], "dequeue rate");
    this.rates = h("p", { class: "rates" });
    this.title = h("h1", {}, name);
    this.actions = h("div", { class: "actions", role: "group", "aria-label": "Queue actions" });
    this.max = h("input", { id: "peek-max", type: "number", min: 1, max: 100, value: 10, inputmode: "numeric" });
    this.peeked = h("ol", { class: "messages", "aria-label": "Messages at the head" });
    this.peekNote = h("p", { class: "muted" });
    const peekForm = h("form", { class: "peekform", onsubmit: (e) => { e.preventDefault(); this.peek(); } },
      h("label", { for: "peek-max", text: "First" }), this.max,
      h("span", { text: "messages" }),
      h("button", { type: "submit", text: "Peek" }));
    return [
      h("nav", { "aria-label": "Breadcrumb" }, h("a", { href: "#/", text: "← All queues" })),
      h("div", { class: "titlebar" }, this.title, this.actions),
      h("div", { class: "grid" },
        h("section", { class: "card", "aria-labelledby": "limits-title" },
          h("h2", { id: "limits-title", text: "Limits" }), this.limits),
        h("section", { class: "card", "aria-labelledby": "counters-title" },
          h("h2", { id: "counters-title", text: "Counters" }), this.rates, this.counters)),
      h("section", { class: "card", "aria-labelledby": "peek-title" },
        h("h2", { id: "peek-title", text: "Peek" }),
        h("p", { class: "muted", text: "Reads the head of the queue without taking anything." }),
        peekForm, this.peekNote, this.peeked),
      CAN_ACT ? enqueueForm(name, () => this.peek()) : null,
    ];
  }

  async tick() {
    let s;
    try { s = await api("GET", q(this.name)); } catch (e) {
      if (e.status !== 404) throw e;
      if (this.stopped) return; // deleted from this page: the overview is on screen now
      this.poll = false;
      $("#main").replaceChildren(h("h1", { text: this.name }),
        h("p", { text: `There is no queue named ${this.name} (any more).` }),
        h("p", {}, h("a", { href: "#/", text: "Back to all queues" })));
      return;
    }
    if (this.stopped) return;
    const st = track(s, performance.now());
    if (!this.drawn) {
      learnDlqs((await api("GET", "/queues")).queues); // who names this queue as its DLQ
      if (this.stopped) return;
      this.drawActions(s);
    }
    const fill = (dl, rows) => dl.replaceChildren(...rows.filter(([k]) => s[k] !== undefined && s[k] !== null)
      .flatMap(([k, label, f]) => [h("dt", { text: label }), h("dd", { text: f(s[k]) })]));
    fill(this.limits, LIMITS);
    fill(this.counters, COUNTERS);
    this.rates.replaceChildren("Enqueue ", h("strong", { text: fmtRate(st.enqRate) }), " ", this.enqSpark,
      " Dequeue ", h("strong", { text: fmtRate(st.deqRate) }), " ", this.deqSpark);
    this.enqSpark.update(st.enqHist);
    this.deqSpark.update(st.deqHist);
    totals([["Messages", fmtNum(s.size)], ["Capacity", fmtNum(s.capacity)],
      ["Enqueue", fmtRate(st.enqRate)], ["Dequeue", fmtRate(st.deqRate)]]);
  }

  drawActions(s) {
    this.drawn = true;
    if (isDlq(s)) this.title.append(h("span", { class: "badge", title: "dead-letter queue", text: "DLQ" }));
    if (!CAN_ACT) return;
    const name = this.name;
    const act = (label, cls, run) => h("button", { type: "button", class: cls, onclick: run, text: label });
    const source = dlqSource(s);
    if (isDlq(s)) {
      this.actions.append(act("Redrive", "primary", async () => {
        const to = source ? ` back to ${source}` : " back to their queue";
        if (!(await confirmAction(`Redrive ${name}?`, `Move every message of ${name}${to}.`, "Redrive"))) return;
        try {
          const r = await api("POST", `${q(name)}/redrive`);
          say(`Moved ${fmtNum(r?.redriven ?? r?.moved ?? r?.count ?? 0)} message(s)${to}.`);
          this.peek();
        } catch (e) { say(`Redrive failed: ${e.message}`, true); }
      }));
    }
    this.actions.append(
      act("Purge", "danger", async () => {
        if (!(await confirmAction(`Purge ${name}?`, `Drop every message now in ${name}. This cannot be undone.`, "Purge"))) return;
        try {
          const r = await api("POST", `${q(name)}/clear`);
          say(`Purged ${fmtNum(r.cleared)} message(s) from ${name}.`);
          this.peek();
        } catch (e) { say(`Purge failed: ${e.message}`, true); }
      }),
      act("Delete", "danger", async () => {
        if (!(await confirmAction(`Delete ${name}?`, `Delete the queue ${name} and every message in it. This cannot be undone.`, "Delete queue"))) return;
        this.paused = true; // no poll may ask for the queue once it is gone (a 404)
        await this.inflight;
        try {
          await api("DELETE", q(name));
          this.stopped = true;
          say(`Deleted queue ${name}.`);
          location.hash = "#/";
        } catch (e) {
          this.paused = false;
          say(`Delete failed: ${e.message}`, true);
        }
      }));
  }

  async peek() {
    const n = Math.max(1, Math.min(100, Number(this.max.value) || 10));
    let r;
    try { r = await api("GET", `${q(this.name)}/peek?max=${n}`); } catch (e) {
      this.peekNote.textContent = `Peek failed: ${e.message}`;
      return;
    }
    this.peekNote.textContent = r.messages.length
      ? `The first ${r.messages.length} of ${fmtNum(r.queue_size)} message(s), oldest first.`
      : "The queue is empty.";
    this.peeked.replaceChildren(...r.messages.map((m, i) => {
      let body, kindLabel, size;
      if (m.encoding === "base64") {
        const bytes = Uint8Array.from(atob(m.payload), (c) => c.charCodeAt(0));
        body = hexdump(bytes);
        kindLabel = "raw";
        size = m.size ?? bytes.length;
      } else {
        body = JSON.stringify(m.payload, null, 2);
        kindLabel = "JSON";
        size = m.size ?? utf8.encode(JSON.stringify(m.payload)).length; // stored compact
      }
      const facts = [`#${i + 1}`, kindLabel, fmtBytes(size), `enqueued ${fmtTime(m.enqueued_at)}`];
      return h("li", { class: "message" }, h("p", { class: "meta", text: facts.join(" · ") }),
        h("pre", { class: kindLabel === "raw" ? "hex" : "json", tabindex: 0 }, body));
    }));
  }

}

function route() {
  const m = location.hash.match(/^#\/queues\/(.+)$/);
  show(m ? new QueuePage(decodeURIComponent(m[1])) : new Overview());
  if (m) queueMicrotask(() => view.peek());
  $("#main").focus({ preventScroll: true });
}

document.documentElement.dataset.mode = MODE;
window.addEventListener("hashchange", route);
route();
