// The orch web console: one page, no build step, no library. Every text goes
// into the page with textContent (never innerHTML); the server decides every
// right, this page only hides what the role cannot do.
"use strict";

const STATES = ["active", "inactive", "initial", "failure", "in_transition"];
const STATE_LABEL = { active: "active", inactive: "inactive", initial: "initial", failure: "failure", in_transition: "in transition" };
const STATE_CLASS = { active: "s-active", inactive: "s-inactive", initial: "s-initial", failure: "s-failure", in_transition: "s-moving" };
const COLOR = { active: "#009e73", inactive: "#e69f00", initial: "#8c8c8c", failure: "#d55e00", in_transition: "#56b4e9" };
const SVGNS = "http://www.w3.org/2000/svg";

let session = null;     // {name, role, domains, csrf, jaeger}
let live = null;        // the EventSource of the current view
let refresh = null;     // re-renders the current view with fresh data
let refreshing = false, refreshAgain = false;
// Nodes a view keeps across its live re-renders (forms, open results), by
// key: what a person typed, chose or asked for stays while the data around
// it changes. Emptied when the view changes.
let keep = new Map();

function kept(key, make) {
  if (!keep.has(key)) keep.set(key, make());
  return keep.get(key);
}

// ---- small helpers ----------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;  // CSSOM: allowed by the page's CSP, unlike a style attribute
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(path, text) {
  return h("a", { href: path, "data-nav": true }, text);
}

function enc(name) { return encodeURIComponent(name); }

function stateTag(state) {
  if (!state) return h("span", { class: "muted" }, "-");
  return h("span", { class: "state" }, h("span", { class: "swatch " + (STATE_CLASS[state] || "") }), STATE_LABEL[state] || state);
}

function when(ms) {
  if (!ms) return "-";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function seconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }

function table(headers, rows, rowAttrs) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((row, i) => h("tr", rowAttrs ? rowAttrs(i) : {}, row.map((cell) => h("td", {}, cell))))));
}

function canOperate(domain) {
  if (!session || !["operator", "admin"].includes(session.role)) return false;
  return session.domains.length === 0 || session.domains.includes(domain);
}

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

async function api(path, body) {
  const options = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    if (session) options.headers["X-CSRF-Token"] = session.csrf;
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError("UNAVAILABLE", "the gateway does not answer; retrying when it does");
  }
  const data = await response.json().catch(() => ({ error: { code: "INTERNAL", message: "unreadable reply" } }));
  if (data.error) {
    if (data.error.code === "UNAUTHENTICATED" && path !== "/api/signin") {
      session = null;
      go("/signin");
    }
    throw new ApiError(data.error.code, data.error.message);
  }
  return data;
}

// An action's button: runs it, shows the outcome beside it as text.
function action(label, run, cls) {
  const note = h("span", { class: "message", role: "status" });
  const button = h("button", {
    class: cls || "", type: "button", onclick: async () => {
      button.disabled = true;
      note.className = "message muted";
      note.textContent = "…";
      try {
        const result = await run();
        note.className = "message ok";
        note.textContent = result || "done";
        scheduleRefresh();
      } catch (err) {
        note.className = "message error";
        note.textContent = (err.code ? err.code + ": " : "") + err.message;
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return [button, note];
}

// ---- navigation and live updates ---------------------------------------------

function go(path) {
  if (location.pathname + location.search !== path) history.pushState({}, "", path);
  route();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest && event.target.closest("a[data-nav]");
  if (a && a.origin === location.origin && !event.ctrlKey && !event.metaKey && event.button === 0) {
    event.preventDefault();
    go(a.pathname + a.search);
  }
});
window.addEventListener("popstate", route);

function setLive(text, on) {
  const badge = document.getElementById("live");
  badge.textContent = text;
  badge.className = "live " + (on ? "on" : "off");
}

function follow(params) {
  if (live) live.close();
  live = null;
  if (!params) { setLive("", true); return; }
  live = new EventSource("/api/live?" + new URLSearchParams(params).toString());
  live.addEventListener("status", (e) => {
    const status = JSON.parse(e.data).status;
    setLive(status === "live" ? "live" : "reconnecting…", status === "live");
  });
  live.addEventListener("change", () => scheduleRefresh());
  live.onerror = () => setLive("reconnecting…", false);
  live.onopen = () => setLive("live", true);
}

// Re-reads the current view, one read at a time, and paced: the next read
// waits at least three times as long as the last one took, so that a view of
// a large solution costs the gateway a bounded share of its time while a
// deploy runs.
let nextAllowed = 0;
async function scheduleRefresh() {
  if (!refresh) return;
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      const wait = nextAllowed - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const view = refresh;
      const started = performance.now();
      await view();
      nextAllowed = performance.now() + 3 * (performance.now() - started);
    } while (refreshAgain && refresh);
  } catch (err) {
    show(errorBox(err));
  } finally {
    refreshing = false;
  }
}

// Puts a view's nodes in the page. A kept node that had the focus gets it
// back, with its text selection, so typing goes on through a live update.
function show(...nodes) {
  const main = document.getElementById("main");
  const focused = document.activeElement;
  let selection = null;
  try { selection = focused && focused.selectionStart !== null ? [focused.selectionStart, focused.selectionEnd] : null; } catch (err) { selection = null; }
  main.replaceChildren(...nodes.flat());
  if (focused && focused !== document.body && focused.isConnected && document.activeElement !== focused) {
    focused.focus({ preventScroll: true });
    try { if (selection) focused.setSelectionRange(...selection); } catch (err) { /* not a text field */ }
  }
  main.dataset.renders = String(Number(main.dataset.renders || 0) + 1);
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, (err.code ? err.code + ": " : "") + err.message);
}

function header() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!session) { who.replaceChildren(); nav.replaceChildren(); return; }
  const where = session.domains.length ? session.domains.join(", ") : "all domains";
  who.replaceChildren(h("span", {}, `${session.name} (${session.role}, ${where})`),
    h("button", { type: "button", onclick: async () => { await api("/api/signout", {}); session = null; go("/signin"); } }, "Sign out"));
  nav.replaceChildren(link("/", "Overview"));
}

async function route() {
  const path = decodeURI(location.pathname);
  refresh = null;
  nextAllowed = 0;
  keep = new Map();
  follow(null);
  if (path === "/signin") { header(); return signin(); }
  if (!session) {
    try { session = await api("/api/session"); } catch (err) { return; }
  }
  header();
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  let view, params;
  if (parts.length === 0) { view = overview; params = {}; }
  else if (parts[0] === "domains" && parts[2] === "components") { view = () => components(parts[1]); }
  else if (parts[0] === "domains" && parts[2] === "architectures" && parts.length === 5) { view = () => architecture(parts[1], parts[3], parts[4]); }
  else if (parts[0] === "domains" && parts[2] === "solutions" && parts.length === 4) { view = () => solution(parts[1], parts[3]); params = { domain: parts[1], solution: parts[3] }; }
  else if (parts[0] === "domains" && parts[2] === "events") { view = () => events(parts[1]); params = { domain: parts[1] }; }
  else if (parts[0] === "tasks" && parts.length === 2) { view = () => task(parts[1]); params = {}; }
  else { show(h("h1", {}, "Not found"), h("p", {}, "No view at ", path, ". "), link("/", "Overview")); return; }
  refresh = view;
  await scheduleRefresh();
  if (params) follow(params);
}

// ---- sign-in ------------------------------------------------------------------

function signin() {
  const input = h("input", { type: "password", name: "token", autocomplete: "off", "aria-label": "token", placeholder: "token" });
  const note = h("p", { class: "error", role: "alert" });
  const form = h("form", {
    class: "signin", onsubmit: async (event) => {
      event.preventDefault();
      note.textContent = "";
      try {
        session = await api("/api/signin", { token: input.value });
        go("/");
      } catch (err) {
        note.textContent = err.message;
      }
    },
  }, h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste a token: the one in $ORCH_HOME/token, or one made with `orch token create`."),
    input, h("button", { class: "primary", type: "submit" }, "Sign in"), note);
  show(form);
  input.focus();
}

// ---- overview -----------------------------------------------------------------

async function overview() {
  const data = await api("/api/overview");
  const sections = data.domains.map((d) => h("section", { class: "card", "data-domain": d.name },
    h("h2", {}, "Domain ", d.name, " "), h("div", { class: "actions" },
      link(`/domains/${enc(d.name)}/components`, "catalog and architectures"), link(`/domains/${enc(d.name)}/events`, "events")),
    d.solutions.length ? table(["solution", "architecture", "state", "target", "instances", ...STATES.map((x) => STATE_LABEL[x])],
      d.solutions.map((x) => [link(`/domains/${enc(d.name)}/solutions/${enc(x.name)}`, x.name), `${x.architecture} ${x.version}`,
        h("span", {}, stateTag(x.state), x.hold ? h("span", { class: "badge " + x.hold }, " " + x.hold) : ""), stateTag(x.target),
        x.counts.instances, ...STATES.map((k) => x.counts[k])]))
      : h("p", { class: "muted" }, "No solutions."),
    h("h2", {}, "Running tasks"),
    d.running.length ? table(["task", "solution", "status", "by", "since"],
      d.running.map((t) => [link(`/tasks/${t.uuid}`, t.uuid.slice(0, 8)), t.solution, t.status, t.actor, when(t.created_ms)]))
      : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Latest events"),
    d.events.length ? table(["time", "type", "solution", "about", "task", "comment"],
      d.events.map((e) => [when(e.time_ms), e.type, e.solution || "-", about(e), link(`/tasks/${e.task}`, e.task.slice(0, 8)), e.comment]))
      : h("p", { class: "muted" }, "None.")));
  show(h("h1", {}, "Overview"), sections.length ? sections : h("p", { class: "muted" }, "No domain to show."));
}

// What an event is about, in a few words: element, cluster, instance, transition, state.
function about(e) {
  return [e.element, e.cluster, e.instance && e.instance.slice(0, 8), e.transition, e.state && `(${e.state})`].filter(Boolean).join(" ") || "-";
}

// ---- catalog and architectures ------------------------------------------------

async function components(domain) {
  const data = await api(`/api/domains/${enc(domain)}/components`);
  show(h("h1", {}, `Catalog of ${domain}`),
    h("section", { class: "card" }, h("h2", {}, "Architectures"),
      table(["architecture", "version"], data.architectures.map((a) => [
        link(`/domains/${enc(domain)}/architectures/${enc(a.name)}/${enc(a.version)}`, a.name), a.version]))),
    h("section", { class: "card" }, h("h2", {}, "Components"),
      table(["component", "version", "controller", "dependencies"], data.components.map((c) => [c.name, c.version, c.controller,
        c.dependencies.map((d) => `${d.name} (${d.type}: ${d.component} ${d.version})`).join(", ") || "-"]))));
}

async function architecture(domain, name, version) {
  const data = await api(`/api/domains/${enc(domain)}/architectures/${enc(name)}/${enc(version)}`);
  const rows = [];
  for (const e of data.elements) {
    for (const c of e.clusters) {
      rows.push([e.name, e.component, c.version, `${c.min}..${c.max}`, c.size, c.state,
        c.relationships.map((r) => `${r.name} → ${r.element} (${r.type})`).join(", ") || "-"]);
    }
  }
  show(h("h1", {}, `Architecture ${name} ${version}`), h("p", {}, link(`/domains/${enc(domain)}/components`, `catalog of ${domain}`)),
    canOperate(domain) ? kept("deploy", () => deployForm(domain, data)) : "",
    h("section", { class: "card" }, legend(false), graph(data.elements, null)),
    h("section", { class: "card" }, h("h2", {}, "Elements and clusters"),
      table(["element", "component", "cluster", "min..max", "size", "state", "relationships"], rows)));
}

// A plan's transitions (its first 500) into `into`, titled; the line beside the Plan button.
function showPlan(into, result, what) {
  into.replaceChildren(h("h2", {}, `Plan: ${result.transitions.length} transitions ${what}`),
    table(["element", "cluster", "instance", "transition", "waits for"],
      result.transitions.slice(0, 500).map((t) => [t.element, t.cluster, t.instance, t.transition, t.waits_for.join(", ") || "-"])));
  return `${result.transitions.length} transitions`;
}

// Deploy a solution from this architecture: its name, a size per cluster
// (the architecture's by default), a plan to look at, then the deploy,
// which opens the solution's page.
function deployForm(domain, data) {
  const name = h("input", { value: data.name, "aria-label": "solution name", style: "width:12rem" });
  const sizes = [];
  for (const e of data.elements) {
    for (const c of e.clusters) {
      const input = h("input", { type: "number", value: c.size, min: c.min, max: c.max, style: "width:5rem",
        "aria-label": `size of ${e.name} ${c.version}` });
      sizes.push([`${e.name}/${c.version}`, input, c]);
    }
  }
  const body = () => ({ architecture: data.name, version: data.version,
    sizes: Object.fromEntries(sizes.filter(([, input, c]) => Number(input.value) !== c.size).map(([key, input]) => [key, Number(input.value)])) });
  const base = () => `/api/domains/${enc(domain)}/solutions/${enc(name.value.trim())}`;
  const plan = h("div", { "data-plan": true });
  const [planButton, planNote] = action("Plan", async () => {
    return showPlan(plan, await api(`${base()}/plan`, body()), `for ${name.value.trim()}`);
  });
  const [deployButton, deployNote] = action("Deploy", async () => {
    const r = await api(`${base()}/deploy`, body());
    go(`/domains/${enc(domain)}/solutions/${enc(name.value.trim())}`);
    return `task ${r.task.slice(0, 8)}`;
  }, "primary");
  return h("section", { class: "card", "data-deploy": true }, h("h2", {}, "Deploy a solution from this architecture"),
    h("form", { class: "actions", onsubmit: (e) => e.preventDefault() }, h("label", {}, "solution ", name),
      sizes.map(([key, input, c]) => h("label", {}, `${key} (${c.min}..${c.max}) `, input)), planButton, deployButton),
    planNote, deployNote, plan);
}

// ---- the element graph --------------------------------------------------------

function legend(withStates) {
  return h("div", { class: "legend" }, h("span", {}, "── context relationship"), h("span", {}, "- - service relationship"),
    h("span", {}, "arrows point to the provider"),
    withStates ? STATES.map((x) => stateTag(x)) : []);
}

// Elements in columns: providers on the left, each dependant right of all it depends on.
function graph(elements, counts) {
  const byName = new Map(elements.map((e) => [e.name, e]));
  const edges = [];
  for (const e of elements) {
    const seen = new Set();
    for (const c of e.clusters) {
      for (const r of c.relationships) {
        const key = r.element + "|" + r.type;
        if (byName.has(r.element) && !seen.has(key)) { seen.add(key); edges.push({ from: e.name, to: r.element, type: r.type }); }
      }
    }
  }
  const depth = new Map();
  const level = (name, trail) => {
    if (depth.has(name)) return depth.get(name);
    if (trail.has(name)) return 0;
    trail.add(name);
    const providers = edges.filter((x) => x.from === name).map((x) => level(x.to, trail) + 1);
    trail.delete(name);
    const value = providers.length ? Math.max(...providers) : 0;
    depth.set(name, value);
    return value;
  };
  elements.forEach((e) => level(e.name, new Set()));
  const columns = [];
  for (const e of [...elements].sort((a, b) => a.name.localeCompare(b.name))) {
    const d = depth.get(e.name);
    (columns[d] = columns[d] || []).push(e);
  }
  const W = 190, GAP = 46, ROW = 18, PAD = 10;
  const boxes = new Map();
  let height = 0;
  columns.forEach((column, ci) => {
    let y = PAD;
    for (const e of column) {
      const h_ = 26 + e.clusters.length * (counts ? ROW * 2 : ROW) + 6;
      boxes.set(e.name, { x: PAD + ci * (W + GAP), y, w: W, h: h_, e });
      y += h_ + 18;
    }
    height = Math.max(height, y);
  });
  const width = PAD * 2 + columns.length * (W + GAP);
  const svg = s("svg", { width, height: height + PAD, viewBox: `0 0 ${width} ${height + PAD}`, role: "img",
    "aria-label": `graph of ${elements.length} elements` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#5c6475" }))));
  for (const edge of edges) {
    const a = boxes.get(edge.from), b = boxes.get(edge.to);
    const x1 = a.x, y1 = a.y + 14, x2 = b.x + b.w, y2 = b.y + 14;
    svg.append(s("path", { d: `M${x1},${y1} C${x1 - GAP / 2},${y1} ${x2 + GAP / 2},${y2} ${x2},${y2}`, fill: "none",
      stroke: "#5c6475", "stroke-width": 1.4, "stroke-dasharray": edge.type === "service" ? "5,4" : "none",
      "marker-end": "url(#arrow)", "data-edge": `${edge.from}->${edge.to}`, "data-type": edge.type },
    s("title", {}, `${edge.from} depends on ${edge.to} (${edge.type})`)));
  }
  for (const { x, y, w, h: hh, e } of boxes.values()) {
    const group = s("g", { "data-element": e.name });
    group.append(s("rect", { x, y, width: w, height: hh, rx: 5, fill: "#fff", stroke: "#1d2330", "stroke-width": 1.2 }));
    group.append(s("text", { x: x + 8, y: y + 17, "font-weight": 700, "font-size": 13 }, e.name),
      s("text", { x: x + w - 8, y: y + 17, "font-size": 11, "text-anchor": "end", fill: "#5c6475" }, e.component));
    let cy = y + 26;
    for (const c of e.clusters) {
      const count = counts ? counts.get(e.name + "|" + c.version) : null;
      const state = count ? count.state : null;
      if (state) group.append(s("rect", { x: x + 6, y: cy + 3, width: 10, height: 10, fill: COLOR[state], stroke: "#0003" }));
      // A solution's cluster: its size now (resizes included); an architecture's: the size it asks for.
      const label = `${c.version} [${c.min}..${c.max}] size ${count ? count.size : c.size}`;
      group.append(s("text", { x: x + (state ? 21 : 8), y: cy + 12, "font-size": 11, "data-cluster": c.version }, label));
      cy += ROW;
      if (count) {
        const text = STATES.filter((k) => count[k]).map((k) => `${count[k]} ${STATE_LABEL[k]}`).join(", ") || "no instances";
        group.append(s("text", { x: x + 21, y: cy + 10, "font-size": 10, fill: "#1d2330", "data-counts": `${e.name}/${c.version}` }, text));
        cy += ROW;
      }
    }
    svg.append(group);
  }
  return h("div", { class: "graph" }, svg);
}

// ---- a solution ----------------------------------------------------------------

let selected = null; // {element, cluster, offset} of the instance table shown
let taskList = null;  // {solution, tasks}: the solution's root tasks, read when asked for
let revisionShown = null;  // {base, number, from, changes}: the revision whose changes are shown

async function solution(domain, name) {
  const base = `/api/domains/${enc(domain)}/solutions/${enc(name)}`;
  let data;
  try {
    data = await api(base);
  } catch (err) {
    if (err.code !== "NOT_FOUND") throw err;
    return gone(domain, name, err.message);
  }
  const counts = new Map(data.clusters.map((c) => [c.element + "|" + c.cluster, c]));
  const operate = canOperate(domain);
  const parts = [h("h1", {}, `Solution ${data.name} `, data.hold ? h("span", { class: "badge " + data.hold }, data.hold) : ""),
    h("p", {}, `${data.architecture} ${data.version} · state `, stateTag(data.state), " · target ", stateTag(data.target),
      ` · on failure: ${data.on_failure} · `, link(`/domains/${enc(domain)}/events?solution=${enc(name)}`, "events"))];
  if (data.hold) parts.push(h("p", { class: "error" }, `${data.hold}: ${data.hold_reason} (by ${data.hold_actor})`));
  if (data.pause) {
    const p = data.pause;
    parts.push(h("p", { class: "banner paused", "data-paused": p.actor },
      `Paused by ${p.actor} since ${dateTime(p.since_ms)}${p.reason ? ": " + p.reason : ""}. `,
      p.actor === "approval" ? "An approver decides (the revision's row in the history below)."
        : [p.acknowledged_ms ? `Task ${p.task.slice(0, 8)} starts no more operations (those in flight finish).`
          : "Its next change will wait.", " Resume goes on where it stopped."]));
  }
  if (operate) parts.push(kept("actions", () => actions(domain, name, base)).update(data));
  if (data.running) {
    const done = data.clusters.reduce((n, c) => n + c.instances - c.in_transition, 0);
    const total = data.clusters.reduce((n, c) => n + c.instances, 0) || 1;
    parts.push(h("section", { class: "card", "data-running": data.running.uuid }, h("h2", {}, "Running task"),
      h("p", {}, link(`/tasks/${data.running.uuid}`, data.running.uuid), ` ${data.running.status}, by ${data.running.actor}`),
      h("div", { class: "bar", title: `${done} of ${total}` }, h("span", { style: `width:${(100 * done / total).toFixed(1)}%` })),
      table(["element", "progress", ""], groupBy(data.clusters, (c) => c.element).map(([element, list]) => {
        const n = list.reduce((a, c) => a + c.instances, 0) || 1, ok = list.reduce((a, c) => a + c.instances - c.in_transition, 0);
        return [element, h("div", { class: "bar" }, h("span", { style: `width:${(100 * ok / n).toFixed(1)}%` })), `${ok}/${n}`];
      }))));
  }
  for (const r of data.rollouts || []) {
    parts.push(h("section", { class: "card", "data-rollout": r.element }, h("h2", {}, `Rollout of ${r.element} to ${r.version}`),
      h("p", {}, `batch ${Math.min(r.done + 1, r.batches)} of ${r.batches} (${r.batch} at a time) · ${r.active} of ${r.size} new active · `,
        r.old.map((o) => `${o.instances} of ${o.cluster} leaving`).join(", "),
        r.waiting ? h("strong", {}, " · waiting for approval: Resume approves the next batch, a rollback rejects") : ""),
      h("div", { class: "batches" }, Array.from({ length: r.batches }, (_, i) =>
        h("span", { class: i < r.done ? "done" : i === r.done ? "now" : "", title: `batch ${i + 1}` }, String(i + 1))))));
  }
  parts.push(h("section", { class: "card" }, legend(true), graph(data.graph.elements, counts)));
  const rows = data.clusters.map((c) => [c.element, c.cluster, stateTag(c.state), stateTag(c.target), c.instances,
    ...STATES.map((k) => c[k]), operate ? kept(`resize|${c.element}|${c.cluster}`, () => resize(domain, name, c, data.graph)).update(c) : ""]);
  parts.push(h("section", { class: "card" }, h("h2", {}, "Clusters"),
    h("p", { class: "muted" }, "Select a cluster to list its instances."),
    table(["element", "cluster", "state", "target", "instances", ...STATES.map((k) => STATE_LABEL[k]), ""], rows, (i) => ({
      class: "clickable" + (selected && selected.element === data.clusters[i].element && selected.cluster === data.clusters[i].cluster ? " selected" : ""),
      "data-cluster-row": `${data.clusters[i].element}/${data.clusters[i].cluster}`,
      onclick: (event) => { if (event.target.closest("form")) return; selected = { element: data.clusters[i].element, cluster: data.clusters[i].cluster, offset: 0 }; scheduleRefresh(); },
    }))));
  if (selected && counts.has(selected.element + "|" + selected.cluster)) parts.push(await instances(base, selected));
  const tasks = h("section", { class: "card" }, h("h2", {}, "Tasks"));
  if (taskList && taskList.solution === base) {
    tasks.append(table(["task", "status", "by", "created", "error"],
      taskList.tasks.map((t) => [link(`/tasks/${t.uuid}`, t.uuid.slice(0, 8)), t.status, t.actor, when(t.created_ms), t.error])));
  } else {
    tasks.append(h("button", { type: "button", onclick: async () => {
      taskList = { solution: base, tasks: (await api(`${base}/tasks`)).tasks }; scheduleRefresh(); } }, "Show the solution's tasks"));
  }
  parts.push(tasks);
  parts.push(await revisionHistory(base, operate));
  show(parts);
}

// The solution's revisions, newest first: who asked for which change, why,
// and how it ended; select one to see what it changed against the one
// before; an operator may roll back to one (a new revision).
async function revisionHistory(base, operate) {
  const data = await api(`${base}/history`);
  const card = h("section", { class: "card", "data-history": true }, h("h2", {}, "History"));
  if (!data.revisions.length) return card.append(h("p", { class: "muted" }, "No revisions yet.")), card;
  card.append(h("p", { class: "muted" }, "Each change is a revision. Select one to see what it changed."));
  const numbers = data.revisions.map((r) => r.number);
  const rows = data.revisions.map((r) => [String(r.number), dateTime(r.created_ms), r.actor, r.summary,
    h("span", { class: `outcome ${r.outcome}${r.bad ? " bad" : ""}`, title: r.error || "" }, r.outcome + (r.bad ? ", bad" : "")),
    r.reason || "-",
    r.outcome === "awaiting-approval" && canApprove(base, r, data.self_approval)
      ? kept(`decide|${base}|${r.number}`, () => decide(base, r))
      : operate && !r.bad && r.change !== "remove" && r.number !== numbers[0]
        ? kept(`rollback|${base}|${r.number}`, () => rollbackTo(base, r)) : ""]);
  card.append(table(["rev", "time", "by", "change", "outcome", "reason", ""], rows, (i) => ({
    class: "clickable" + (revisionShown && revisionShown.base === base && revisionShown.number === numbers[i] ? " selected" : ""),
    "data-revision": numbers[i],
    onclick: async (event) => {
      if (event.target.closest("button, form")) return;
      const number = numbers[i], older = numbers.find((n) => n < number);
      const changes = older ? (await api(`${base}/diff?from=${older}&to=${number}`)).changes : null;
      revisionShown = { base, number, from: older, changes };
      scheduleRefresh();
    },
  })));
  if (revisionShown && revisionShown.base === base && numbers.includes(revisionShown.number)) {
    const { number, from, changes } = revisionShown;
    card.append(h("div", { "data-diff": number }, h("h3", {}, from ? `Revision ${number} against ${from}` : `Revision ${number}`),
      changes === null ? h("p", { class: "muted" }, "the oldest revision kept: nothing to compare it with")
        : changes.length ? h("ul", {}, changes.map((c) => h("li", {}, c)))
          : h("p", { class: "muted" }, "it asks for the same as the revision before")));
  }
  return card;
}

function rollbackTo(base, revision) {
  const reason = h("input", { placeholder: "why (optional)", "aria-label": `reason to roll back to ${revision.number}`, style: "width:9rem" });
  const [button, note] = action(`Roll back to ${revision.number}`, async () => {
    const r = await api(`${base}/rollback`, { to: revision.number, reason: reason.value });
    reason.value = "";
    return `task ${r.task.slice(0, 8)}`;
  });
  return h("form", { onsubmit: (e) => e.preventDefault() }, reason, button, note);
}

// Approvers and admins of the solution's domain decide on a change that
// awaits approval, never one they asked for unless the domain's policy allows
// it (the gateway refuses it too).
function canApprove(base, revision, selfApproval) {
  const domain = decodeURIComponent(base.split("/")[3]);
  if (!session || !["approver", "admin"].includes(session.role)) return false;
  if (revision.actor === session.name && !selfApproval) return false;
  return session.domains.length === 0 || session.domains.includes(domain);
}

function decide(base, revision) {
  const reason = h("input", { placeholder: "why (optional)", "aria-label": `reason for revision ${revision.number}`, style: "width:9rem" });
  const [approve, approveNote] = action("Approve", async () => {
    const r = await api(`${base}/approve`, { revision: revision.number, reason: reason.value });
    return `task ${r.task.slice(0, 8)} goes on`;
  }, "primary");
  const [reject, rejectNote] = action("Reject", async () => {
    const r = await api(`${base}/reject`, { revision: revision.number, reason: reason.value });
    return `task ${r.task.slice(0, 8)} ends`;
  }, "danger");
  return h("form", { onsubmit: (e) => e.preventDefault(), "data-decide": revision.number }, reason, approve, reject, approveNote, rejectNote);
}

function dateTime(ms) { return ms ? new Date(ms).toLocaleString([], { hour12: false }) : "-"; }

// A solution that is not there: removed (the gateway says by whom, when and
// by which task), not planned yet, or never deployed. The page stays live:
// deployed again, the solution shows here.
function gone(domain, name, message) {
  const removed = /was removed/.test(message);
  const task = (message.match(/task ([0-9a-f-]{36})/) || [])[1];
  show(h("h1", {}, `Solution ${name}`),
    h("section", { class: "card", "data-gone": removed ? "removed" : "missing" },
      h("h2", {}, removed ? "Removed" : "Not here"), h("p", {}, message),
      h("p", {}, task ? [link(`/tasks/${task}`, "the task that removed it"), " · "] : "",
        link(`/domains/${enc(domain)}/events?solution=${enc(name)}`, "its events"), " · ",
        link(`/domains/${enc(domain)}/components`, `deploy from the catalog of ${domain}`))));
}

function groupBy(list, key) {
  const groups = new Map();
  for (const item of list) { const k = key(item); if (!groups.has(k)) groups.set(k, []); groups.get(k).push(item); }
  return [...groups.entries()];
}

async function instances(base, sel) {
  const q = new URLSearchParams({ element: sel.element, cluster: sel.cluster, offset: sel.offset });
  const data = await api(`${base}/instances?${q}`);
  const pager = h("div", { class: "actions" },
    h("button", { type: "button", disabled: sel.offset === 0, onclick: () => { sel.offset = Math.max(0, sel.offset - data.page); scheduleRefresh(); } }, "Previous"),
    h("span", {}, `${data.total ? sel.offset + 1 : 0}–${Math.min(sel.offset + data.page, data.total)} of ${data.total}`),
    h("button", { type: "button", disabled: sel.offset + data.page >= data.total, onclick: () => { sel.offset += data.page; scheduleRefresh(); } }, "Next"));
  return h("section", { class: "card", "data-instances": `${sel.element}/${sel.cluster}` },
    h("h2", {}, `Instances of ${sel.element} ${sel.cluster}`), pager,
    table(["uuid", "state", "target", "endpoint", "last error"],
      data.instances.map((i) => [i.uuid, stateTag(i.state), stateTag(i.target), i.endpoint || "-", i.error || ""])));
}

// A field the page fills from its data until the person changes it: then it
// keeps what they typed or chose, until the action that sends it succeeds.
function follows(field) {
  field.addEventListener("input", () => { field.dataset.touched = "1"; });
  field.addEventListener("change", () => { field.dataset.touched = "1"; });
  return (value) => { if (!field.dataset.touched) field.value = value; };
}

function untouch(...fields) {
  for (const field of fields) delete field.dataset.touched;
}

// A cluster's resize form, made once per visit (see `kept`); `update` fills
// its size from the latest data unless the person is changing it.
function resize(domain, name, c, graphData) {
  const element = (graphData.elements || []).find((e) => e.name === c.element);
  const config = element && element.clusters.find((x) => x.version === c.cluster);
  const input = h("input", { type: "number", value: c.size, min: config ? config.min : 0, max: config ? config.max : undefined,
    style: "width:5rem", "aria-label": `size of ${c.element} ${c.cluster}` });
  const fill = follows(input);
  const [button, note] = action("Resize", async () => {
    const r = await api(`/api/domains/${enc(domain)}/solutions/${enc(name)}/resize`,
      { element: c.element, cluster: c.cluster, size: Number(input.value) });
    untouch(input);
    return `task ${r.task.slice(0, 8)}`;
  });
  const form = h("form", { onsubmit: (e) => e.preventDefault() }, input, button, note);
  form.update = (latest) => { fill(latest.size); return form; };
  return form;
}

// The solution's actions, made once per visit of its page (see `kept`):
// `update` shows the buttons the latest data allows and returns the section.
function actions(domain, name, base) {
  let current = null;
  const arch = h("input", { "aria-label": "architecture", style: "width:8rem" });
  const version = h("input", { "aria-label": "version", style: "width:6rem" });
  const plan = h("div", { "data-plan": true });
  const [planButton, planNote] = action("Plan", async () => {
    return showPlan(plan, await api(`${base}/plan`, { architecture: arch.value, version: version.value }),
      `to ${arch.value} ${version.value}`);
  });
  const [deployButton, deployNote] = action("Deploy", async () => {
    const r = await api(`${base}/deploy`, { architecture: arch.value, version: version.value });
    untouch(arch, version);
    return `task ${r.task.slice(0, 8)}`;
  }, "primary");
  const state = h("select", { "aria-label": "state" }, ["active", "inactive", "initial"].map((x) => h("option", { value: x }, x)));
  const [stateButton, stateNote] = action("Set state", async () => {
    const r = await api(`${base}/state`, { state: state.value });
    untouch(state);
    return `task ${r.task.slice(0, 8)}`;
  });
  const fillArch = follows(arch), fillVersion = follows(version), fillState = follows(state);
  const [terminateButton, terminateNote] = action("Terminate", async () => {
    await api(`${base}/terminate`, { task: current.running.uuid });
    return "terminated";
  }, "danger");
  const [resumeButton, resumeNote] = action("Resume", async () => `task ${(await api(`${base}/resume`, {})).task.slice(0, 8)}`, "primary");
  const [pauseButton, pauseNote] = action("Pause", async () => `paused by ${(await api(`${base}/pause`, {})).paused}`);
  const confirm = h("input", { placeholder: `type ${name} to delete`, "aria-label": "confirm delete", style: "width:11rem" });
  const [deleteButton, deleteNote] = action("Delete", async () => `task ${(await api(`${base}/delete`, { confirm: confirm.value })).task.slice(0, 8)}`, "danger");
  const section = h("section", { class: "card" }, h("h2", {}, "Actions"), h("div", { class: "actions" },
    h("form", { onsubmit: (e) => e.preventDefault() }, arch, version, planButton, deployButton), planNote, deployNote,
    h("form", { onsubmit: (e) => e.preventDefault() }, state, stateButton), stateNote,
    pauseButton, pauseNote, terminateButton, terminateNote, resumeButton, resumeNote,
    h("form", { onsubmit: (e) => e.preventDefault() }, confirm, deleteButton), deleteNote), plan);
  section.update = (data) => {
    // The latest data fills the fields the person has not changed.
    fillArch(data.architecture);
    fillVersion(data.version);
    fillState(data.target);
    current = data;
    terminateButton.hidden = !data.running;
    resumeButton.hidden = !data.hold && (!data.pause || data.pause.actor === "approval");
    pauseButton.hidden = !!data.pause;
    return section;
  };
  return section;
}

// ---- a task: its tree and timeline ---------------------------------------------

async function task(uuid) {
  const data = await api(`/api/tasks/${enc(uuid)}`);
  const byId = new Map(data.tasks.map((t) => [t.uuid, t]));
  const depthOf = (t) => { let d = 0; while (t.parent && byId.has(t.parent)) { t = byId.get(t.parent); d += 1; } return d; };
  const root = data.root;
  const trace = root.trace ? (session.jaeger ? h("a", { href: `${session.jaeger}/trace/${root.trace}`, rel: "noopener" }, root.trace) : root.trace) : "-";
  show(h("h1", {}, `Task ${root.uuid}`),
    h("p", {}, `${root.type} of `, link(`/domains/${enc(data.domain)}/solutions/${enc(root.solution)}`, root.solution),
      ` · ${root.status} · by ${root.actor || "-"} · ${took(root)} · trace `, trace),
    root.error ? h("p", { class: "error" }, root.error) : "",
    root.summary ? h("p", { class: "muted" }, `Its tree was pruned: ${root.summary.tasks} subtasks, ${root.summary.completed} completed, ` +
      `${root.summary.failed} failed, ${root.summary.stopped} timed out or terminated.`) : "",
    h("section", { class: "card" }, h("h2", {}, data.timeline.by === "cluster"
      ? `Timeline: ${data.timeline.instances} instance tasks in ${data.timeline.bars.length} clusters`
      : `Timeline: ${data.timeline.instances} instance tasks`), timeline(data.timeline, root)),
    h("section", { class: "card tree" }, h("h2", {}, `Tree: ${data.total} tasks`),
      data.total > data.tasks.length ? h("p", { class: "muted" }, `the first ${data.tasks.length} shown (the root, its elements and clusters first)`) : "",
      table(["task", "type", "what", "status", "duration", "error"], data.tasks.map((t) => [
        "\u00a0\u00a0".repeat(depthOf(t)) + t.uuid.slice(0, 8), t.type,
        [t.element, t.cluster, t.instance && t.instance.slice(0, 8), t.transition].filter(Boolean).join(" "),
        t.status, took(t), t.error]))));
}

// How long a task ran: from the start of its execution to its end (or now);
// from its creation when no start is recorded (a task stored before tasks recorded it).
function took(t) {
  const start = t.started_ms || (t.ended ? t.created_ms : 0);
  if (!start) return "waiting";
  return seconds((t.ended ? t.updated_ms : Date.now()) - start) + (t.ended ? "" : " so far");
}

function timeline(data, root) {
  // One row per instance task, or (a big tree: data.by is "cluster") one per
  // cluster, from its first instance's start to its last one's end.
  const bars = data.bars;
  if (!bars.length) return h("p", { class: "muted" }, "No transitions.");
  // From the root's start (its request accepted, if it never started) to its end, or now.
  const start = Math.min(root.started_ms || root.created_ms, ...bars.map((b) => b.start_ms));
  const end = Math.max(root.ended ? root.updated_ms : Date.now(), ...bars.map((b) => b.end_ms), start + 1);
  const LABEL = 260, W = 900, ROW = 14;
  const byCluster = data.by === "cluster";
  const rows = byCluster ? bars.map((b) => [`${b.element} ${b.cluster} · ${b.instances}`, [b]])
    : groupBy(bars, (b) => `${b.element} ${b.cluster} ${b.instance.slice(0, 8)}`);
  const shown = rows.slice(0, 400);
  const svg = s("svg", { width: LABEL + W + 20, height: shown.length * ROW + 30, role: "img",
    "aria-label": `timeline of ${data.instances} instance tasks` });
  const x = (ms) => LABEL + (W * (ms - start)) / (end - start);
  svg.append(s("text", { x: LABEL, y: 12, "font-size": 10, fill: "#5c6475" }, "0 s"),
    s("text", { x: LABEL + W, y: 12, "font-size": 10, fill: "#5c6475", "text-anchor": "end" }, seconds(end - start)));
  const colorOf = (statuses) => statuses.some((st) => st === "failed" || st === "timeout") ? COLOR.failure
    : statuses.every((st) => st === "completed") ? COLOR.active : COLOR.in_transition;
  shown.forEach(([label, list], i) => {
    const y = 20 + i * ROW;
    svg.append(s("text", { x: 4, y: y + 10, "font-size": 10 }, label));
    for (const b of list) {
      const geometry = { x: x(b.start_ms), y: y + 1, width: Math.max(2, x(b.end_ms) - x(b.start_ms)), height: ROW - 3 };
      if (byCluster) {
        const counts = Object.entries(b.statuses).map(([st, n]) => `${n} ${st}`).join(", ");
        svg.append(s("rect", { ...geometry, fill: colorOf(Object.keys(b.statuses)), "data-cluster-bar": `${b.element} ${b.cluster}` },
          s("title", {}, `${b.element} ${b.cluster}: ${b.instances} instance tasks (${counts}), ${seconds(b.end_ms - b.start_ms)} from the first start to the last end`)));
      } else {
        svg.append(s("rect", { ...geometry, fill: colorOf([b.status]), "data-bar": b.task },
          s("title", {}, `${b.element} ${b.cluster} ${b.instance} ${b.transition}: ${b.status}, ${seconds(b.end_ms - b.start_ms)}${b.error ? " — " + b.error : ""}`)));
      }
    }
  });
  const note = rows.length > shown.length ? h("p", { class: "muted" }, `first ${shown.length} of ${rows.length} ${byCluster ? "clusters" : "instances"} shown`)
    : byCluster ? h("p", { class: "muted" }, "one row per cluster (element, version, instance tasks): hover a bar for its statuses") : "";
  return h("div", { class: "graph" }, svg, note);
}

// ---- events --------------------------------------------------------------------

const EVENT_TYPES = ["execution", "completion", "failure", "timeout", "termination", "drift", "degraded"];
const TRANSITIONS = ["create", "configure", "start", "reconfigure", "stop", "destroy", "reset"];

async function events(domain) {
  const q = new URLSearchParams(location.search);
  const data = await api(`/api/domains/${enc(domain)}/events?${q}`);
  const filters = kept("filters", () => {
    const field = (name, label) => h("input", { name, value: q.get(name) || "", placeholder: label, "aria-label": label, style: "width:9rem" });
    const choice = (name, label, values) => h("select", { name, "aria-label": label },
      h("option", { value: "" }, `any ${label}`), values.map((v) => h("option", { value: v, selected: q.get(name) === v }, v)));
    return h("form", {
      class: "actions", "data-filters": true, onsubmit: (e) => {
        e.preventDefault();
        const next = new URLSearchParams([...new FormData(e.target).entries()].filter(([, v]) => v));
        go(`/domains/${enc(domain)}/events${next.toString() ? "?" + next : ""}`);
      },
    }, field("solution", "solution"), field("element", "element"), field("cluster", "cluster"), field("instance", "instance"),
    choice("type", "type", EVENT_TYPES), choice("transition", "transition", TRANSITIONS),
    choice("state", "state", ["initial", "inactive", "active", "failure"]), field("task", "task"),
    h("button", { type: "submit" }, "Filter"), link(`/domains/${enc(domain)}/events`, "clear"));
  });
  // A cell that narrows the list to its value when clicked.
  const narrow = (key, value, text) => {
    if (!value) return "-";
    const next = new URLSearchParams(q);
    next.set(key, value);
    return link(`/domains/${enc(domain)}/events?${next}`, text || value);
  };
  show(h("h1", {}, `Events of ${domain}`), filters,
    h("p", { class: "muted" }, `${data.events.length} of ${data.total} matching shown, newest first (the latest 10,000 events of the domain unless a whole task id is named); click a value to narrow to it`),
    table(["time", "type", "solution", "element", "cluster", "instance", "transition", "state", "by", "task", "comment"],
      data.events.map((e) => [when(e.time_ms), narrow("type", e.type), narrow("solution", e.solution), narrow("element", e.element),
        narrow("cluster", e.cluster), narrow("instance", e.instance, e.instance.slice(0, 8)), narrow("transition", e.transition),
        e.state ? stateTag(e.state) : "-", e.actor || "-", link(`/tasks/${e.task}`, e.task.slice(0, 8)), e.comment]),
      (i) => ({ "data-event": data.events[i].uuid })));
}

route();
