// The status page: polls /status.json and redraws its three parts.
//
// Every value is written with textContent or a DOM property, never innerHTML, so a
// tradingsymbol or an error message is shown as text and can never become markup.
"use strict";

(function () {
  const main = document.querySelector("main");
  const statusUrl = main.dataset.statusUrl;
  const pollEveryMs = Number(main.dataset.pollEveryMs) || 2000;

  // Words for each state the workers report, as an operator says them.
  const ACCOUNT_STATE = {
    ok: "connected",
    degraded: "degraded",
    auth_failed: "auth failed",
    down: "worker down",
  };
  const PHASE = {
    open: "connected",
    connecting: "connecting",
    reconnecting: "reconnecting",
    auth_failed: "auth failed",
    gave_up: "gave up",
    closed: "closed",
  };

  // Last shown price per token, so a change can be highlighted.
  const shownPrices = new Map();
  let lastGood = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("data-")) node.dataset[camel(name.slice(5))] = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function camel(name) {
    return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    return Math.floor(seconds / 3600) + " h";
  }

  function plural(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function renderAccounts(accounts) {
    const cards = accounts.map((a) => {
      const share = a.capacity ? Math.min(a.used / a.capacity, 1) : 0;
      const fill = el("div", { class: "fill" });
      // A sliver for any use at all: 1 of 9,000 is still not an empty account.
      fill.style.width = (a.used ? Math.max(share * 100, 1) : 0).toFixed(1) + "%";
      const connections = el("ul", { class: "connections" },
        ...a.connections.map((c) => el("li", { "data-phase": c.phase },
          el("span", { class: "badge", "data-state": c.phase },
            PHASE[c.phase] || c.phase),
          ` #${c.index}: ${plural(c.tokens, "token")}, last frame ` +
          `${age(c.last_frame_age_s)} ago, ${plural(c.reconnects || 0, "reconnect")}`)));
      if (!a.connections.length) {
        connections.append(el("li", { class: "muted" }, "no connection"));
      }
      return el("article", { class: "account", "data-account-id": a.account_id },
        el("h3", {}, a.account_id, " ",
          el("span", { class: "badge socket-state", "data-state": a.socket_state },
            ACCOUNT_STATE[a.socket_state] || a.socket_state)),
        el("div", {
          class: "bar", role: "meter", "aria-valuemin": "0",
          "aria-valuemax": String(a.capacity), "aria-valuenow": String(a.used),
        }, fill),
        el("p", { class: "capacity" },
          `${a.used} / ${a.capacity} instruments (${a.free} free)`),
        el("p", { class: "muted" },
          `worker ${a.worker_alive ? "alive" : "DOWN"} · backlog ` +
          `${a.backlog === null ? "unknown" : plural(a.backlog, "task")} · ` +
          `${plural(a.frames_dropped, "frame")} dropped · ` +
          plural(a.refusals, "refusal")),
        connections);
    });
    document.getElementById("accounts").replaceChildren(...cards);
  }

  function backfillText(b) {
    if (!b) return "–";
    if (b.state === "failed") return `failed: ${b.reason || "unknown"}`;
    return `${b.candles_stored} new / ${b.candles_received} ${b.interval || ""} candles`;
  }

  function renderSubscriptions(status) {
    const rows = status.subscriptions.map((s) => {
      const previous = shownPrices.get(s.instrument_token);
      const price = s.last_price === null ? "–" : s.last_price.toFixed(2);
      const moved = previous !== undefined && previous !== s.last_price;
      shownPrices.set(s.instrument_token, s.last_price);
      const stale = s.tick_age_s === null || s.tick_age_s > 5;
      const modeChange = s.applied_mode && s.applied_mode !== s.requested_mode
        ? ` → ${s.requested_mode}` : "";
      return el("tr", { "data-token": String(s.instrument_token), "data-status": s.status },
        el("td", { class: "num" }, s.instrument_token),
        el("td", { class: "symbol" }, s.tradingsymbol),
        el("td", {}, s.exchange),
        el("td", {}, s.applied_mode || s.requested_mode,
          modeChange),
        el("td", {}, s.account_id),
        el("td", { title: s.status_reason || "" },
          el("span", { class: "badge", "data-state": s.status }, s.status),
          s.status_reason
            ? el("span", { class: "muted reason" }, " " + s.status_reason) : null),
        el("td", { class: "num price" + (moved ? " moved" : "") }, price),
        el("td", { class: "num tick-age" + (stale ? " stale" : "") }, age(s.tick_age_s)),
        el("td", { class: "backfill",
                   "data-state": s.backfill ? s.backfill.state : "unknown" },
          backfillText(s.backfill)));
    });
    document.querySelector("#subscriptions tbody").replaceChildren(...rows);
    document.getElementById("no-subscriptions").hidden = rows.length > 0;
    document.getElementById("subscription-count").textContent =
      status.truncated
        ? `(${status.subscriptions.length} of ${status.subscription_count} shown)`
        : `(${status.subscription_count})`;
    const b = status.backfill;
    const summary = document.getElementById("backfill-summary");
    summary.dataset.workerState = b.worker_state;
    summary.textContent =
      `Backfill: ${b.completed} completed, ${b.failed} failed, ${b.unknown} without a ` +
      `recent outcome; ${b.candles_stored} candles stored by recent backfills. ` +
      (b.worker_state === "down" ? "No backfill worker is running."
        : `Backfill workers: ${b.workers.length}.`);
  }

  function renderEvents(events) {
    const items = events.map((e) => {
      const m = e.metadata || {};
      const details = [m.tradingsymbol, m.account_id, m.requested_mode,
        m.candles_stored !== undefined ? `${m.candles_stored} candles` : null,
        m.previous_account_id ? `from ${m.previous_account_id}` : null, m.reason]
        .filter((part) => part !== undefined && part !== null && part !== "");
      return el("li", { "data-event-type": e.event_type, "data-stream-id": e.stream_id },
        el("time", {}, clock(e.timestamp)), " ",
        el("span", { class: "badge", "data-state": e.event_type }, e.event_type), " ",
        el("span", { class: "num" }, e.instrument_token), " ",
        el("span", { class: "muted" }, details.join(" · ")));
    });
    if (!items.length) items.push(el("li", { class: "muted" }, "No events yet."));
    document.getElementById("events").replaceChildren(...items);
  }

  function renderHealth(status) {
    const badge = document.getElementById("health");
    badge.dataset.state = status.health;
    badge.textContent = status.health === "healthy"
      ? "healthy" : `unhealthy: ${status.failing.join(", ")}`;
  }

  function showProblem(message) {
    const problem = document.getElementById("problem");
    problem.hidden = message === null;
    problem.textContent = message === null ? "" :
      message + (lastGood ? ` (showing data from ${clock(lastGood)})` : "");
  }

  async function poll() {
    try {
      const response = await fetch(statusUrl,
        { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) {
        const error = body && body.error
          ? `${body.error.code}: ${body.error.message}` : "";
        throw new Error(`status ${response.status} ${error}`);
      }
      renderHealth(body);
      renderAccounts(body.accounts);
      renderSubscriptions(body);
      renderEvents(body.events);
      lastGood = body.generated_at;
      document.getElementById("updated").textContent =
        `updated ${clock(body.generated_at)}`;
      showProblem(null);
    } catch (error) {
      showProblem(`Status unavailable: ${error.message}`);
    } finally {
      setTimeout(poll, pollEveryMs);
    }
  }

  poll();
})();
