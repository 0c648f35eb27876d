// The status page: renders the node's state from /events (server-sent events). Every
// value goes in through textContent, never as HTML: names and events come from peers.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  return tr;
}

function td(text, cls) { return el("td", text, cls); }

function short(s, n) { return s && s.length > n ? s.slice(0, n) + "…" : s; }

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function count(id, shown, total) {
  $(id).textContent = shown === total ? "(" + total + ")" : "(" + shown + " of " + total + ")";
}

function renderNode(n) {
  const facts = [
    ["peer id", n.peer_id],
    ["version", n.version],
    ["uptime", n.uptime_s + " s"],
    ["peers", n.peers + " connected, " + n.dht_peers + " in the DHT"],
    ["reachability", n.reachability + (n.reachable_at ? " at " + n.reachable_at : "")],
    ["listening", (n.listen_addrs || []).join(" ")],
  ];
  const dl = $("node-facts");
  dl.replaceChildren();
  for (const [k, v] of facts) dl.append(el("dt", k), el("dd", v));
}

function renderPeers(s) {
  const body = $("peers");
  body.replaceChildren();
  for (const p of s.peers) {
    const breaker = p.breaker || "closed";
    const retry = p.breaker_retry_s != null ? " (retry in " + Math.ceil(p.breaker_retry_s) + " s)" : "";
    body.append(row([
      td(short(p.peer_id, 20) + (p.relayed ? " (relayed)" : ""), "mono"),
      td(p.rtt_ms != null ? p.rtt_ms.toFixed(1) + " ms" : "—"),
      td(breaker + retry, breaker === "closed" ? "ok" : "bad"),
    ]));
  }
  count("peers-count", s.peers.length, s.peers_total);
}

function renderDocs(s) {
  const body = $("docs");
  body.replaceChildren();
  for (const d of s.docs) {
    const lag = d.lag ? d.lag.last_ms + " ms (max " + d.lag.max_ms + ")" : "—";
    body.append(row([
      td(d.name || short(d.doc, 12)),
      td(short(d.digest, 12), "mono"),
      td(d.replicas),
      td(lag),
      td(d.behind || 0, d.behind ? "bad" : ""),
    ]));
  }
  count("docs-count", s.docs.length, s.docs_total);
}

function renderBlobs(s) {
  const body = $("blobs");
  body.replaceChildren();
  for (const b of s.blobs) {
    const state = b.complete ? (b.pinned ? "pinned" : "complete") : bytes(b.have) + " so far";
    body.append(row([td(short(b.hash, 16), "mono"), td(bytes(b.size)), td(state)]));
  }
  count("blobs-count", s.blobs.length, s.blobs_total);
}

function renderServices(s) {
  const list = $("services");
  list.replaceChildren();
  const names = Object.keys(s.services || {});
  if (!names.length) list.append(el("li", "none advertised here"));
  for (const name of names) {
    const meta = Object.entries(s.services[name]).map(([k, v]) => k + "=" + v).join(" ");
    list.append(el("li", name + (meta ? " — " + meta : "")));
  }
}

function renderEvents(s) {
  const list = $("events");
  list.replaceChildren();
  if (!s.events.length) list.append(el("li", "nothing yet"));
  for (const e of s.events) {
    const li = el("li");
    const t = el("time", new Date(e.at_ms).toLocaleTimeString());
    t.dateTime = new Date(e.at_ms).toISOString();
    li.append(t, document.createTextNode(e.text));
    list.append(li);
  }
}

function render(s) {
  renderNode(s.node);
  renderPeers(s);
  renderDocs(s);
  renderBlobs(s);
  renderServices(s);
  renderEvents(s);
}

function connect() {
  const es = new EventSource("/events?token=" + encodeURIComponent(token));
  es.addEventListener("state", (e) => {
    $("conn").textContent = "live";
    $("conn").className = "conn";
    render(JSON.parse(e.data));
  });
  es.onerror = () => {
    $("conn").textContent = "disconnected; retrying…";
    $("conn").className = "conn down";
  };
}

connect();
