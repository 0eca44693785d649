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

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
  if (text) setTimeout(() => { if (box.textContent === text) box.hidden = true; }, 6000);
}

function show(view) {
  for (const id of ["signin-view", "home-view", "draft-view"]) $(id).hidden = id !== view;
  $("whoami").textContent = identity ? `Signed in as ${me()}` : "";
  $("sign-out").hidden = !identity;
}

// -- routing -----------------------------------------------------------------------------

function route() {
  const match = window.location.hash.match(/^#\/drafts\/([^/]+)$/);
  const wanted = match ? decodeURIComponent(match[1]) : null;
  if (current && current.draftId !== wanted) {
    current.handle.close();
    current = null;
  }
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
    $("no-drafts").hidden = data.length > 0;
    $("no-drafts").textContent = archived
      ? "No archived drafts."
      : "No drafts yet: create one, or ask to be invited.";
  } catch (e) {
    say(`Cannot list drafts: ${e.message}`);
  }
}

// -- the draft view ----------------------------------------------------------------------

function openDraft(draftId) {
  show("draft-view");
  if (current) return;
  $("segments").replaceChildren();
  $("people").replaceChildren();
  $("draft-title").textContent = "…";
  $("live-controls").hidden = false;
  $("revoked").hidden = true;
  $("archived-badge").hidden = true;
  for (const box of document.querySelectorAll("#draft-view .error")) showError(box, null);
  current = { draftId, state: null, handle: null, rowErrors: new Map() };
  const credentials = identity.token ? { token: identity.token } : { userId: identity.userId };
  current.handle = connectDraft(draftId, {
    ...credentials,
    onState: (state) => {
      if (current?.draftId !== draftId) return;
      current.state = state;
      render(state);
    },
    onStatus: (status, detail) => showStatus(status, detail),
  });
}

function showStatus(status, detail) {
  const badge = $("badge");
  badge.dataset.status = status;
  badge.textContent = BADGES[status] ?? status;
  badge.title = detail ? `${detail.code}: ${detail.message}` : "";
  if (status === "stopped" && detail) {
    say(detail.code === "token_expired" ? "Your token expired: sign out and paste a new one." : detail.message);
  }
  if (status === "revoked") {
    // access was taken away (close 4403): ringlog.js has stopped for good; so does the page
    $("live-controls").hidden = true;
    $("revoked").hidden = false;
  }
  if (current?.state) renderControls(current.state, status);
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
        actions.append(button(`Make ${to}`, "secondary small role-switch",
          (e) => rowAction(e.target, p.user_id, "PATCH", { role: to }), off));
      }
      if (mayRemove(myRole, p)) {
        const leaving = p.user_id === me();
        actions.append(button(leaving ? "Leave" : "Remove", "secondary small remove",
          (e) => rowAction(e.target, p.user_id, "DELETE", undefined), off));
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
  select.replaceChildren(
    ...targets.map((u) => {
      const option = document.createElement("option");
      option.value = u;
      option.textContent = u;
      return option;
    }),
  );
  if (targets.includes(chosen)) select.value = chosen;
  for (const id of ["pass-to", "pass-button"]) $(id).disabled = !holder || targets.length === 0 || stopped;
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
    if (box) showError(box, e.message);
    else say(e.message);
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
  if (!sub) return say("That does not look like a JWT with a 'sub' claim.");
  return signIn({ token, userId: sub });
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
  window.location.hash = `#/drafts/${encodeURIComponent($("open-id").value.trim())}`;
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
  const ok = await mutate(e.target, () =>
    api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/collaborators`, { user_id: user, role: $("invite-role").value }));
  if (ok) {
    $("invite-user").value = "";
    say(`Invited ${user}.`, "info");
  }
});

$("archive-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const draftId = current.draftId;
  const action = current.state?.archived ? "unarchive" : "archive";
  await mutate(e.target, () => api("POST", `/v1/collab/drafts/${encodeURIComponent(draftId)}/${action}`));
});

window.addEventListener("hashchange", route);
route();
