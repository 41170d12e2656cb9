// regpin console: a small page over the admin API, no library, nothing fetched from elsewhere.
// Every value from the server is put in the page as text (textContent), never as HTML.
"use strict";

(() => {
  const state = { csrf: "", name: "", scope: "admin", poll: null };
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const account = document.getElementById("account");

  // --- helpers -------------------------------------------------------------------------------

  // el("a", {href: "#/pins", class: "x", onclick: fn}, "text", child, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Replaces what <main> shows; null and false parts are left out.
  function show(...parts) {
    main.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));
  }

  function announce(message) {
    const box = document.getElementById("announce");
    box.textContent = "";
    setTimeout(() => { box.textContent = message; }, 50);
  }

  const shortDigest = (d) => (d ? d.slice(0, 19) + "…" : "—");
  const digestCode = (d) => (d ? el("code", { class: "digest", title: d }, d) : "—");
  const badge = (s) => el("span", { class: "state state-" + s }, s);
  const when = (t) => (t ? el("time", { datetime: t }, t.replace("T", " ").replace(/\.\d+Z$/, " UTC")) : "—");
  const pinLink = (registry, repository, tag, text) =>
    el("a", { href: "#/pin?" + new URLSearchParams({ registry, repository, tag }) }, text);

  function table(caption, columns, rows) {
    return el("div", { class: "table-wrap" },
      el("table", { class: "stack" },
        el("caption", { class: "visually-hidden" }, caption),
        el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
        el("tbody", {}, rows.map((cells) =>
          el("tr", {}, cells.map((c, i) => el("td", { "data-label": columns[i] }, c)))))));
  }

  // Calls the admin API with the session cookie (and the CSRF token for a change).
  async function call(method, path, body, signal) {
    const options = { method, credentials: "same-origin", headers: {}, signal };
    if (method !== "GET") options.headers["X-CSRF-Token"] = state.csrf;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let doc = null;
    try { doc = await response.json(); } catch (e) { doc = null; }
    if (response.status === 401 && path.startsWith("/api/")) {
      showLogin("Your session has ended. Log in again.");
      throw new Error("logged out");
    }
    if (!response.ok) {
      const message = doc && doc.errors && doc.errors[0] ? doc.errors[0].message : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return doc;
  }

  function stopPolling() {
    if (state.poll) state.poll.abort();
    state.poll = null;
  }

  // Asks before a change; resolves true when confirmed. `lines` are paragraphs of text.
  function confirmChange(title, lines, okText) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").replaceChildren(...lines.map((l) => el("p", {}, l)));
    document.getElementById("confirm-ok").textContent = okText;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
    });
  }

  // --- log in and out ----------------------------------------------------------------------------

  function showLogin(message) {
    stopPolling();
    state.csrf = "";
    nav.hidden = true;
    account.hidden = true;
    document.title = "Log in · regpin";
    const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password",
      required: true, "aria-describedby": "token-help" });
    const error = el("p", { id: "login-error", class: "error", role: "alert" }, message || "");
    const form = el("form", { onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const doc = await call("POST", "/ui/login", { token: input.value });
        input.value = "";
        start(doc);
      } catch (err) {
        error.textContent = err.status === 401 ? "That token is not valid." : err.message;
        input.focus();
      }
    } },
      el("label", { for: "token" }, "Admin token"), input,
      el("p", { id: "token-help", class: "note" },
        "A token from admin.tokens in regpin's configuration. It is exchanged for a session cookie; the page never stores it."),
      error,
      el("button", { type: "submit", class: "primary" }, "Log in"));
    show(el("section", { class: "login", "aria-labelledby": "login-title" },
      el("h1", { id: "login-title" }, "Log in to regpin"), form));
    input.focus();
  }

  async function logout() {
    stopPolling();
    try { await call("POST", "/ui/logout", {}); } catch (e) { /* the cookie is removed either way */ }
    showLogin("You have logged out.");
  }

  function start(session) {
    state.csrf = session.csrf;
    state.name = session.name;
    state.scope = session.scope || "admin";
    document.getElementById("who").textContent = "Signed in with token " + session.name +
      (state.scope === "admin" ? "" : ` (${state.scope}: no changes)`);
    nav.hidden = false;
    account.hidden = false;
    route();
  }

  // --- pins --------------------------------------------------------------------------------------

  function select(id, label, value, options) {
    return el("div", {},
      el("label", { for: id }, label),
      el("select", { id, name: id },
        options.map(([v, text]) => el("option", { value: v, selected: v === value }, text))));
  }

  async function viewPins(params) {
    const q = params.get("q") || "", st = params.get("state") || "";
    const registry = params.get("registry") || "", policy = params.get("policy") || "";
    const after = params.get("after") || "";
    const query = new URLSearchParams({ limit: "50" });
    for (const [k, v] of [["q", q], ["state", st], ["registry", registry], ["policy", policy], ["after", after]])
      if (v) query.set(k, v);
    const doc = await call("GET", "/api/v1/pins?" + query);
    document.title = "Pins · regpin";
    const search = el("input", { id: "q", name: "q", type: "search", value: q,
      placeholder: "docker.io/library/nginx:1.27" });
    const form = el("form", { class: "filters", role: "search", "aria-label": "Find pins", onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const id of ["q", "state", "registry", "policy"]) {
        const v = form.querySelector("#" + id).value.trim();
        if (v) next.set(id, v);
      }
      location.hash = "#/pins?" + next;
    } },
      el("div", { class: "grow" }, el("label", { for: "q" }, "Search tags"), search),
      select("state", "State", st, [["", "Any state"], ["pinned", "pinned"], ["pending", "pending"], ["rejected", "rejected"]]),
      select("registry", "Registry", registry, [["", "Any registry"], ...(doc.registries || []).map((r) => [r, r])]),
      select("policy", "Policy", policy, [["", "Any policy"], ["pin", "pin"], ["follow", "follow"], ["reject", "reject"], ["artifact", "artifact"]]),
      el("button", { type: "submit", class: "primary" }, "Search"));
    const rows = doc.pins.map((p) => [
      pinLink(p.registry, p.repository, p.tag, p.reference),
      badge(p.state), p.policy || "—", digestCode(p.digest),
      p.pending_digest ? digestCode(p.pending_digest) : "—", when(p.last_verified)]);
    const pager = el("div", { class: "pager" },
      el("span", { id: "pin-count" }, `${doc.pins.length} shown of ${doc.total} pins`),
      after ? el("a", { href: "#/pins?" + new URLSearchParams([...new URLSearchParams(query)].filter(([k]) => !["after", "limit"].includes(k))) }, "First page") : null,
      doc.next ? el("a", { href: "#/pins?" + (() => { const n = new URLSearchParams(query); n.delete("limit"); n.set("after", doc.next); return n; })(), rel: "next" }, "Next page") : null);
    show(el("h1", {}, "Pins"), form,
      rows.length ? table("Pins", ["Tag", "State", "Policy", "Digest", "Pending", "Last verified"], rows)
        : el("p", {}, "No pin matches."),
      pager);
  }

  // --- one pin -----------------------------------------------------------------------------------

  function contentLine(c) {
    if (!c) return "—";
    const n = (k) => `${c[k].cached}/${c[k].total} ${k}`;
    return el("span", {}, badge(c.state), " ", `${n("manifests")}, ${n("configs")}, ${n("layers")} cached (pin_content ${c.pin_content})`);
  }

  async function pulledBy(registry, repository, digest) {
    const doc = await call("GET", "/api/v1/audit?" + new URLSearchParams({ digest, ref: `${registry}/${repository}` }));
    return doc;
  }

  function pullsList(doc) {
    if (!doc.records.length) return el("p", { class: "note" }, "No client pulled it since the audit began (or within its retention).");
    const seen = new Map();
    for (const r of doc.records) if (!seen.has(r.client)) seen.set(r.client, r);
    return table("Clients that pulled this digest", ["Node", "Address", "Tag asked for", "Last pulled", "Requests"],
      [...seen.values()].map((r) => [r.node || "(no node name)", r.address, r.tag || "(by digest)", when(r.last_pulled), String(r.count)]));
  }

  async function act(action, target, body, done) {
    try {
      await call("POST", "/api/v1/pin/" + action, body);
      announce(done);
      main.removeAttribute("data-shown");
      await viewPin(new URLSearchParams(target));
      main.setAttribute("data-shown", location.hash || "#/pins");
      const note = document.getElementById("action-result");
      if (note) note.textContent = done;
    } catch (e) {
      if (e.message !== "logged out") {
        const note = document.getElementById("action-result");
        if (note) { note.className = "error"; note.textContent = `${action} failed: ${e.message}`; }
      }
    }
  }

  async function viewPin(params) {
    const target = { registry: params.get("registry") || "", repository: params.get("repository") || "", tag: params.get("tag") || "" };
    const ref = `${target.registry}/${target.repository}:${target.tag}`;
    document.title = ref + " · regpin";
    let doc;
    try {
      doc = await call("GET", "/api/v1/pin?" + new URLSearchParams(target));
    } catch (e) {
      if (e.status !== 404) throw e;
      show(el("h1", {}, ref), el("p", {}, "No pin and no history for this tag."), el("a", { href: "#/pins" }, "Back to the pins"));
      return;
    }
    const cards = [];
    for (const p of doc.pins) {
      const served = await pulledBy(target.registry, target.repository, p.digest);
      const pending = p.pending_digest ? await pulledBy(target.registry, target.repository, p.pending_digest) : null;
      const platforms = (c) => (c && c.platforms && c.platforms.length ? c.platforms.join(", ") : "one image (no index)");
      const repoint = doc.history.slice().reverse().find((e) => e.type === "repointed" && e.new_digest === p.pending_digest);
      const oldClients = served.clients.length;
      const setInput = el("input", { id: `set-${p.accept_class}`, name: "digest", placeholder: "sha256:…", size: 30, required: true });
      const approve = p.pending_digest ? el("button", { type: "button", class: "primary", onclick: async () => {
        const ok = await confirmChange("Approve the re-point?", [
          `Nodes that pull ${ref} will get ${p.pending_digest} (${platforms(p.pending_content)}) instead of ${p.digest}.`,
          `${oldClients} client${oldClients === 1 ? "" : "s"} pulled the digest served now${oldClients ? ": " + served.clients.slice(0, 20).join(", ") : ""}. They keep running it until they pull again.`,
        ], "Approve");
        if (ok) await act("approve", target, { ...target, digest: p.pending_digest }, `Approved: ${ref} now serves ${shortDigest(p.pending_digest)}.`);
      } }, "Approve re-point") : null;
      const unpin = el("button", { type: "button", class: "danger", onclick: async () => {
        const ok = await confirmChange("Unpin this tag?", [
          `${ref} will have no pin. The next pull pins whatever the upstream serves then` +
            (p.pending_digest ? ` (now ${p.pending_digest}).` : "."),
          `Nodes keep running what they have; ${oldClients} client${oldClients === 1 ? "" : "s"} pulled ${p.digest}.`,
        ], "Unpin");
        if (ok) await act("unpin", target, target, `Unpinned ${ref}.`);
      } }, "Unpin");
      const setForm = el("form", { class: "actions", "aria-label": "Pin another digest", onsubmit: async (e) => {
        e.preventDefault();
        const digest = setInput.value.trim();
        const ok = await confirmChange("Pin this digest?", [
          `Nodes that pull ${ref} will get ${digest} instead of ${p.digest}.`,
          `${oldClients} client${oldClients === 1 ? "" : "s"} pulled the digest served now.`,
        ], "Set");
        if (ok) await act("set", target, { ...target, digest }, `Set: ${ref} now serves ${shortDigest(digest)}.`);
      } },
        el("div", {}, el("label", { for: setInput.id }, "Pin another digest"), setInput),
        el("button", { type: "submit" }, "Set"));
      cards.push(el("section", { class: "card", "aria-labelledby": `pin-${p.accept_class}` },
        el("h2", { id: `pin-${p.accept_class}` }, doc.pins.length > 1 ? `Accept class ${p.accept_class}` : "Pin"),
        el("dl", { class: "facts" },
          el("dt", {}, "Digest"), el("dd", { id: "pin-digest" }, digestCode(p.digest)),
          el("dt", {}, "State"), el("dd", { id: "pin-state" }, badge(p.state)),
          el("dt", {}, "Policy"), el("dd", {}, p.policy || "—"),
          el("dt", {}, "Media type"), el("dd", {}, p.media_type),
          el("dt", {}, "Platforms"), el("dd", {}, platforms(p.content)),
          el("dt", {}, "Content"), el("dd", {}, contentLine(p.content)),
          el("dt", {}, "First seen"), el("dd", {}, when(p.first_seen)),
          el("dt", {}, "Last verified"), el("dd", {}, when(p.last_verified))),
        p.pending_digest ? el("div", { class: "pending", id: "pending" },
          el("p", {}, "The upstream moved this tag to ", digestCode(p.pending_digest), " (", platforms(p.pending_content), ") at ", when(p.pending_since), "."),
          repoint && repoint.summary && repoint.summary.text ? el("p", {}, "What changed: " + repoint.summary.text) : null,
          el("p", {}, "Content of the new digest: ", contentLine(p.pending_content))) : null,
        el("h3", {}, "Nodes that pulled the digest served now"), pullsList(served),
        pending ? [el("h3", {}, "Nodes that pulled the pending digest"), pullsList(pending)] : null,
        // A read token sees everything and changes nothing (the server refuses it anyway).
        state.scope === "admin" ? [el("div", { class: "actions" }, approve, unpin), setForm] :
          el("p", { class: "note" }, "This session's token has scope read: approving, unpinning and setting need an admin token."),
        el("p", { id: "action-result", role: "status" })));
    }
    const history = doc.history.slice().reverse().map((e) => [
      when(e.time), e.type + (e.action ? ` (${e.action})` : ""), e.actor,
      digestCode(e.old_digest), digestCode(e.new_digest), e.summary && e.summary.text ? e.summary.text : ""]);
    show(
      el("p", {}, el("a", { href: "#/pins" }, "← Pins")),
      el("h1", {}, ref), ...cards,
      el("h2", {}, "History"),
      history.length ? table("History of this tag", ["Time", "Event", "By", "From", "To", "Detail"], history) : el("p", {}, "No events."));
  }

  // --- events --------------------------------------------------------------------------------------

  function eventItem(e, fresh) {
    return el("li", { class: fresh ? "new" : null, "data-event": e.id },
      when(e.time), el("strong", {}, e.type), " ",
      pinLink(e.registry, e.repository, e.tag, e.reference), ` by ${e.actor}`,
      e.old_digest || e.new_digest ? el("div", { class: "note" }, `${shortDigest(e.old_digest)} → ${shortDigest(e.new_digest)}`) : null,
      e.summary && e.summary.text ? el("div", {}, e.summary.text) : null);
  }

  async function viewEvents() {
    document.title = "Events · regpin";
    const doc = await call("GET", "/api/v1/events?last=100");
    const list = el("ol", { class: "timeline", id: "timeline", "aria-label": "Events, newest first" },
      doc.events.slice().reverse().map((e) => eventItem(e, false)));
    show(el("h1", {}, "Events"),
      el("p", { class: "note" }, "The newest events first. New ones appear here as they happen."),
      doc.events.length ? null : el("p", { id: "no-events" }, "No events yet."), list);
    pollEvents(list, doc.events.reduce((m, e) => Math.max(m, e.id), 0));
  }

  // Long polling (the API holds the request until an event or 20 s): no connection stays open
  // between answers, and any proxy in between copes. Ends when the view changes.
  async function pollEvents(list, after) {
    const controller = new AbortController();
    state.poll = controller;
    while (!controller.signal.aborted) {
      try {
        const next = await call("GET", `/api/v1/events?after=${after}&wait_s=20&limit=100`, undefined, controller.signal);
        if (controller.signal.aborted) break;
        for (const e of next.events) {
          list.prepend(eventItem(e, true));
          after = Math.max(after, e.id);
        }
        if (next.events.length) {
          const none = document.getElementById("no-events");
          if (none) none.remove();
          announce(`${next.events.length} new event${next.events.length === 1 ? "" : "s"}`);
        }
      } catch (e) {
        if (controller.signal.aborted || e.message === "logged out") break;
        await new Promise((r) => setTimeout(r, 3000));  // regpin restarting: try again shortly
      }
    }
  }

  // --- health --------------------------------------------------------------------------------------

  // Prometheus text format: [{name, labels, value}].
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      for (const l of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }

  function bytes(n) {
    if (!Number.isFinite(n)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  async function viewHealth() {
    document.title = "Health · regpin";
    const [ready, text] = await Promise.all([
      fetch("/readyz", { credentials: "same-origin" }).then((r) => r.json()).catch(() => ({ status: "error" })),
      fetch("/metrics", { credentials: "same-origin" }).then((r) => r.text())]);
    const metrics = parseMetrics(text);
    const sum = (name, pred) => metrics.filter((m) => m.name === name && (!pred || pred(m.labels))).reduce((s, m) => s + m.value, 0);
    const one = (name) => { const m = metrics.find((x) => x.name === name); return m ? m.value : NaN; };
    const card = (title, value, detail) => el("div", { class: "metric" },
      el("h2", {}, title), el("div", { class: "value" }, value), detail ? el("div", { class: "note" }, detail) : null);
    const limit = one("regpin_cache_limit_bytes");
    const registries = [...new Set(metrics.filter((m) => m.name === "regpin_upstream_requests_total").map((m) => m.labels.registry))].sort();
    const upstreamRows = registries.map((r) => [r,
      String(sum("regpin_upstream_requests_total", (l) => l.registry === r && l.status.startsWith("2"))),
      String(sum("regpin_upstream_requests_total", (l) => l.registry === r && !l.status.startsWith("2"))),
      String(sum("regpin_upstream_errors_total", (l) => l.registry === r)),
      String(sum("regpin_pin_checks_total", (l) => l.registry === r && l.outcome === "error"))]);
    show(el("h1", {}, "Health"),
      el("p", { class: "note" }, "From regpin's /readyz and /metrics, read when this page opened."),
      el("div", { class: "grid" },
        card("Readiness", badge(ready.status || "error"), ready.detail),
        card("Pins", String(one("regpin_pins")), `${one("regpin_pins_pending")} awaiting an operator`),
        card("Cache on disk", bytes(one("regpin_cache_data_folder_bytes")),
          limit > 0 ? `limit ${bytes(limit)}, ${bytes(one("regpin_cache_filesystem_free_bytes"))} free` : "no limit set"),
        card("Blobs", String(one("regpin_cache_blobs")),
          `${bytes(sum("regpin_cache_bytes", (l) => l.class === "protected"))} protected, ${bytes(sum("regpin_cache_bytes", (l) => l.class === "evictable"))} evictable`),
        card("Evictions", String(one("regpin_cache_evictions_total")), one("regpin_cache_over_limit") === 1 ? "over the limit: new blobs are not kept" : null),
        card("Webhook queue", String(one("regpin_webhook_queue")), `${sum("regpin_webhook_deliveries_total", (l) => l.result !== "delivered")} failed attempts`),
        card("Pull audit", String(one("regpin_audit_records")), "records (digest × client)")),
      el("h2", {}, "Upstreams"),
      upstreamRows.length ? table("Upstreams", ["Registry", "Answers 2xx", "Other answers", "No answer", "Failed checks"], upstreamRows)
        : el("p", {}, "No upstream request yet."),
      el("p", { class: "note" }, `${one("regpin_upstream_urls_backing_off")} upstream URL(s) backing off after failures; ${one("regpin_upstream_quota_low")} upstream(s) low on pull quota.`));
  }

  // --- routing -------------------------------------------------------------------------------------

  async function route() {
    if (!state.csrf) return;
    stopPolling();
    const hash = location.hash || "#/pins";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const view = path === "/pin" ? "pins" : path.slice(1);
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.view === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    main.removeAttribute("data-shown");
    try {
      if (path === "/pin") await viewPin(params);
      else if (path === "/events") await viewEvents();
      else if (path === "/health") await viewHealth();
      else await viewPins(params);
      // Which view the page shows now (tools and tests wait for it, not for a time).
      main.setAttribute("data-shown", hash);
    } catch (e) {
      if (e.message === "logged out") return;
      show(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert" }, e.message));
    }
    main.focus();
  }

  window.addEventListener("hashchange", route);
  document.getElementById("logout").addEventListener("click", logout);
  fetch("/ui/session", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => (s ? start(s) : showLogin("")))
    .catch(() => showLogin("regpin cannot be reached."));
})();
