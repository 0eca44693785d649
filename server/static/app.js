// The demo page: sign in, list/create/open drafts, and a live draft view built on ringlog.js.
import { ApiError, connectDraft } from "./ringlog.js";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "ringlog.identity";
const BADGES = {
  connecting: "🟡 Connecting",
  live: "🟢 Live",
  syncing: "🟡 Syncing",
  offline: "🔴 Offline",
  stopped: "⛔ Stopped",
  revoked: "⛔ No access",
};

let identity = loadIdentity();
let current = null; // { draftId, handle, state, rowErrors: Map<user id, message> }
// Whether this server accepts dev sign-in (X-User-Id): true/false once /openapi.json said so
// (its securitySchemes list "devUser" only when the server runs with --dev-auth); null: unknown.
let devAuth = null;

function loadIdentity() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY));
  } catch {
    return null;
  }
}

function jwtSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

function me() {
  return identity?.userId ?? null;
}

// Learn the server's auth mode from its OpenAPI document (API.md: GET /openapi.json).
async function learnAuthMode() {
  try {
    const response = await fetch("/openapi.json", { cache: "no-store" });
    const doc = response.ok ? await response.json() : null;
    devAuth = doc ? Boolean(doc.components?.securitySchemes?.devUser) : null;
  } catch {
    devAuth = null; // unknown: both sign-in forms stay open, a refusal says the rest
  }
}

function authHeaders() {
  return identity.token ? { Authorization: `Bearer ${identity.token}` } : { "X-User-Id": identity.userId };
}

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

// One REST call; mutations carry an Idempotency-Key and are retried with the same key.
async function api(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["Idempotency-Key"] = newKey();
  for (let attempt = 1; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (attempt >= 4) throw new ApiError(0, "network", "the server cannot be reached");
      await new Promise((r) => setTimeout(r, Math.random() * 250 * 2 ** attempt));
      continue;
    }
    if ((response.status === 429 || response.status === 503) && attempt < 4) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await new Promise((r) => setTimeout(r, wait * 1000));
      continue;
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      const err = payload?.error ?? {};
      throw new ApiError(response.status, err.code ?? "http_error", err.message ?? `HTTP ${response.status}`);
    }
    return payload;
  }
}

function show(view) {
  for (const id of ["signin-view", "home-view", "draft-view"]) $(id).hidden = id !== view;
  $("whoami").textContent = identity ? `Signed in as ${me()}${identity.token ? "" : " (dev)"}` : "";
  $("sign-out").hidden = !identity;
  const off = devAuth === false;
  $("dev-off").hidden = !off;
  for (const id of ["dev-user", "dev-button"]) $(id).disabled = off;
}

// The server refused our credentials (401): forget them and say why on the sign-in page.
function signedOut(why) {
  const dev = identity && !identity.token;
  if (dev) devAuth = false; // a dev id refused: this server runs without --dev-auth
  sessionStorage.removeItem(STORAGE_KEY);
  identity = null;
  if (current) {
    current.handle?.close();
    current = null;
  }
  show("signin-view");
  if (!dev) showError($("token-form").querySelector(".error"), `Your token was refused: ${why}`);
}

// -- routing -----------------------------------------------------------------------------

function route() {
  const match = window.location.hash.match(/^#\/drafts\/([^/]+)$/);
  const wanted = match ? decodeURIComponent(match[1]) : null;
  if (current && current.draftId !== wanted) {
    current.handle.close();
    current = null;
  }
  if (identity && !identity.token && devAuth === false) return signedOut("dev sign-in is off");
  if (!identity) return show("signin-view");
  if (wanted) return openDraft(wanted);
  show("home-view");
  return loadDrafts();
}

async function loadDrafts() {
  const list = $("draft-list");
  try {
    // the server lists archived drafts only when asked, and then only them (API.md)
    const archived = $("show-archived").checked;
    const { data } = await api("GET", `/v1/collab/drafts${archived ? "?archived=true" : ""}`);
    list.replaceChildren(
      ...data.map((row) => {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = `#/drafts/${encodeURIComponent(row.id)}`;
        a.textContent = row.title;
        a.dataset.draftId = row.id;
        const meta = document.createElement("small");
        meta.className = "muted";
        meta.textContent = `${row.seq} events · ${formatTime(row.updated_at)}`;
        li.append(a, meta);
        return li;
      }),
    );
    showError($("list-error"), null);
    $("no-drafts").hidden = data.length > 0;
    $("no-drafts").textContent = archived
      ? "No archived drafts."
      : "No drafts yet: create one, or ask to be invited.";
  } catch (e) {
    if (e.status === 401) return signedOut(e.message);
    showError($("list-error"), `Cannot list drafts: ${e.message}`);
  }
  return undefined;
}

// -- the draft view ----------------------------------------------------------------------

// A fresh draft view: nothing of the previous draft stays on screen while this one loads.
function resetDraftView(draftId) {
  $("draft-body").hidden = true;
  $("draft-error").hidden = true;
  $("draft-loading").hidden = false;
  $("draft-status").hidden = false;
  for (const id of ["segments", "people", "pass-to"]) $(id).replaceChildren();
  for (const id of ["draft-title", "draft-description", "holder", "updated", "copy-status", "invite-done", "append-hint"]) {
    $(id).textContent = "";
  }
  delete $("updated").dataset.seq;
  $("draft-id").textContent = draftId;
  $("your-turn").hidden = true;
  $("live-controls").hidden = false;
  $("revoked").hidden = true;
  $("archived-badge").hidden = true;
  $("archive-form").hidden = true;
  $("pass-hint").hidden = true;
  showStatus("connecting", null);
  for (const box of document.querySelectorAll("#draft-view .error")) showError(box, null);
  for (const control of document.querySelectorAll("#draft-body button, #draft-body input, #draft-body textarea, #draft-body select")) {
    control.disabled = true;
  }
  $("copy-id").disabled = false;
}

function openDraft(draftId) {
  show("draft-view");
  if (current) return;
  resetDraftView(draftId);
  const session = { draftId, state: null, handle: null, rowErrors: new Map() };
  current = session;
  const credentials = identity.token ? { token: identity.token } : { userId: identity.userId };
  session.handle = connectDraft(draftId, {
    ...credentials,
    onState: (state) => {
      if (current !== session) return;
      const first = session.state === null;
      session.state = state;
      render(state);
      if (first) {
        $("draft-loading").hidden = true;
        $("draft-body").hidden = false;
        $("draft-heading").focus();
      }
    },
    onStatus: (status, detail) => {
      if (current === session) showStatus(status, detail);
    },
  });
}

// The draft never loaded (bad id, not shared with us, …): only an error, no draft, no controls.
function loadFailed(draftId, detail) {
  if (detail?.code === "unauthorized") return signedOut(detail.message);
  const texts = {
    not_found: `There is no draft with the id “${draftId}”. Check the id, or open one from your list.`,
    forbidden: `You (${me()}) are not a collaborator on “${draftId}”: ask its creator to invite you.`,
  };
  $("draft-body").hidden = true;
  $("draft-loading").hidden = true;
  $("draft-status").hidden = true;
  $("status-detail").hidden = true;
  $("draft-error-text").textContent = texts[detail?.code] ?? detail?.message ?? "It could not be loaded.";
  $("draft-error").hidden = false;
  return undefined;
}

function showStatus(status, detail) {
  const badge = $("badge");
  badge.dataset.status = status;
  badge.textContent = BADGES[status] ?? status;
  badge.title = detail ? `${detail.code}: ${detail.message}` : "";
  if (status === "stopped" && current && current.state === null) return loadFailed(current.draftId, detail);
  if (status === "stopped" && detail?.code === "unauthorized") return signedOut(detail.message);
  // why the page stopped, next to the badge that says it did
  let why = null;
  if (status === "stopped" && detail) {
    why = detail.code === "token_expired" ? "Your token expired: sign out and paste a new one." : detail.message;
  }
  showError($("status-detail"), why);
  if (status === "revoked") {
    // access was taken away (close 4403): ringlog.js has stopped for good; so does the page
    $("live-controls").hidden = true;
    $("revoked").hidden = false;
  }
  if (current?.state) renderControls(current.state, status);
  return undefined;
}

function formatTime(ts) {
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

function render(state) {
  $("draft-title").textContent = state.title;
  $("draft-description").textContent = state.description;
  $("holder").textContent = state.ring_state.current_holder_id;
  $("updated").textContent = `Updated ${formatTime(state.updated_at)}`;
  $("updated").dataset.seq = String(state.seq);
  const list = $("segments");
  // segments only ever grow: append the new ones, keep the rest (and any selection) as they are
  const known = new Set([...list.children].map((li) => li.dataset.segmentId));
  if (known.size > state.segments.length) list.replaceChildren(), known.clear();
  for (const segment of state.segments) {
    if (known.has(String(segment.id))) continue;
    const li = document.createElement("li");
    li.dataset.segmentId = String(segment.id);
    const text = document.createElement("span");
    text.className = "content";
    text.textContent = segment.content;
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = `${segment.author_user_id} · ${formatTime(segment.created_at)}`;
    li.append(text, author);
    list.append(li);
  }
  $("no-segments").hidden = state.segments.length > 0;
  $("archived-badge").hidden = !state.archived;
  renderControls(state, $("badge").dataset.status);
}

// Who may remove whom (API.md "Access that changes live"): the creator anyone but themselves,
// a contributor viewers and themselves, a viewer themselves.
function mayRemove(myRole, target) {
  if (target.role === "creator") return false;
  if (myRole === "creator") return true;
  if (myRole === "contributor") return target.role === "viewer" || target.user_id === me();
  return myRole === "viewer" && target.user_id === me();
}

function button(text, className, onClick, disabled) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.disabled = disabled;
  b.addEventListener("click", onClick);
  return b;
}

// off: the actions are shown but disabled (archived, stopped); a revoked page shows none.
function renderPeople(state, off, revoked) {
  const myRole = revoked ? null : roleOf(state, me());
  const people = [{ user_id: state.creator_id, role: "creator" }, ...state.collaborators];
  $("people").replaceChildren(
    ...people.map((p) => {
      const li = document.createElement("li");
      li.dataset.userId = p.user_id;
      const who = document.createElement("span");
      who.className = "person";
      who.textContent = p.user_id;
      const role = document.createElement("small");
      role.className = "muted role";
      role.textContent = p.user_id === state.ring_state.current_holder_id ? `${p.role} · 💍` : p.role;
      who.append(role);
      const actions = document.createElement("span");
      actions.className = "actions";
      if (myRole === "creator" && p.role !== "creator") {
        const to = p.role === "contributor" ? "viewer" : "contributor";
        const roleSwitch = button(`Make ${to}`, "secondary small role-switch",
          (e) => rowAction(e.target, p.user_id, "PATCH", { role: to }), off);
        roleSwitch.setAttribute("aria-label", `Make ${p.user_id} ${to}`);
        actions.append(roleSwitch);
      }
      if (mayRemove(myRole, p)) {
        const leaving = p.user_id === me();
        const remove = button(leaving ? "Leave" : "Remove", "secondary small remove",
          (e) => rowAction(e.target, p.user_id, "DELETE", undefined), off);
        remove.setAttribute("aria-label", leaving ? "Leave this draft" : `Remove ${p.user_id}`);
        actions.append(remove);
      }
      const error = document.createElement("small");
      error.className = "error";
      error.setAttribute("role", "alert");
      showError(error, current?.rowErrors.get(p.user_id) ?? null);
      actions.append(error);
      li.append(who, actions);
      return li;
    }),
  );
}

function roleOf(state, userId) {
  if (userId === state.creator_id) return "creator";
  return state.collaborators.find((c) => c.user_id === userId)?.role ?? null;
}

function renderControls(state, status) {
  const holder = state.ring_state.current_holder_id === me();
  const role = roleOf(state, me());
  const canEdit = role === "creator" || role === "contributor";
  const ended = status === "stopped" || status === "revoked";
  const stopped = ended || state.archived === true; // archived: every mutation but (un)archive is 409
  $("your-turn").hidden = !holder || stopped; // a revoked page never hears the ring come back
  for (const id of ["segment-content", "append-button"]) $(id).disabled = !holder || stopped;
  $("append-hint").textContent = state.archived
    ? "The draft is archived: nothing can change until the creator unarchives it."
    : holder ? "You hold the ring." : `Waiting for ${state.ring_state.current_holder_id}.`;
  $("archive-form").hidden = role !== "creator" || status === "revoked";
  $("archive-button").textContent = state.archived ? "Unarchive" : "Archive";
  $("archive-button").disabled = ended;
  renderPeople(state, stopped, status === "revoked");
  const targets = [state.creator_id, ...state.collaborators.filter((c) => c.role === "contributor").map((c) => c.user_id)]
    .filter((u) => u !== me());
  const select = $("pass-to");
  const chosen = select.value;
  const option = (value, text) => {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  };
  select.replaceChildren(
    ...(targets.length ? targets.map((u) => option(u, u)) : [option("", "(no one to pass to)")]),
  );
  if (targets.includes(chosen)) select.value = chosen;
  for (const id of ["pass-to", "pass-button"]) $(id).disabled = !holder || targets.length === 0 || stopped;
  // why the list is empty or cannot be used, under it
  let passHint = "";
  if (ended) passHint = "";
  else if (state.archived) passHint = "The draft is archived: the ring stays where it is.";
  else if (!holder) passHint = `Only the ring holder can pass it: ${state.ring_state.current_holder_id} holds it now.`;
  else if (targets.length === 0) {
    passHint = "No one to pass the ring to: only contributors can hold it. Invite someone as a contributor below first.";
  }
  $("pass-hint").textContent = passHint;
  $("pass-hint").hidden = !passHint;
  for (const id of ["invite-user", "invite-role", "invite-button"]) $(id).disabled = !canEdit || stopped;
}

function showError(box, text) {
  if (!box) return;
  box.textContent = text ?? "";
  box.hidden = !text;
}

// A mutation from a form; its error (the API's message) appears in the form's own .error box.
async function mutate(form, action) {
  const buttons = form.querySelectorAll("button");
  const box = form.querySelector(".error");
  showError(box, null);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await action();
    return true;
  } catch (e) {
    if (e.status === 401) signedOut(e.message);
    else showError(box, e.message);
    return false;
  } finally {
    if (current?.state) renderControls(current.state, $("badge").dataset.status);
    else buttons.forEach((b) => { b.disabled = false; });
  }
}

// Remove (DELETE) or change the role of (PATCH) one collaborator; errors go to that person's row.
async function rowAction(control, userId, method, body) {
  const draftId = current.draftId;
  control.disabled = true;
  current.rowErrors.delete(userId);
  try {
    await api(method, `/v1/collab/drafts/${encodeURIComponent(draftId)}/collaborators/${encodeURIComponent(userId)}`, body);
  } catch (e) {
    if (current?.draftId === draftId) current.rowErrors.set(userId, e.message);
  } finally {
    if (current?.draftId === draftId && current.state) renderControls(current.state, $("badge").dataset.status);
  }
}

// -- wiring ------------------------------------------------------------------------------

function signIn(next) {
  identity = next;
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(identity));
  route();
}

$("dev-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn({ userId: $("dev-user").value.trim() });
});

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token-input").value.trim();
  const sub = jwtSubject(token);
  const box = e.target.querySelector(".error");
  showError(box, sub ? null : "That does not look like a JWT with a 'sub' claim.");
  if (sub) signIn({ token, userId: sub });
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(STORAGE_KEY);
  identity = null;
  window.location.hash = "#/";
  route();
});

$("refresh-drafts").addEventListener("click", () => loadDrafts());
$("show-archived").addEventListener("change", () => loadDrafts());

$("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  await mutate(e.target, async () => {
    const { data } = await api("POST", "/v1/collab/drafts", { title: $("new-title").value });
    $("new-title").value = "";
    window.location.hash = `#/drafts/${encodeURIComponent(data.id)}`;
  });
});

$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const draftId = $("open-id").value.trim();
  showError(e.target.querySelector(".error"), draftId ? null : "Enter a draft id.");
  if (draftId) window.location.hash = `#/drafts/${encodeURIComponent(draftId)}`;
});

// Copy with the Clipboard API; where it is missing or refused (plain http on another host),
// a selected off-screen textarea and execCommand("copy"); failing both, the id is selected.
async function copyText(text) {
  if (window.isSecureContext && navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission refused: try the fallback
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.readOnly = true;
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

$("copy-id").addEventListener("click", async () => {
  const draftId = $("draft-id").textContent;
  const ok = await copyText(draftId);
  $("copy-id").focus();
  if (!ok) window.getSelection()?.selectAllChildren($("draft-id"));
  $("copy-status").textContent = ok ? "Copied." : "Copying was refused: the id is selected, press Ctrl+C.";
});

$("append-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const draftId = current.draftId;
  const ok = await mutate(e.target, () =>
    api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/segments`, { content: $("segment-content").value }));
  if (ok) $("segment-content").value = "";
});

$("pass-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const draftId = current.draftId;
  await mutate(e.target, () =>
    api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/ring/pass`, { to_user_id: $("pass-to").value }));
});

$("invite-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const draftId = current.draftId;
  const user = $("invite-user").value.trim();
  const role = $("invite-role").value;
  $("invite-done").textContent = "";
  const ok = await mutate(e.target, () =>
    api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/collaborators`, { user_id: user, role }));
  $("invite-done").textContent = ok ? `Invited ${user} as a ${role}.` : "";
  if (ok) $("invite-user").value = "";
});

$("archive-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const draftId = current.draftId;
  const action = current.state?.archived ? "unarchive" : "archive";
  await mutate(e.target, () => api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/${action}`));
});

window.addEventListener("hashchange", route);
learnAuthMode().then(route);
