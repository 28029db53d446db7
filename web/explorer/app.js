// Vouch explorer: reads the node's API and renders the network. No framework, no build step.
"use strict";

const $ = (s) => document.querySelector(s);
const short = (h) => (h ? String(h).slice(0, 8) : "");
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

function card(label, value) {
  return `<div class="card"><div class="muted">${esc(label)}</div><div class="v">${esc(value)}</div></div>`;
}

function renderStatus(st) {
  $("#chain").textContent = `${st.chain_name} · chain ${short(st.chain)} · height ${st.height}`;
  $("#stats").innerHTML =
    card("height", st.height) +
    card("providers", st.providers.length) +
    card("models", st.models.length) +
    card("open jobs", st.open_jobs) +
    card("mempool", st.mempool) +
    card("burned by slashing", st.supply.burned);
  const rows = st.providers.map((p) => {
    const done = p.jobs_settled + p.jobs_failed + p.jobs_expired;
    const rep = done ? ((100 * p.jobs_settled) / done).toFixed(1) + "%" : "new";
    const names = p.models.map((id) => (st.models.find((m) => m.id === id) || {}).name || short(id)).join(", ");
    return `<tr class="provider"><td class="mono">${short(p.address)}</td><td>${p.stake}</td><td>${p.price_per_token}</td>` +
      `<td>${esc(names)}</td><td>${p.jobs_settled}</td><td>${p.jobs_failed}</td><td>${rep}</td></tr>`;
  });
  $("#providers tbody").innerHTML = rows.join("");
  // Lineage: roots are models without a parent; children are listed under their parent.
  const children = {};
  st.models.forEach((m) => { (children[m.parent || "root"] = children[m.parent || "root"] || []).push(m); });
  const tree = (parent) => {
    const list = children[parent] || [];
    if (!list.length) return "";
    return "<ul class='tree'>" + list.map((m) =>
      `<li class="model"><b>${esc(m.name)}</b> v${esc(m.version)} <span class="muted">${esc(m.licence)} · royalty ${m.royalty_bps / 100}% · author ${short(m.author)} · id <code>${short(m.id)}</code></span>${tree(m.id)}</li>`
    ).join("") + "</ul>";
  };
  $("#models").innerHTML = tree("root") || "<p class='muted'>no models</p>";
}

function renderRecent(recent) {
  $("#blocks tbody").innerHTML = recent.blocks.map((b) =>
    `<tr class="block"><td>${b.height}</td><td class="mono">${short(b.id)}</td><td>${new Date(b.time).toLocaleTimeString()}</td>` +
    `<td>${b.tx_count}</td><td>${esc(b.kinds.join(", "))}</td></tr>`
  ).join("");
  $("#jobs tbody").innerHTML = recent.jobs.map((j) => {
    const audit = j.audit === null ? "<span class='muted'>not audited</span>" :
      (j.audit ? "<span class='pass'>passed</span>" : "<span class='fail'>failed</span>");
    return `<tr class="job"><td class="mono">${short(j.job)}</td><td>${esc(j.status)}</td><td>${audit}</td>` +
      `<td>${j.charge === null ? "" : j.charge}</td><td class="mono">${j.receipt ? `<a href="#" data-receipt="${j.receipt}">${short(j.receipt)}</a>` : ""}</td></tr>`;
  }).join("");
  document.querySelectorAll("a[data-receipt]").forEach((a) => a.addEventListener("click", (e) => {
    e.preventDefault();
    $("#receipt-id").value = a.dataset.receipt;
    openReceipt();
  }));
}

async function refresh() {
  try {
    const [st, recent] = await Promise.all([api("/v1/status"), api("/v1/explorer/recent?limit=20")]);
    renderStatus(st);
    renderRecent(recent);
  } catch (e) {
    $("#chain").textContent = "cannot reach the node: " + e.message;
  }
}

// cls: "valid" (verified), "unverified" (checks hold, claim not proven) or "invalid".
function showResult(cls, html) {
  const el = $("#verify-result");
  el.className = "result " + cls;
  el.innerHTML = html;
}

const LABELS = { verified: "VERIFIED", unpinned: "UNPINNED", unbound: "UNBOUND", signed_only: "SIGNED ONLY", invalid: "INVALID" };

// The node's verdict (POST /v1/verify, the same one `vouch verify` and MCP give): the
// status, then each fact on its own line.
function renderVerdict(v) {
  const label = LABELS[v.status] || "INVALID";
  const cls = v.status === "verified" ? "valid" : v.status === "invalid" ? "invalid" : "unverified";
  const facts = [];
  if (v.signature) facts.push(`signature by <code>${short(v.signature.key)}</code>: ${v.signature.ok ? "valid" : "invalid"}`);
  if (v.provider_registered !== null && v.provider_registered !== undefined)
    facts.push(v.provider_registered ? "a registered provider of this chain" : "<b>not</b> a registered provider of this chain");
  if (v.committed) {
    const c = v.committed;
    facts.push(`committed at block ${c.height} (<code>${short(c.block)}</code>) of chain <code>${short(c.chain)}</code>` +
      (v.chain_matches_pinned ? " (this chain)" : ""));
    facts.push(c.bound_to_job_and_signer
      ? `bound to job <code>${short(c.job)}</code> and to the signer (${c.bound_by === "ledger" ? "this node's ledger" : "commit transaction"})`
      : `<b>not bound</b> to job <code>${short(c.job)}</code> or to the signer`);
  } else if (v.status !== "invalid") {
    facts.push("<b>not committed</b> on any chain (no inclusion proof)");
  }
  if (v.certified) facts.push(`certified by ${v.certified.signers.map(short).join(", ")}` +
    (v.certified.quorum_of_pinned ? " (this chain's validators)" : ""));
  if (v.ledger && v.ledger.job) facts.push(`job ${esc(v.ledger.job.status)}` +
    (v.ledger.job.audit === null ? "" : v.ledger.job.audit ? ", audit passed" : ", <b>audit failed</b>"));
  const head = `<b>${label}</b>` + (v.receipt ? ` · receipt <code>${short(v.receipt)}</code>` : "") +
    (v.model_name ? ` · model ${esc(v.model_name)}` : "");
  const why = v.status === "verified" ? "" : `<div>${esc(v.reason || v.summary || "")}</div>`;
  showResult(cls, head + why + (facts.length ? `<ul class="facts"><li>${facts.join("</li><li>")}</li></ul>` : ""));
}

async function verify() {
  let receipt;
  try {
    receipt = JSON.parse($("#receipt-json").value);
  } catch (e) {
    showResult("invalid", "<b>INVALID</b>: not JSON (" + esc(e.message) + ")");
    return;
  }
  try {
    // Seeds are decimal strings (receipt version 2), so JSON.parse keeps them exact.
    const v = await api("/v1/verify", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(receipt) });
    renderVerdict(v);
  } catch (e) {
    showResult("invalid", "<b>ERROR</b>: " + esc(e.message));
  }
}

async function openReceipt() {
  const id = $("#receipt-id").value.trim();
  try {
    const r = await api("/v1/receipts/" + encodeURIComponent(id));
    $("#receipt-json").value = JSON.stringify(r, null, 2);
    await verify();
  } catch (e) {
    showResult("invalid", "<b>ERROR</b>: " + esc(e.message));
  }
}

$("#verify").addEventListener("click", verify);
$("#open-receipt").addEventListener("click", openReceipt);
refresh();
setInterval(refresh, 2000);
