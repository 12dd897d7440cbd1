// Broker's admin console: the user API with the admin token in request bodies, and the admin API
// (/admin/...) with it in the X-Admin-Token header. The token lives in sessionStorage only: never in
// a URL, a cookie or local storage. Everything shown is set as text, never parsed as HTML.

const TOKEN_KEY = "broker-admin-token";
const REFRESH_MS = 1500;

const $ = (selector) => document.querySelector(selector);
const token = () => sessionStorage.getItem(TOKEN_KEY);

/** POSTs `body` (plus the admin token) to a user-API route; resolves to the JSON answer. */
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, admin_token: token() }),
  });
  return answer(response);
}

/** Calls an admin-API route with the token in its header. */
async function admin(path, init = {}) {
  const headers = { ...(init.headers || {}), "x-admin-token": token() };
  return fetch(path, { ...init, headers });
}

async function answer(response) {
  const json = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((json && json.error) || `${response.status} ${response.statusText}`);
  }
  return json;
}

function cell(row, text) {
  const td = row.insertCell();
  td.textContent = text;
  return td;
}

function button(label, onClick, secondary = true) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  if (secondary) element.className = "secondary";
  element.addEventListener("click", onClick);
  return element;
}

function showError(selector, error) {
  $(selector).textContent = error ? String(error.message || error) : "";
}

// ---- sign in / out

async function signIn(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    await post("/list_users", {});
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw error;
  }
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  refresh();
  setInterval(refresh, REFRESH_MS);
}

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("#sign-in-error", null);
  try {
    await signIn($("#token").value);
  } catch (error) {
    showError("#sign-in-error", error);
  }
});

$("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

async function refresh() {
  await Promise.all([
    loadUsers().catch((e) => showError("#users-error", e)),
    loadGuests().catch(() => {}),
    loadLimits().catch((e) => showError("#limits-error", e)),
    loadWebhooks().catch((e) => showError("#webhooks-error", e)),
  ]);
}

// ---- users

async function loadUsers() {
  const users = await post("/list_users", {});
  const body = $("#users tbody");
  body.replaceChildren();
  for (const user of users) {
    const row = body.insertRow();
    row.dataset.username = user.username;
    row.className = user.revoked ? "revoked" : "";
    cell(row, user.username);
    cell(row, user.tenant_name);
    cell(row, (user.scopes || []).join(", "));
    const status = cell(row, user.revoked ? "revoked" : "active");
    status.className = "status";
    const badge = document.createElement("span");
    badge.className = user.revoked ? "badge revoked" : "badge";
    badge.textContent = status.textContent;
    status.replaceChildren(badge);
    const actions = row.insertCell();
    actions.append(
      button(user.revoked ? "Unrevoke" : "Revoke", () =>
        act(user.revoked ? "/unrevoke_user" : "/revoke_user", { username: user.username })),
      button("Scopes…", () => {
        const scopes = prompt(`Scopes of ${user.username}, comma-separated`, (user.scopes || []).join(", "));
        if (scopes !== null) act("/update_user", { username: user.username, scopes: splitList(scopes) });
      }),
      button("Tenant…", () => {
        const tenant = prompt(`Tenant of ${user.username}`, user.tenant_name);
        if (tenant) act("/update_user", { username: user.username, tenant_name: tenant });
      }),
    );
    if (user.two_factor) actions.append(button("QR", () => showQr(user.username)));
  }
}

function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

async function act(path, body) {
  showError("#users-error", null);
  try {
    await post(path, body);
    await loadUsers();
  } catch (error) {
    showError("#users-error", error);
  }
}

async function showQr(username) {
  try {
    const { qr } = await post("/create_qr", { username, issuer: "Broker" });
    const box = $("#qr");
    box.querySelector("img").src = `data:image/png;base64,${qr}`;
    box.querySelector("p").textContent = `Scan with an authenticator app to enrol ${username}.`;
    box.hidden = false;
  } catch (error) {
    showError("#users-error", error);
  }
}

$("#create-user").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const user = {
    username: form.username.value,
    password: form.password.value,
    tenant_name: form.tenant_name.value,
    two_factor: form.two_factor.checked,
  };
  const scopes = splitList(form.scopes.value);
  if (scopes.length) user.scopes = scopes;
  showError("#users-error", null);
  try {
    await post("/create_user", user);
    form.reset();
    await loadUsers();
  } catch (error) {
    showError("#users-error", error);
  }
});

// ---- events: a live view of one tenant, and inserts

let watching = null;

$("#watch").addEventListener("submit", (event) => {
  event.preventDefault();
  watch(event.target.tenant.value, event.target.events.value.trim());
});

/** The tenant and filter being watched, for "load older". */
let watched = null;

/** Watches `tenant` live; `events` is an optional `?events=` filter. */
async function watch(tenant, events) {
  if (watching) watching.abort();
  watching = new AbortController();
  watched = { tenant, events };
  $("#events tbody").replaceChildren();
  $("#load-older").hidden = false;
  $("#watching").textContent = events ? `watching ${tenant}: ${events}` : `watching ${tenant}`;
  showError("#events-error", null);
  let url = `/admin/sse?tenant=${encodeURIComponent(tenant)}`;
  if (events) url += `&events=${encodeURIComponent(events)}`;
  try {
    const response = await admin(url, { signal: watching.signal });
    if (!response.ok) await answer(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        showEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    $("#watching").textContent = `stream of ${tenant} ended`;
  } catch (error) {
    if (error.name !== "AbortError") showError("#events-error", error);
  }
}

/** One SSE frame: `event:<name>\nid:<seq>\ndata:<json>`, shown at the top (the newest). */
function showEvent(frame) {
  const fields = {};
  for (const line of frame.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  if (!("data" in fields)) return;
  addRow(0, fields.id, fields.event || "message", fields.data);
}

/** A row for event `id` at `index` of the table (-1: the bottom), unless it is shown already. */
function addRow(index, id, name, data) {
  const body = $("#events tbody");
  if (body.querySelector(`tr[data-id="${CSS.escape(String(id))}"]`)) return;
  const row = body.insertRow(index);
  row.dataset.id = id;
  cell(row, id);
  cell(row, name);
  row.insertCell().appendChild(document.createElement("code")).textContent = data;
}

/** "Load older": the page of history below the oldest event shown, added at the bottom. */
$("#load-older").addEventListener("click", async () => {
  if (!watched) return;
  showError("#events-error", null);
  const ids = [...$("#events tbody").rows].map((row) => Number(row.dataset.id));
  let url = `/admin/events?tenant=${encodeURIComponent(watched.tenant)}&limit=50`;
  if (watched.events) url += `&events=${encodeURIComponent(watched.events)}`;
  if (ids.length) url += `&before=${Math.min(...ids)}`;
  try {
    const page = await answer(await admin(url));
    for (const event of page.events) addRow(-1, event.id, event.event, JSON.stringify(event.data));
    // Nothing beyond this page: the button goes until the next watch.
    if (page.next === null) $("#load-older").hidden = true;
  } catch (error) {
    showError("#events-error", error);
  }
});

$("#insert").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  showError("#events-error", null);
  try {
    const data = JSON.parse(form.data.value);
    const response = await admin("/admin/insert", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tenant_name: form.tenant_name.value, event: form.event.value, data }),
    });
    await answer(response);
  } catch (error) {
    showError("#events-error", error);
  }
});

// ---- guests

async function loadGuests() {
  const listing = await answer(await admin("/admin/guests"));
  const body = $("#guests tbody");
  body.replaceChildren();
  const rows = [{ ...listing.default, serves: "every other tenant" }, ...listing.tenants];
  for (const guest of rows) {
    const row = body.insertRow();
    row.dataset.file = guest.file;
    cell(row, guest.file);
    cell(row, guest.serves || `tenant ${guest.tenant}`);
    cell(row, new Date(guest.loaded_at).toLocaleString());
    cell(row, guest.calls);
    cell(row, guest.rejections);
    cell(row, guest.failures);
  }
  const refused = $("#refused tbody");
  refused.replaceChildren();
  for (const file of listing.refused) {
    const row = refused.insertRow();
    cell(row, file.file);
    cell(row, file.reason);
  }
}

// ---- limits: the flags' values, a tenant's override (editable) and what is in force for it

const LIMITS = [
  ["user_insert_rate", "inserts/s per user"],
  ["user_insert_burst", "inserts at once per user"],
  ["tenant_insert_rate", "inserts/s per tenant"],
  ["tenant_insert_burst", "inserts at once per tenant"],
  ["user_streams", "open streams per user"],
  ["tenant_streams", "open streams per tenant"],
  ["tenant_max_bytes", "stored bytes per tenant"],
];
// Limits with no per-tenant value, shown for their refusals.
const ADDRESS_LIMITS = [["login_rate", "password checks/s per address"]];
let limitsTenant = null;

async function loadLimits() {
  // While an override is being edited, the refresh leaves the table alone.
  if (document.activeElement && document.activeElement.closest("#limits")) return;
  const query = limitsTenant ? `?tenant=${encodeURIComponent(limitsTenant)}` : "";
  const limits = await answer(await admin(`/admin/tenant_limits${query}`));
  const tenant = limits.tenant;
  const body = $("#limits tbody");
  body.replaceChildren();
  for (const [name, label] of [...LIMITS, ...ADDRESS_LIMITS]) {
    const row = body.insertRow();
    row.dataset.limit = name;
    cell(row, `${label} (${name})`);
    cell(row, limits.defaults[name] ?? "");
    const override = row.insertCell();
    if (tenant && limits.defaults[name] !== undefined) {
      const input = document.createElement("input");
      input.name = name;
      input.type = "number";
      input.min = "0";
      input.step = "any";
      input.placeholder = "default";
      input.value = tenant.override[name] ?? "";
      override.append(input);
    }
    cell(row, tenant ? tenant.in_force[name] ?? "" : "");
    cell(row, limits.refused[name] ?? 0);
  }
  $("#limits-save").hidden = !tenant;
  $("#limits-open").textContent = tenant ? `${tenant.open_streams} open streams of ${tenant.name} here` : "";
}

$("#limits-tenant").addEventListener("submit", (event) => {
  event.preventDefault();
  limitsTenant = new FormData(event.target).get("tenant").trim() || null;
  showError("#limits-error", null);
  loadLimits().catch((e) => showError("#limits-error", e));
});

$("#limits-save").addEventListener("click", async () => {
  const limits = {};
  for (const input of document.querySelectorAll("#limits input")) {
    if (input.value !== "") limits[input.name] = Number(input.value);
  }
  try {
    await answer(await admin("/admin/tenant_limits", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tenant: limitsTenant, limits }),
    }));
    showError("#limits-error", null);
    document.activeElement.blur();
    await loadLimits();
  } catch (error) {
    showError("#limits-error", error);
  }
});

// ---- webhooks: each with its delivery state; a paused one is resumed here

async function loadWebhooks() {
  const { webhooks } = await answer(await admin("/admin/webhooks"));
  const body = $("#webhooks tbody");
  body.replaceChildren();
  for (const webhook of webhooks) {
    const row = body.insertRow();
    row.dataset.id = webhook.id;
    row.dataset.state = webhook.state;
    cell(row, webhook.tenant);
    cell(row, webhook.url);
    cell(row, webhook.events || "(all)");
    const state = row.insertCell();
    const badge = document.createElement("span");
    badge.className = `badge ${webhook.state}`;
    badge.textContent = webhook.failures ? `${webhook.state} (${webhook.failures} failed)` : webhook.state;
    state.append(badge);
    cell(row, webhook.cursor).className = "cursor";
    cell(row, webhook.delivered).className = "delivered";
    cell(row, webhook.last_error ?? "").className = "last-error";
    const actions = row.insertCell();
    if (webhook.state === "paused") {
      actions.append(button("Resume", () => webhookAct("/admin/webhooks/resume", webhook.id)));
    }
    actions.append(button("Delete", () => {
      if (confirm(`Delete the webhook to ${webhook.url}?`)) webhookAct("/admin/webhooks/delete", webhook.id);
    }));
  }
}

async function webhookAct(path, id) {
  showError("#webhooks-error", null);
  try {
    await answer(await admin(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id }),
    }));
    await loadWebhooks();
  } catch (error) {
    showError("#webhooks-error", error);
  }
}

$("#register-webhook").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const fields = Object.fromEntries(["tenant", "url", "events", "secret"].map((name) => [name, form.get(name).trim()]));
  showError("#webhooks-error", null);
  try {
    await answer(await admin("/admin/webhooks", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(fields),
    }));
    event.target.reset();
    await loadWebhooks();
  } catch (error) {
    showError("#webhooks-error", error);
  }
});

// ---- start: a token from earlier in this tab signs in again

if (token()) signIn(token()).catch(() => {});
