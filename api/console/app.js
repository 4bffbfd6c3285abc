// The chatledger operations console. It speaks only the GraphQL contract (queries and
// mutations over POST /graphql, live changes over graphql-transport-ws) and reads the audit
// head; it holds no rule of its own beyond how to show what the API says. Every value from
// the API reaches the page as text (textContent), never as markup.

const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element: h("button", {class: "x", onclick: f}, "text", child…). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const session = {
  token: sessionStorage.getItem("chatledger.token"),
  viewer: null, // {id, name, role, stakeholders, online}
  view: "chats",
  chatId: null,
  filters: { stakeholder: "", status: "", tag: "", assignedTo: "", waiting: false },
  socket: null,
};

// ---- talking to the API -------------------------------------------------------------------

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

class ApiError extends Error {}

/** Runs a GraphQL operation; an error is shown in words and thrown. */
async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(session.token ? { authorization: `Bearer ${session.token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    showError(`The server cannot be reached: ${e.message}`);
    throw new ApiError(e.message);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok && !(body && body.errors)) {
    const message = (body && body.message) || `The server answered ${response.status}`;
    showError(message);
    if (response.status === 401) signOut(false);
    throw new ApiError(message);
  }
  if (body.errors && body.errors.length) {
    const error = body.errors[0];
    const code = error.extensions && error.extensions.code;
    showError(code ? `${error.message} (${code})` : error.message);
    if (code === "UNAUTHENTICATED") signOut(false);
    throw new ApiError(error.message);
  }
  return body.data;
}

// ---- words and times ----------------------------------------------------------------------

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const role = () => (session.viewer ? session.viewer.role : "");
const mayChange = () => role() !== "auditor";
const leads = () => role() === "lead" || role() === "admin";

function countdown(dueAt) {
  const left = Math.round((new Date(dueAt) - Date.now()) / 1000);
  const abs = Math.abs(left);
  const text = `${Math.floor(abs / 60)}:${String(abs % 60).padStart(2, "0")}`;
  return { text: left < 0 ? `late ${text}` : text, late: left < 0, soon: left >= 0 && left < 60 };
}

function countdownEl(dueAt) {
  return h("span", { class: "countdown", dataset: { due: dueAt }, title: `due ${time(dueAt)}` });
}

/** Every SLA countdown on the page moves each second. */
function tick() {
  for (const el of document.querySelectorAll("[data-due]")) {
    const c = countdown(el.dataset.due);
    el.textContent = c.text;
    el.classList.toggle("late", c.late);
    el.classList.toggle("soon", c.soon);
  }
}
setInterval(tick, 1000);

const seen = JSON.parse(localStorage.getItem("chatledger.seen") || "{}");
function markSeen(chat) {
  seen[chat.chatId] = chat.lastIncomingMessageAt || new Date().toISOString();
  localStorage.setItem("chatledger.seen", JSON.stringify(seen));
}
const unread = (chat) =>
  chat.lastIncomingMessageAt && (!seen[chat.chatId] || seen[chat.chatId] < chat.lastIncomingMessageAt);

// ---- signing in ---------------------------------------------------------------------------

function renderSignIn() {
  $("#nav").replaceChildren();
  $("#who").replaceChildren();
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const token = h("input", { id: "admin-token", type: "password", autocomplete: "off" });
  const signIn = async (event) => {
    event.preventDefault();
    clearError();
    const data = await gql(
      "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
      { e: email.value, p: password.value },
    ).catch(() => null);
    if (data) start(data.login.token);
  };
  const useToken = (event) => {
    event.preventDefault();
    clearError();
    if (token.value.trim()) start(token.value.trim());
  };
  $("#main").replaceChildren(
    h("form", { class: "card signin", onsubmit: signIn, "aria-label": "Sign in" },
      h("h1", {}, "Sign in"),
      h("label", {}, "Email", email),
      h("label", {}, "Password", password),
      h("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in")),
    h("form", { class: "card signin", onsubmit: useToken, "aria-label": "Admin token" },
      h("label", {}, "Or an admin token", token),
      h("button", { type: "submit", id: "use-token" }, "Use the token")),
  );
  email.focus();
}

async function start(token) {
  session.token = token;
  sessionStorage.setItem("chatledger.token", token);
  const data = await gql("{ me { id name role stakeholders online } }").catch(() => null);
  if (!data) return;
  session.viewer = data.me || { id: null, name: "admin token", role: "admin", stakeholders: [], online: false };
  connectLive();
  renderWho();
  go(session.view);
}

async function signOut(tell = true) {
  if (tell && session.viewer && session.viewer.id) {
    await gql("mutation { logout }").catch(() => null);
  }
  session.token = null;
  session.viewer = null;
  sessionStorage.removeItem("chatledger.token");
  if (session.socket) session.socket.close();
  session.socket = null;
  renderSignIn();
}

function renderWho() {
  const v = session.viewer;
  const items = [h("span", { id: "me" }, `${v.name} (${v.role})`)];
  if (v.id && v.role !== "auditor") {
    items.push(h("button", {
      id: "online", "aria-pressed": String(v.online),
      onclick: async () => {
        const data = await gql("mutation($o: Boolean!) { setMyStatus(online: $o) { online } }", { o: !v.online }).catch(() => null);
        if (data) { v.online = data.setMyStatus.online; renderWho(); }
      },
    }, v.online ? "Online" : "Offline"));
  }
  items.push(h("button", { id: "sign-out", onclick: () => signOut() }, "Sign out"));
  $("#who").replaceChildren(...items);
}

// ---- navigation ---------------------------------------------------------------------------

function views() {
  const all = [["chats", "Chats"]];
  if (leads()) all.push(["sla", "SLA board"]);
  if (role() === "auditor" || role() === "admin") all.push(["audit", "Audit"]);
  return all;
}

function go(view) {
  if (!views().some(([v]) => v === view)) view = "chats";
  session.view = view;
  $("#nav").replaceChildren(...views().map(([v, label]) =>
    h("a", { href: `#${v}`, id: `nav-${v}`, "aria-current": v === view ? "page" : false,
      onclick: (e) => { e.preventDefault(); go(v); } }, label)));
  clearError();
  if (view === "sla") renderSlaBoard();
  else if (view === "audit") renderAudit();
  else renderDesk();
}

// ---- live changes -------------------------------------------------------------------------

let refreshTimer = null;
const changed = new Set();
/** Reloads what changed, once, after a burst of changes. */
function refreshSoon(chatId) {
  if (chatId) changed.add(chatId);
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    const open = changed.has(session.chatId);
    changed.clear();
    if (session.view === "chats") {
      loadChatList();
      if (open) loadChat(session.chatId);
    } else if (session.view === "sla") {
      loadSlaBoard();
    }
  }, 150);
}

let retryIn = 2000;

function connectLive() {
  if (session.socket) session.socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/graphql/ws`, "graphql-transport-ws");
  session.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({
    type: "connection_init", payload: { Authorization: `Bearer ${session.token}` },
  }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      retryIn = 2000;
      socket.send(JSON.stringify({ id: "updated", type: "subscribe",
        payload: { query: "subscription { chatUpdated { chatId } }" } }));
      socket.send(JSON.stringify({ id: "alerts", type: "subscribe",
        payload: { query: "subscription { slaAlert { chatId customerNumber customerName stakeholder sla { alertedAt escalatedAt } } }" } }));
      document.body.dataset.live = "connected";
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    } else if (message.type === "next" && !(message.payload && message.payload.data)) {
      showError(`A live update failed: ${JSON.stringify(message.payload && message.payload.errors)}`);
    } else if (message.type === "next" && message.id === "updated") {
      refreshSoon(message.payload.data.chatUpdated.chatId);
    } else if (message.type === "next" && message.id === "alerts") {
      alertArrived(message.payload.data.slaAlert);
    } else if (message.type === "error") {
      showError(`Live updates refused: ${JSON.stringify(message.payload)}`);
    }
  };
  socket.onclose = (event) => {
    document.body.dataset.live = "closed";
    if (session.socket !== socket || !session.token) return;
    // 4401/4403: the token was refused or has ended (logged out, deactivated, expired).
    if (event.code === 4401 || event.code === 4403) {
      showError(`Live updates stopped: ${event.reason || "the sign-in has ended"}. Sign in again.`);
      signOut(false);
      return;
    }
    setTimeout(() => session.token && session.socket === socket && connectLive(), retryIn);
    retryIn = Math.min(retryIn * 2, 60000);
  };
}

// ---- the desk: chats and one chat ---------------------------------------------------------

function renderDesk() {
  const f = session.filters;
  const input = (id, value, onchange, attrs = {}) =>
    h("input", { id, value, ...attrs, onchange: (e) => { onchange(e.target); loadChatList(); } });
  const stakeholders = session.viewer.stakeholders;
  const filters = h("form", { class: "filters", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "Stakeholder",
      stakeholders.length
        ? h("select", { id: "filter-stakeholder", onchange: (e) => { f.stakeholder = e.target.value; loadChatList(); } },
          h("option", { value: "" }, "all mine"),
          ...stakeholders.map((s) => h("option", { value: s, selected: s === f.stakeholder }, s)))
        : input("filter-stakeholder", f.stakeholder, (t) => { f.stakeholder = t.value.trim(); }, { size: 10 })),
    h("label", {}, "Status",
      h("select", { id: "filter-status", onchange: (e) => { f.status = e.target.value; loadChatList(); } },
        ...["", "OPEN", "ASSIGNED", "AWAITING_CUSTOMER", "RESOLVED", "CLOSED"].map((s) =>
          h("option", { value: s, selected: s === f.status }, s ? s.toLowerCase().replace("_", " ") : "any")))),
    h("label", {}, "Tag", input("filter-tag", f.tag, (t) => { f.tag = t.value.trim(); }, { size: 10 })),
    h("label", {}, "Assignee", h("select", { id: "filter-assignee",
      onchange: (e) => { f.assignedTo = e.target.value; loadChatList(); } }, h("option", { value: "" }, "anyone"))),
    h("label", {}, h("input", { id: "filter-waiting", type: "checkbox", checked: f.waiting,
      onchange: (e) => { f.waiting = e.target.checked; loadChatList(); } }), "Waiting for us"));
  $("#main").replaceChildren(h("div", { class: "desk" },
    h("section", { "aria-label": "Chats" }, filters, h("ul", { class: "list", id: "chat-list" })),
    h("section", { id: "chat", class: "card", "aria-label": "Chat" },
      h("p", { class: "muted" }, "Choose a chat."))));
  gql("query($s: String) { executives(stakeholder: $s) { id name online } }", { s: f.stakeholder || null })
    .then((data) => {
      const select = $("#filter-assignee");
      if (!select) return;
      select.append(...data.executives.map((e) =>
        h("option", { value: e.id, selected: e.id === f.assignedTo }, `${e.name}${e.online ? " (online)" : ""}`)));
    }).catch(() => null);
  loadChatList();
  if (session.chatId) loadChat(session.chatId);
}

const LIST = `query($filter: ChatFilter) { chats(filter: $filter, first: 50) { nodes {
  chatId stakeholder customerNumber customerName status tags assignedTo { id name }
  lastIncomingMessageAt lastMessageAt lastMessagePreview sla { dueAt waitingSince } } } }`;

/** Most urgent first: those waiting for us by their SLA due time, then the latest. */
function byUrgency(a, b) {
  const due = (c) => (c.sla.dueAt ? new Date(c.sla.dueAt).getTime() : Infinity);
  if (due(a) !== due(b)) return due(a) - due(b);
  return (b.lastMessageAt || "").localeCompare(a.lastMessageAt || "");
}

async function loadChatList() {
  const f = session.filters;
  const filter = {};
  if (f.stakeholder) filter.stakeholder = f.stakeholder;
  if (f.status) filter.status = f.status;
  if (f.tag) filter.tag = f.tag;
  if (f.assignedTo) filter.assignedTo = f.assignedTo;
  const data = await gql(LIST, { filter }).catch(() => null);
  const list = $("#chat-list");
  if (!data || !list) return;
  let chats = data.chats.nodes;
  if (f.waiting) chats = chats.filter((c) => c.sla.waitingSince);
  chats.sort(byUrgency);
  list.replaceChildren(...chats.map((c) => h("li", {},
    h("button", { dataset: { chatId: c.chatId }, "aria-current": c.chatId === session.chatId ? "true" : false,
      onclick: () => { session.chatId = c.chatId; loadChatList(); loadChat(c.chatId); } },
      h("span", { class: "row" },
        h("strong", {}, c.customerName || c.customerNumber),
        unread(c) ? h("span", { class: "badge unread", title: "unread" }, "new") : null,
        c.sla.dueAt ? countdownEl(c.sla.dueAt) : null),
      h("span", { class: "muted" }, `${c.customerNumber} · ${c.stakeholder} · ${c.status.toLowerCase().replace("_", " ")}`
        + (c.assignedTo ? ` · ${c.assignedTo.name}` : "")),
      h("span", {}, c.lastMessagePreview || ""),
      c.tags.length ? h("span", { class: "row" }, ...c.tags.map((t) => h("span", { class: "badge" }, t))) : null))));
  if (!chats.length) list.replaceChildren(h("li", { class: "muted" }, "No chats."));
  tick();
}

const CHAT_FIELDS = `chatId stakeholder channelNumber customerNumber customerName status openedAt openedReason
  context previousChatId tags assignedTo { id name } lastIncomingMessageAt serviceWindowEndsAt
  resolvedAt rating sla { dueAt waitingSince alertedAt escalatedAt } upcomingRides { bookingId rideAt status }
  messages(first: 50) { messageId direction kind text at deliveryStatus error
    attachments { mimeType filename caption status failureReason downloadUrl } }`;

async function loadChat(chatId) {
  const data = await gql(`query($id: ID!) { chat(chatId: $id) { ${CHAT_FIELDS} } }`, { id: chatId }).catch(() => null);
  const panel = $("#chat");
  if (!data || !panel) return;
  if (session.chatId !== chatId) return; // another chat was chosen meanwhile
  if (!data.chat) {
    panel.replaceChildren(h("p", { class: "muted" }, "This chat is not one you can see."));
    return;
  }
  markSeen(data.chat);
  renderChat(panel, data.chat, { live: true });
  const [customer, catalog, executives] = await Promise.all([
    gql(`query($s: String!, $n: String!) { customer(stakeholder: $s, number: $n) { chats { chatId openedAt openedReason status } } }`,
      { s: data.chat.stakeholder, n: data.chat.customerNumber }).catch(() => null),
    mayChange() ? gql("query($s: String!) { tagCatalog(stakeholder: $s) }", { s: data.chat.stakeholder }).catch(() => null) : null,
    leads() ? gql("query($s: String) { executives(stakeholder: $s) { id name online } }", { s: data.chat.stakeholder }).catch(() => null) : null,
  ]);
  if (session.chatId !== chatId) return;
  if (customer && customer.customer) $("#chat-ids").replaceChildren(...customer.customer.chats.map((c) =>
    h("tr", {}, h("td", {}, c.chatId), h("td", {}, time(c.openedAt)), h("td", {}, c.openedReason), h("td", {}, c.status.toLowerCase()))));
  if (catalog) {
    const select = $("#tag-choice");
    select.replaceChildren(...catalog.tagCatalog.filter((t) => !data.chat.tags.includes(t)).map((t) => h("option", { value: t }, t)));
  }
  if (executives) {
    const select = $("#assignee-choice");
    select.replaceChildren(...executives.executives.map((e) =>
      h("option", { value: e.id, selected: data.chat.assignedTo && e.id === data.chat.assignedTo.id }, `${e.name}${e.online ? " (online)" : " (offline)"}`)));
  }
}

const TICKS = {
  queued: ["…", "queued"], accepted: ["✓", "accepted"], sent: ["✓", "sent"], delivered: ["✓✓", "delivered"],
  read: ["✓✓", "read"], failed: ["✗", "failed"], undelivered: ["✗", "undelivered"],
};

function ticks(message) {
  if (message.direction !== "OUTBOUND") return null;
  const status = message.deliveryStatus || "queued";
  const [mark, word] = TICKS[status] || ["?", status];
  const failed = status === "failed" || status === "undelivered";
  return h("span", { class: `ticks ${status === "read" ? "read" : ""} ${failed ? "failed" : ""}`,
    title: word, dataset: { status } }, mark, " ", h("span", { class: "muted" },
    failed && message.error ? `${word}: ${message.error}` : word));
}

function attachment(media) {
  const label = media.filename || media.mimeType || "file";
  if (media.status === "FAILED") return h("p", { class: "muted" }, `${label}: not kept (${media.failureReason || "failed"})`);
  if (media.status === "PENDING" || !media.downloadUrl) return h("p", { class: "muted" }, `${label}: arriving…`);
  const mime = media.mimeType || "";
  const caption = media.caption ? h("p", {}, media.caption) : null;
  if (mime.startsWith("image/")) return h("figure", {}, h("img", { src: media.downloadUrl, alt: media.caption || label }), caption);
  if (mime.startsWith("audio/")) return h("div", {}, h("audio", { src: media.downloadUrl, controls: true }), caption);
  if (mime.startsWith("video/")) return h("div", {}, h("video", { src: media.downloadUrl, controls: true }), caption);
  return h("p", {}, h("a", { href: media.downloadUrl, download: label, rel: "noreferrer" }, `Download ${label}`), caption);
}

function messagesEl(chat) {
  return h("ol", { class: "messages", id: "messages", "aria-label": "Messages" }, ...chat.messages.map((m) =>
    h("li", { class: m.direction.toLowerCase(), dataset: { messageId: m.messageId, status: m.deliveryStatus || "" } },
      h("div", { class: "muted" }, `${m.direction === "INBOUND" ? "customer" : "us"} · ${m.kind} · ${time(m.at)}`),
      m.text ? h("div", { class: "text" }, m.text) : null,
      ...m.attachments.map(attachment),
      ticks(m))));
}

function renderChat(panel, chat, { live }) {
  const windowOpen = chat.serviceWindowEndsAt && new Date(chat.serviceWindowEndsAt) > Date.now();
  const open = chat.status !== "RESOLVED" && chat.status !== "CLOSED";
  const parts = [
    h("div", { class: "chat-head" },
      h("div", {},
        h("h2", {}, chat.customerName || chat.customerNumber),
        h("p", { class: "muted" }, `${chat.customerNumber} · ${chat.stakeholder} · via ${chat.channelNumber}`),
        h("p", {}, h("span", { class: "badge", id: "chat-status" }, chat.status.toLowerCase().replace("_", " ")),
          " ", chat.assignedTo ? `assigned to ${chat.assignedTo.name}` : "not assigned",
          chat.sla.dueAt ? h("span", {}, " · answer within ", countdownEl(chat.sla.dueAt)) : null,
          chat.rating ? h("span", { id: "rating" }, ` · rated ${chat.rating}/5`) : null)),
      live && mayChange() && open
        ? h("button", { id: "resolve", onclick: () => mutateChat("mutation($c: ID!) { resolveChat(chatId: $c) { chatId } }", { c: chat.chatId }) }, "Resolve")
        : null),
    messagesEl(chat),
  ];
  if (live && mayChange() && open) parts.push(composer(chat, windowOpen));
  parts.push(h("section", { class: "panel" }, h("h3", {}, "Tags"),
    h("div", { class: "row", id: "tags" }, ...chat.tags.map((t) => h("span", { class: "badge tag" }, t,
      live && mayChange() ? h("button", { "aria-label": `Remove tag ${t}`,
        onclick: () => mutateChat("mutation($c: ID!, $t: String!) { removeTag(chatId: $c, tag: $t) { chatId } }", { c: chat.chatId, t }) }, "×") : null))),
    live && mayChange() ? h("form", { class: "row", onsubmit: (e) => { e.preventDefault();
      const tag = $("#tag-choice").value;
      if (tag) mutateChat("mutation($c: ID!, $t: String!) { applyTag(chatId: $c, tag: $t) { chatId } }", { c: chat.chatId, t: tag }); } },
    h("label", {}, "Tag ", h("select", { id: "tag-choice" })), h("button", { id: "apply-tag", type: "submit" }, "Apply")) : null));
  if (live && leads() && open) {
    parts.push(h("section", { class: "panel" }, h("h3", {}, "Assignment"),
      h("form", { class: "row", onsubmit: (e) => { e.preventDefault();
        mutateChat("mutation($c: ID!, $e: ID!) { assignChat(chatId: $c, executiveId: $e) { chatId } }", { c: chat.chatId, e: $("#assignee-choice").value }); } },
      h("label", {}, "Give to ", h("select", { id: "assignee-choice" })), h("button", { id: "assign", type: "submit" }, "Assign"))));
  }
  const context = Object.entries(chat.context || {});
  parts.push(h("section", { class: "panel" }, h("h3", {}, "Context"),
    context.length
      ? h("table", {}, h("tbody", {}, ...context.map(([k, v]) =>
        h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v))))))
      : h("p", { class: "muted" }, "Nothing from the transaction system yet.")));
  if (live) {
    parts.push(h("section", { class: "panel" }, h("h3", {}, "This customer's chats"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "chat id"), h("th", {}, "opened"), h("th", {}, "why"), h("th", {}, "status"))),
        h("tbody", { id: "chat-ids" }))));
  }
  if (chat.upcomingRides && chat.upcomingRides.length) {
    parts.push(h("section", { class: "panel" }, h("h3", {}, "Upcoming rides"),
      h("ul", {}, ...chat.upcomingRides.map((r) => h("li", {}, `${r.bookingId} · ${time(r.rideAt)} · ${r.status}`)))));
  }
  panel.replaceChildren(...parts);
  tick();
}

function composer(chat, windowOpen) {
  if (windowOpen) {
    const text = h("textarea", { id: "reply-text", "aria-label": "Reply", required: true });
    return h("form", { class: "composer", onsubmit: async (e) => {
      e.preventDefault();
      if (!text.value.trim()) return;
      const ok = await mutateChat("mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { messageId } }", { c: chat.chatId, t: text.value });
      if (ok) text.value = "";
    } },
    h("p", { class: "muted" }, `The customer wrote within 24 hours: a free reply goes until ${time(chat.serviceWindowEndsAt)}.`),
    text, h("button", { class: "primary", id: "send-reply", type: "submit" }, "Send reply"));
  }
  const name = h("input", { id: "template-name", required: true, "aria-label": "Template name" });
  const language = h("input", { id: "template-language", value: "en", required: true, size: 5, "aria-label": "Language" });
  const params = h("input", { id: "template-params", "aria-label": "Parameters, comma-separated" });
  return h("form", { class: "composer", onsubmit: (e) => {
    e.preventDefault();
    const list = params.value.split(",").map((p) => p.trim()).filter(Boolean);
    mutateChat("mutation($c: ID!, $n: String!, $l: String!, $p: [String!]) { sendTemplate(chatId: $c, name: $n, language: $l, params: $p) { messageId } }",
      { c: chat.chatId, n: name.value, l: language.value, p: list });
  } },
  h("p", { class: "muted", id: "window-closed" }, chat.lastIncomingMessageAt
    ? `The customer last wrote ${time(chat.lastIncomingMessageAt)}, more than 24 hours ago: WhatsApp allows only an approved template until they write again.`
    : "The customer has not written: WhatsApp allows only an approved template."),
  h("div", { class: "row" }, h("label", {}, "Template ", name), h("label", {}, "Language ", language), h("label", {}, "Parameters ", params)),
  h("button", { class: "primary", id: "send-template", type: "submit" }, "Send template"));
}

async function mutateChat(mutation, variables) {
  clearError();
  const data = await gql(mutation, variables).catch(() => null);
  if (data && session.chatId) { loadChat(session.chatId); loadChatList(); }
  return Boolean(data);
}

// ---- the SLA board ------------------------------------------------------------------------

const alerts = [];

function alertArrived(chat) {
  alerts.unshift({ at: new Date().toISOString(), chat });
  if (session.view === "sla") { renderAlerts(); loadSlaBoard(); }
}

function renderAlerts() {
  const list = $("#alerts");
  if (!list) return;
  list.replaceChildren(...alerts.slice(0, 50).map(({ at, chat }) =>
    h("li", { dataset: { chatId: chat.chatId } },
      `${time(at)} · ${chat.sla.escalatedAt ? "escalated" : "alert"} · ${chat.customerName || chat.customerNumber} (${chat.stakeholder})`)));
  if (!alerts.length) list.replaceChildren(h("li", { class: "muted" }, "No alert since the console opened."));
}

function renderSlaBoard() {
  $("#main").replaceChildren(h("div", { class: "desk" },
    h("section", { class: "card", "aria-label": "Waiting for an answer" }, h("h2", {}, "Waiting for an answer"),
      h("ul", { class: "list", id: "sla-board" })),
    h("section", { class: "card", "aria-label": "Alerts" }, h("h2", {}, "Alerts as they fire"),
      h("ul", { id: "alerts" }))));
  renderAlerts();
  loadSlaBoard();
}

async function loadSlaBoard() {
  const data = await gql(`{ slaBoard { chatId stakeholder customerNumber customerName status assignedTo { name }
    sla { dueAt waitingSince alertedAt escalatedAt } } }`).catch(() => null);
  const list = $("#sla-board");
  if (!data || !list) return;
  list.replaceChildren(...data.slaBoard.map((c) => h("li", { dataset: { chatId: c.chatId, alerted: Boolean(c.sla.alertedAt) } },
    h("button", { onclick: () => { session.chatId = c.chatId; go("chats"); } },
      h("span", { class: "row" }, h("strong", {}, c.customerName || c.customerNumber),
        c.sla.dueAt ? countdownEl(c.sla.dueAt) : null,
        c.sla.escalatedAt ? h("span", { class: "badge" }, "escalated") : c.sla.alertedAt ? h("span", { class: "badge" }, "alerted") : null),
      h("span", { class: "muted" }, `${c.stakeholder} · waiting since ${time(c.sla.waitingSince)} · ${c.assignedTo ? c.assignedTo.name : "nobody"}`)))));
  if (!data.slaBoard.length) list.replaceChildren(h("li", { class: "muted" }, "Nobody is waiting."));
  tick();
}

// ---- the audit view -----------------------------------------------------------------------

function renderAudit() {
  const chatId = h("input", { id: "audit-chat", value: session.chatId || "", size: 38, "aria-label": "Chat id" });
  $("#main").replaceChildren(h("div", { class: "card" },
    h("h2", {}, "Audit"),
    h("p", { id: "audit-head", class: "muted" }, "Reading the audit head…"),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); session.chatId = chatId.value.trim(); loadAudit(session.chatId); } },
      h("label", {}, "Chat ", chatId), h("button", { id: "audit-open", type: "submit" }, "Show")),
    h("div", { id: "audit-chat-view" })));
  fetch("/api/audit/head", { headers: { authorization: `Bearer ${session.token}` } })
    .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
    .then(({ ok, body }) => {
      $("#audit-head").textContent = ok
        ? `Audit head: position ${body.position}, hash ${body.head_hash || body.hash || JSON.stringify(body)} — note it down to check the log later.`
        : `The audit head cannot be read: ${body.message}`;
    }).catch((e) => showError(`The audit head cannot be read: ${e.message}`));
  if (session.chatId) loadAudit(session.chatId);
}

async function loadAudit(chatId) {
  const view = $("#audit-chat-view");
  const data = await gql(`query($id: ID!) { chat(chatId: $id) { chatId openedAt customerNumber
      history { position at type actor summary } } }`, { id: chatId }).catch(() => null);
  if (!data || !view) return;
  if (!data.chat) { view.replaceChildren(h("p", {}, "No such chat, or not one you can see.")); return; }
  // From the first event recorded about it: the chat as it stood when it opened.
  const first = data.chat.history.reduce((t, e) => Math.min(t, new Date(e.at).getTime()), Infinity);
  const from = first === Infinity ? new Date(data.chat.openedAt).getTime() : first;
  // To now, or to the last event if the server's clock is ahead of this one.
  const last = data.chat.history.reduce((t, e) => Math.max(t, new Date(e.at).getTime()), 0);
  const to = Math.max(Date.now(), last);
  const slider = h("input", { id: "as-of", type: "range", min: 0, max: 1000, value: 1000, "aria-label": "The chat as it stood at" });
  const label = h("output", { id: "as-of-time", for: "as-of" });
  const snapshot = h("div", { id: "as-of-chat", class: "card" });
  let pending = null;
  let asked = 0;
  const show = () => {
    // The end of that millisecond: the log keeps microseconds, a browser's clock milliseconds.
    const at = new Date(Math.floor(from + ((to - from) * Number(slider.value)) / 1000) + 1).toISOString();
    label.textContent = time(at);
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const mine = ++asked;
      const past = await gql(`query($id: ID!, $at: DateTime!) { chatAsOf(chatId: $id, at: $at) { ${CHAT_FIELDS} } }`, { id: chatId, at }).catch(() => null);
      if (!past || mine !== asked) return; // a later moment was asked for meanwhile
      snapshot.dataset.at = at;
      if (!past.chatAsOf) snapshot.replaceChildren(h("p", {}, "The chat did not exist yet."));
      else renderChat(snapshot, past.chatAsOf, { live: false });
    }, 120);
  };
  slider.addEventListener("input", show);
  view.replaceChildren(
    h("section", { class: "panel" }, h("h3", {}, "As it stood at"), slider, label, snapshot),
    h("section", { class: "panel" }, h("h3", {}, "History"),
      h("div", { class: "history" }, h("table", {}, h("thead", {}, h("tr", {},
        h("th", {}, "position"), h("th", {}, "when"), h("th", {}, "what"), h("th", {}, "who"), h("th", {}, "in words"))),
      h("tbody", { id: "history" }, ...data.chat.history.map((e) => h("tr", {},
        h("td", {}, e.position), h("td", {}, time(e.at)), h("td", {}, e.type), h("td", {}, e.actor), h("td", {}, e.summary))))))));
  show();
}

// ---- start --------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  if (session.token) start(session.token);
  else renderSignIn();
});
