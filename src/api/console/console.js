// The hookgate status console. Plain JavaScript, no dependencies.
//
// The admin token is asked for once and kept in this tab's sessionStorage; it is sent only
// as an `Authorization: Bearer` header on fetch() calls to this gateway's /v1 API, never in
// a URL. Without it (when the gateway has one) the page shows the form only and requests
// nothing. Data is written with textContent, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "hookgate-admin-token";
  const POLL_MS = 2000;
  const PAGE = 10;

  const tokenRequired = document.body.dataset.tokenRequired === "true";
  const $ = (id) => document.getElementById(id);

  let paused = false;
  let timer = null;
  let refreshing = false;
  let openDispatch = null;
  const pages = { templates: 0, campaigns: 0, dispatches: 0, failed: 0, plugins: 0 };
  const rendered = {};

  // ------------------------------------------------------------------ the token

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function setToken(value) {
    try {
      if (value === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, value);
    } catch (_) {
      /* storage disabled: the token lives as long as the page */
    }
    memoryToken = value;
  }
  let memoryToken = null;

  function currentToken() {
    return token() || memoryToken;
  }

  class Unauthorized extends Error {}

  // Every request of the console goes through here.
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const t = currentToken();
    if (t && path.startsWith("/v1/")) headers.set("Authorization", "Bearer " + t);
    headers.set("Accept", "application/json");
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    let body = null;
    const text = await response.text();
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = text;
    }
    if (response.status === 401) throw new Unauthorized(errorText(body, "the token was refused"));
    return { status: response.status, ok: response.ok, body };
  }

  function errorText(body, fallback) {
    if (body && body.error && body.error.message) return body.error.message;
    return fallback;
  }

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(text, kind) {
    return el("span", { class: "badge badge-" + (kind || text) }, text);
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function counts(c) {
    return c ? `${c.delivered} / ${c.failed} / ${c.pending}` : "";
  }

  // Replaces a table body's rows, keeping the keyboard focus on the element of the same
  // key, and only when what it shows changed.
  function fill(section, rows, signature) {
    if (rendered[section] === signature) return;
    rendered[section] = signature;
    const tbody = $(section + "-table").querySelector("tbody");
    const focused = document.activeElement;
    const key = focused && tbody.contains(focused) ? focused.dataset.key : null;
    tbody.replaceChildren(...rows);
    if (key) {
      const again = tbody.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function empty(columns, text) {
    return el("tr", {}, el("td", { colspan: columns, class: "empty" }, text));
  }

  function pager(section, total, onChange) {
    const box = $(section + "-pager");
    const pagesTotal = Math.max(1, Math.ceil(total / PAGE));
    if (pages[section] >= pagesTotal) pages[section] = pagesTotal - 1;
    const page = pages[section];
    const signature = `${page}/${pagesTotal}/${total}`;
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    if (total <= PAGE) {
      box.replaceChildren();
      return;
    }
    const label = section.charAt(0).toUpperCase() + section.slice(1);
    const go = (delta) => () => {
      pages[section] = Math.min(pagesTotal - 1, Math.max(0, pages[section] + delta));
      onChange();
    };
    box.replaceChildren(
      el("button", { type: "button", "aria-label": `${label}: previous page`, disabled: page === 0, onclick: go(-1) }, "Previous"),
      el("span", { "aria-live": "polite" }, ` Page ${page + 1} of ${pagesTotal} (${total}) `),
      el("button", { type: "button", "aria-label": `${label}: next page`, disabled: page >= pagesTotal - 1, onclick: go(1) }, "Next"),
    );
  }

  function slice(section, items) {
    const start = pages[section] * PAGE;
    return items.slice(start, start + PAGE);
  }

  // ------------------------------------------------------------------ sections

  async function loadTemplates() {
    const { ok, body } = await api("/v1/templates");
    if (!ok) throw new Error("templates: " + errorText(body, "no answer"));
    const all = body.templates;
    pager("templates", all.length, refresh);
    const rows = slice("templates", all).map((t) => {
      let detail = "";
      if (t.state === "invalid") detail = el("code", { class: "error-text" }, t.error || "");
      else if (t.state === "unverified") detail = el("span", {}, t.reason || "waiting for verification");
      else if (t.last_test && t.last_test.ok) detail = el("span", {}, `verified: ${t.last_test.answer}`);
      else if (t.active && !t.active.verify) detail = el("span", {}, "verification off");
      const last = t.last_test
        ? el("span", {}, badge(t.last_test.ok ? "ok" : "failed"), ` ${t.last_test.answer} (v${t.last_test.version}, ${when(t.last_test.at)})`)
        : el("span", { class: "muted" }, "none yet");
      const version = t.version === null || t.version === undefined ? "—" : String(t.version);
      const auth = t.active ? t.active.auth : t.pending ? t.pending.auth : "—";
      return el("tr", { dataset: { template: t.name } },
        el("th", { scope: "row" }, t.name),
        el("td", {}, badge(t.state)),
        el("td", {}, version),
        el("td", {}, auth),
        el("td", { class: "detail-cell" }, detail),
        el("td", {}, last),
        el("td", { class: "actions" },
          el("button", { type: "button", dataset: { key: "test:" + t.name, action: "test" }, "aria-label": `Send the test payload through ${t.name}`,
            onclick: () => sendTest(t.name) }, "Send test payload"),
          el("button", { type: "button", dataset: { key: "token:" + t.name, action: "token" }, "aria-label": `Generate a token for ${t.name}`,
            onclick: () => generateToken(t.name) }, "Generate token"),
        ),
      );
    });
    fill("templates", rows.length ? rows : [empty(7, "No template yet: put one in templates/.")], JSON.stringify([pages.templates, all]));
  }

  async function sendTest(name) {
    const out = $("templates-result");
    out.textContent = `Sending the test payload through ${name}…`;
    try {
      const { ok, body } = await api(`/v1/templates/${encodeURIComponent(name)}/test`, { method: "POST" });
      if (!ok) out.textContent = `${name}: ${errorText(body, "refused")}`;
      else if (body.ok) out.textContent = `${name}: the endpoint answered ${body.answer} in ${body.latency_ms} ms.`;
      else out.textContent = `${name}: ${body.error || "the endpoint answered " + body.answer}.`;
    } catch (e) {
      handle(e);
    }
    refresh();
  }

  async function generateToken(name) {
    const out = $("templates-result");
    out.textContent = `Requesting a token for ${name}…`;
    try {
      const { ok, body } = await api(`/v1/templates/${encodeURIComponent(name)}/token`, { method: "POST" });
      if (!ok) {
        out.textContent = `${name}: ${errorText(body, "refused")}`;
        return;
      }
      const t = body.token;
      out.textContent = `${name}: token ${t.masked}` + (t.token_type ? `, type ${t.token_type}` : "") +
        (t.scopes ? `, scopes ${t.scopes}` : "") + `, expires ${when(t.expires_at)} (in ${t.expires_in_secs} s)` +
        (t.has_refresh_token ? ", with a refresh token." : ".");
    } catch (e) {
      handle(e);
    }
  }

  async function loadCampaigns() {
    const { ok, body } = await api("/v1/campaigns");
    if (!ok) throw new Error("campaigns: " + errorText(body, "no answer"));
    const all = body.campaigns;
    pager("campaigns", all.length, refresh);
    const rows = slice("campaigns", all).map((c) =>
      el("tr", { dataset: { campaign: c.target_id } },
        el("th", { scope: "row" }, c.target_id),
        el("td", { class: "num" }, counts(c.requests)),
        el("td", { class: "num" }, counts(c.profiles)),
        el("td", {}, c.errors.length
          ? el("ul", { class: "plain" }, c.errors.map((e) => el("li", {}, `${e.error}: ${e.reason} × ${e.count}`)))
          : el("span", { class: "muted" }, "none")),
        el("td", { class: "num" }, `${c.latency_ms.p50} / ${c.latency_ms.p99} / ${c.latency_ms.max}`),
      ));
    fill("campaigns", rows.length ? rows : [empty(5, "No campaign yet.")], JSON.stringify([pages.campaigns, all]));
  }

  async function loadDispatches() {
    const offset = pages.dispatches * PAGE;
    const { ok, body } = await api(`/v1/dispatches?limit=${PAGE}&offset=${offset}`);
    if (!ok) throw new Error("dispatches: " + errorText(body, "no answer"));
    pager("dispatches", body.total, refresh);
    const rows = body.dispatches.map((d) =>
      el("tr", { dataset: { dispatch: d.dispatch_id } },
        el("th", { scope: "row" },
          el("button", { type: "button", class: "link", dataset: { key: "show:" + d.dispatch_id },
            "aria-expanded": String(openDispatch === d.dispatch_id), "aria-controls": "dispatch-detail",
            onclick: () => showDispatch(d.dispatch_id) }, d.dispatch_id)),
        el("td", {}, d.template),
        el("td", {}, d.campaign),
        el("td", {}, badge(d.state)),
        el("td", { class: "num" }, counts(d.requests)),
        el("td", { class: "num" }, String(d.profiles.delivered + d.profiles.failed + d.profiles.pending)),
        el("td", {}, when(d.created_at)),
      ));
    fill("dispatches", rows.length ? rows : [empty(7, "No dispatch yet.")], JSON.stringify([openDispatch, body]));
    if (openDispatch) await renderDispatch(openDispatch);
  }

  async function showDispatch(id) {
    openDispatch = openDispatch === id ? null : id;
    rendered.dispatches = null;
    if (!openDispatch) {
      $("dispatch-detail").hidden = true;
      rendered.detail = null;
    }
    await refresh();
    if (openDispatch) $("dispatch-detail").focus();
  }

  async function renderDispatch(id) {
    const box = $("dispatch-detail");
    const { ok, body } = await api(`/v1/dispatches/${encodeURIComponent(id)}`);
    const signature = JSON.stringify([id, ok, body]);
    if (rendered.detail === signature) return;
    rendered.detail = signature;
    box.hidden = false;
    if (!ok) {
      box.replaceChildren(el("p", { class: "error" }, errorText(body, "no such dispatch")));
      return;
    }
    const rows = body.requests.flatMap((r) => {
      const attempts = r.attempts.length ? r.attempts : [null];
      return attempts.map((a, i) =>
        el("tr", {},
          i === 0 ? el("th", { scope: "row", rowspan: attempts.length }, `${body.dispatch_id}.${r.index}`) : null,
          i === 0 ? el("td", { rowspan: attempts.length }, badge(r.status)) : null,
          i === 0 ? el("td", { rowspan: attempts.length, class: "num" }, String(r.profiles)) : null,
          el("td", { class: "num" }, a ? String(a.attempt) : "—"),
          el("td", {}, a ? when(a.at) : ""),
          el("td", { class: "num" }, a ? String(a.latency_ms) : ""),
          el("td", {}, a ? (a.status ? String(a.status) : "") : ""),
          el("td", {}, a ? a.error || "" : r.reason || ""),
        ));
    });
    box.replaceChildren(
      el("h3", {}, `Dispatch ${body.dispatch_id}`),
      el("p", {}, `Template ${body.template} (version ${body.template_version}), campaign ${body.campaign}, `,
        badge(body.state), `, accepted ${when(body.created_at)}.`),
      el("div", { class: "scroll" }, el("table", { id: "detail-table" },
        el("caption", { class: "visually-hidden" }, "Its requests and their attempts"),
        el("thead", {}, el("tr", {}, ["Delivery id", "Status", "Profiles", "Attempt", "At", "Latency ms", "HTTP status", "Error"]
          .map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows))),
      el("button", { type: "button", onclick: () => showDispatch(id) }, "Close"),
    );
  }

  async function loadFailed() {
    const offset = pages.failed * PAGE;
    const { ok, body } = await api(`/v1/dispatches?failed=true&limit=${PAGE}&offset=${offset}`);
    if (!ok) throw new Error("failed requests: " + errorText(body, "no answer"));
    pager("failed", body.total, refresh);
    const details = await Promise.all(body.dispatches.map((d) => api(`/v1/dispatches/${encodeURIComponent(d.dispatch_id)}`)));
    const rows = details.filter((r) => r.ok).map(({ body: d }) => {
      const failed = d.requests.filter((r) => r.status === "failed");
      return el("tr", { dataset: { dispatch: d.dispatch_id } },
        el("th", { scope: "row" }, d.dispatch_id),
        el("td", {}, d.template),
        el("td", {}, d.campaign),
        el("td", {}, el("ul", { class: "plain" }, failed.map((r) =>
          el("li", {}, `${d.dispatch_id}.${r.index} (${r.profiles} profiles, ${r.attempts.length} attempts): ${r.error}: ${r.reason}`)))),
        el("td", { class: "actions" },
          el("button", { type: "button", dataset: { key: "replay:" + d.dispatch_id, action: "replay" },
            "aria-label": `Replay the failed requests of dispatch ${d.dispatch_id}`, onclick: () => replay(d.dispatch_id) }, "Replay")),
      );
    });
    fill("failed", rows.length ? rows : [empty(5, "No failed request.")], JSON.stringify([pages.failed, details.map((d) => d.body)]));
  }

  async function replay(id) {
    const out = $("failed-result");
    out.textContent = `Replaying the failed requests of ${id}…`;
    try {
      const { ok, body } = await api(`/v1/dispatches/${encodeURIComponent(id)}/retry`, { method: "POST" });
      out.textContent = ok ? `${id}: ${body.requeued} request(s) sent again.` : `${id}: ${errorText(body, "refused")}`;
    } catch (e) {
      handle(e);
    }
    refresh();
  }

  async function loadPlugins() {
    const { ok, body } = await api("/v1/plugins");
    if (!ok) throw new Error("plugins: " + errorText(body, "no answer"));
    const all = body.plugins;
    pager("plugins", all.length, refresh);
    const rows = slice("plugins", all).map((p) =>
      el("tr", {},
        el("th", { scope: "row" }, p.name),
        el("td", {}, p.kind),
        el("td", {}, badge(p.state)),
        el("td", {}, p.sha256 ? el("code", { title: p.sha256 }, p.sha256.slice(0, 16) + "…") : el("span", { class: "muted" }, "—")),
        el("td", {}, p.error ? el("code", { class: "error-text" }, p.error) : ""),
      ));
    fill("plugins", rows.length ? rows : [empty(5, "No plugin.")], JSON.stringify([pages.plugins, all]));
  }

  async function loadKeys() {
    const { ok, body } = await api("/.well-known/jwks.json");
    if (!ok) throw new Error("key store: no answer");
    const rows = body.keys.map((k) =>
      el("tr", {},
        el("th", { scope: "row" }, k.kid || ""),
        el("td", {}, k.alg || ""),
        el("td", {}, k.kty || ""),
        el("td", {}, k.use || ""),
        el("td", {}, el("code", { title: k.n || "" }, (k.n || "").slice(0, 24) + "…")),
      ));
    fill("keys", rows.length ? rows : [empty(5, "No key yet: hookgate keys generate.")], JSON.stringify(body));
  }

  // ------------------------------------------------------------------ the loop

  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    try {
      const results = await Promise.allSettled([loadTemplates(), loadCampaigns(), loadDispatches(), loadFailed(), loadPlugins(), loadKeys()]);
      const unauthorized = results.find((r) => r.status === "rejected" && r.reason instanceof Unauthorized);
      if (unauthorized) {
        handle(unauthorized.reason);
        return;
      }
      const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
      $("status").textContent = failures.length ? "Could not update: " + failures.join("; ") : "";
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    } finally {
      refreshing = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = setInterval(() => {
      if (!paused && !document.hidden) refresh();
    }, POLL_MS);
  }

  function handle(e) {
    if (e instanceof Unauthorized) {
      setToken(null);
      showLogin("The gateway refused the token: " + e.message);
    } else {
      $("status").textContent = String(e.message || e);
    }
  }

  function showLogin(message) {
    clearInterval(timer);
    $("console").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function showConsole() {
    $("login").hidden = true;
    $("console").hidden = false;
    $("controls").hidden = false;
    $("forget").hidden = !tokenRequired;
    for (const k of Object.keys(rendered)) delete rendered[k];
    refresh();
    schedule();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      setToken(value);
      $("token").value = "";
      try {
        const { ok, body } = await api("/v1/templates");
        if (!ok) throw new Error(errorText(body, "the gateway did not answer"));
        showConsole();
      } catch (e) {
        if (e instanceof Unauthorized) {
          setToken(null);
          showLogin("That is not the admin token.");
        } else {
          $("login-error").textContent = String(e.message || e);
        }
      }
    });
    $("forget").addEventListener("click", () => {
      setToken(null);
      showLogin("The token is forgotten.");
    });
    $("pause").addEventListener("click", () => {
      paused = !paused;
      $("pause").setAttribute("aria-pressed", String(paused));
      $("pause").textContent = paused ? "Resume live updates" : "Pause live updates";
      if (!paused) refresh();
    });
    if (tokenRequired && !currentToken()) showLogin();
    else showConsole();
  });
})();
