// The demo page: sign in, list/create/open drafts, and a live draft view built on ringlog.js.
// The open draft and the user's inbox ride one WebSocket, /v1/ws (createSocketHub), however
// many drafts the page opens in turn; the open draft is still a connectDraft, with its resume,
// polling fallback and reconnect cadence.
import { ApiError, connectDraft, createSocketHub } from "./ringlog.js";

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
let current = null; // { draftId, handle, state, rowErrors: Map<user id, message>, presence }
let hub = null; // the one /v1/ws socket of the signed-in user (createSocketHub)
const titles = new Map(); // draft id → title, for the inbox's sentences
let inbox = null; // { items: [{position, event}], seen, follow }
const INBOX_MAX = 50;
const TYPING_IDLE_MS = 3000;
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
  sessionStorage.removeItem(STORAGE_KEY);
  identity = null;
  leaveDraft();
  stopHub();
  show("signin-view");
  if (!dev) {
    showError($("token-form").querySelector(".error"), `Your token was refused: ${why}`);
    return;
  }
  // a dev id refused: either this id (the server still documents dev sign-in: say why, keep the
  // form open) or dev sign-in itself is off (restarted without --dev-auth): ask the server which
  void learnAuthMode().then(() => {
    if (devAuth === true) showError($("dev-error"), `That user id was refused: ${why}`);
    else devAuth = false;
    if (!identity) show("signin-view"); // the notice and the form's state, as the server says now
  });
}

// Leave the open draft: a "typing…" this page set is cleared first (the user may stay present
// through another tab, whose state would otherwise keep saying so), then its stream ends.
function leaveDraft() {
  if (!current) return;
  const session = current;
  current = null;
  clearTimeout(session.typingTimer);
  if (session.typing) session.handle?.setPresence({ typing: false });
  session.handle?.close();
}

// -- routing -----------------------------------------------------------------------------

function route() {
  const match = window.location.hash.match(/^#\/drafts\/([^/]+)$/);
  const wanted = match ? decodeURIComponent(match[1]) : null;
  if (current && current.draftId !== wanted) leaveDraft();
  if (identity && !identity.token && devAuth === false) return signedOut("dev sign-in is off");
  if (!identity) return show("signin-view");
  startHub();
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
        meta.className = "muted meta";
        meta.textContent = `${row.seq} events · ${formatTime(row.updated_at)}`;
        li.append(a, meta);
        return li;
      }),
    );
    showError($("list-error"), null);
    for (const row of data) titles.set(row.id, row.title);
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
  for (const id of ["segments", "people", "pass-to", "presence-list"]) $(id).replaceChildren();
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
  const session = { draftId, state: null, handle: null, rowErrors: new Map(), presence: [], typing: false, typingTimer: null };
  current = session;
  const credentials = identity.token ? { token: identity.token } : { userId: identity.userId };
  session.handle = connectDraft(draftId, {
    ...credentials,
    WebSocket: hub.WebSocket, // the page's one socket
    onPresence: (members) => {
      if (current !== session) return;
      session.presence = members;
      renderPresence(members);
    },
    onState: (state) => {
      if (current !== session) return;
      const first = session.state === null;
      session.state = state;
      titles.set(state.id, state.title);
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
  if (status === "live") clearNetworkErrors();
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

function showError(box, text, { network = false } = {}) {
  if (!box) return;
  box.textContent = text ?? "";
  box.hidden = !text;
  // "the server cannot be reached" is cleared by itself once the page is live again
  if (network && text) box.dataset.network = "true";
  else delete box.dataset.network;
}

// Errors that say the server could not be reached, once it can be again (the badge is Live).
function clearNetworkErrors() {
  for (const box of document.querySelectorAll('.error[data-network="true"]')) showError(box, null);
}

// A mutation from a form; its error (the API's message) appears in the form's own .error box.
async function mutate(form, action) {
  const buttons = form.querySelectorAll("button");
  const box = form.querySelector(".error");
  showError(box, null);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await action();
    // the draft moved on: an earlier refusal shown under another form no longer applies
    for (const other of document.querySelectorAll("#draft-view .error")) showError(other, null);
    return true;
  } catch (e) {
    if (e.status === 401) signedOut(e.message);
    else showError(box, e.message, { network: e.code === "network" });
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

// -- one socket: the hub, the drafts list's live rows, presence and the inbox ---------------

function startHub() {
  if (hub) return;
  const credentials = identity.token ? { token: identity.token } : { userId: identity.userId };
  hub = createSocketHub(credentials);
  window.ringlogHub = hub; // for the browser tests: how many sockets the page opened
  const seenKey = `ringlog.inbox.seen.${me()}`;
  inbox = { items: [], seen: Number(localStorage.getItem(seenKey)) || 0, seenKey, follow: null };
  // from the start of the feed: the panel keeps the newest INBOX_MAX; a reconnect resumes after the last
  inbox.follow = hub.subscribeMe((item) => addInboxItem(item), 0);
  $("inbox").hidden = false;
  renderInbox();
}

function stopHub() {
  hub?.close();
  hub = null;
  inbox = null;
  $("inbox").hidden = true;
  $("inbox").open = false;
  $("inbox-items").replaceChildren();
}

// "typing…": set on input, cleared after TYPING_IDLE_MS without input and when the segment is sent.
function setTyping(typing, session = current) {
  if (!session || session !== current) return;
  clearTimeout(session.typingTimer);
  if (typing) session.typingTimer = setTimeout(() => setTyping(false, session), TYPING_IDLE_MS);
  if (session.typing === typing) return;
  session.typing = typing;
  session.handle.setPresence({ typing });
}

const AVATAR_COLOURS = ["#2856c6", "#1b7f3b", "#9a3db8", "#b3561e", "#0f7a86", "#a3316f", "#5b6b00", "#6a4bd6"];

function avatarColour(userId) {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return AVATAR_COLOURS[h % AVATAR_COLOURS.length];
}

function renderPresence(members) {
  const sorted = [...members].sort((a, b) =>
    (a.user_id === me() ? -1 : b.user_id === me() ? 1 : 0) || (a.since < b.since ? -1 : a.since > b.since ? 1 : 0));
  $("presence-list").replaceChildren(
    ...sorted.map((m) => {
      const li = document.createElement("li");
      li.dataset.userId = m.user_id;
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.style.background = avatarColour(m.user_id);
      avatar.textContent = (m.user_id[0] ?? "?").toUpperCase();
      avatar.setAttribute("aria-hidden", "true");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = m.user_id === me() ? "you" : m.user_id;
      li.append(avatar, name);
      if (m.state?.typing === true) {
        const typing = document.createElement("span");
        typing.className = "typing";
        typing.textContent = "typing…";
        li.append(typing);
        li.dataset.typing = "true";
      }
      return li;
    }),
  );
}

function addInboxItem(item) {
  if (!inbox || inbox.items.some((i) => i.position === item.position)) return;
  const e = item.event;
  if (e.type === "collab.draft_created" && e.data?.title) titles.set(e.draft_id, e.data.title);
  if (e.type === "collab.draft_updated" && e.data?.title) titles.set(e.draft_id, e.data.title);
  inbox.items.unshift(item); // positions arrive in order: newest first
  inbox.items.sort((a, b) => b.position - a.position);
  inbox.items.length = Math.min(inbox.items.length, INBOX_MAX);
  if (!titles.has(e.draft_id)) void learnTitle(e.draft_id);
  renderInbox();
  // the list shows what the feed changed (an invitation, a removal, a rename) without a Refresh
  if (current === null && !$("home-view").hidden) scheduleListReload();
}

let listReload = null;
function scheduleListReload() {
  clearTimeout(listReload);
  listReload = setTimeout(() => {
    if (current === null && !$("home-view").hidden) void loadDrafts();
  }, 300);
}

async function learnTitle(draftId) {
  titles.set(draftId, null); // asked once
  try {
    const { data } = await api("GET", `/v1/collab/drafts/${encodeURIComponent(draftId)}`);
    titles.set(draftId, data.title);
  } catch {
    return; // removed, or the server is away: the sentence names the id
  }
  renderInbox();
}

// One feed item in words ("bob passed you the ring on ‘Our story’").
function inboxText(event) {
  const title = `‘${titles.get(event.draft_id) ?? event.draft_id}’`;
  const actor = event.user_id === me() ? "you" : event.user_id;
  const Actor = actor === "you" ? "You" : actor;
  const d = event.data ?? {};
  switch (event.type) {
    case "collab.ring_passed":
      return actor === "you" ? `The ring came back to you on ${title}` : `${actor} passed you the ring on ${title}`;
    case "collab.collaborator_added":
      return `${Actor} added you to ${title} as ${d.role}`;
    case "collab.collaborator_removed":
      return actor === "you" ? `You left ${title}` : `You were removed from ${title} by ${actor}`;
    case "collab.role_changed":
      return `${Actor} made you a ${d.to_role} on ${title}`;
    case "collab.draft_created":
      return `You created ${title}`;
    case "collab.draft_updated":
      return `${Actor} updated ${title}`;
    case "collab.draft_archived":
      return `${Actor} archived ${title}`;
    case "collab.draft_unarchived":
      return `${Actor} unarchived ${title}`;
    default:
      return `${Actor}: ${event.type} on ${title}`;
  }
}

// Unread: items after the last one the user saw (kept per user), not caused by the user.
function unread(item) {
  return item.position > inbox.seen && item.event.user_id !== me();
}

function renderInbox() {
  if (!inbox) return;
  const count = inbox.items.filter(unread).length;
  $("inbox-count").textContent = String(count);
  $("inbox-count").hidden = count === 0;
  $("inbox-empty").hidden = inbox.items.length > 0;
  $("inbox-items").replaceChildren(
    ...inbox.items.map((item) => {
      const li = document.createElement("li");
      li.dataset.position = String(item.position);
      if (unread(item)) li.classList.add("unread");
      const a = document.createElement("a");
      a.href = `#/drafts/${encodeURIComponent(item.event.draft_id)}`;
      a.textContent = inboxText(item.event);
      a.addEventListener("click", () => {
        markInboxRead();
        $("inbox").open = false;
      });
      const when = document.createElement("small");
      when.className = "muted";
      when.textContent = formatTime(item.event.ts);
      li.append(a, when);
      return li;
    }),
  );
}

function markInboxRead() {
  if (!inbox || inbox.items.length === 0) return;
  inbox.seen = Math.max(inbox.seen, inbox.items[0].position);
  localStorage.setItem(inbox.seenKey, String(inbox.seen));
  renderInbox();
}

// -- wiring ------------------------------------------------------------------------------

function signIn(next) {
  identity = next;
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(identity));
  route();
}

// a tab closed or navigated away: clear its "typing…" while its socket can still say so
window.addEventListener("pagehide", () => {
  if (current?.typing) current.handle?.setPresence({ typing: false });
});

$("dev-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showError($("dev-error"), null);
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
  leaveDraft();
  stopHub();
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
  setTyping(false);
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

$("segment-content").addEventListener("input", () => setTyping($("segment-content").value.length > 0));
$("inbox").addEventListener("toggle", () => {
  if ($("inbox").open) markInboxRead();
});

window.addEventListener("hashchange", route);
learnAuthMode().then(route);
