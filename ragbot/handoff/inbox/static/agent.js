/* ragbot agent inbox: plain JS over the agent API. Everything is rendered with textContent: a
   visitor's message, a bot answer or a source title is never parsed as HTML. */
(function () {
  "use strict";

  var KEY_STORE = "ragbot-agent-key";
  var state = { key: null, mode: "", current: null, detail: null, stream: null, lastEventId: 0, queueTimer: null };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeHttpUrl(value) {
    try {
      var url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function api(method, path, body) {
    var init = { method: method, headers: { Authorization: "Bearer " + state.key }, credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var message = data && data.error ? data.error.message : "request failed (" + response.status + ")";
          var err = new Error(message);
          err.status = response.status;
          throw err;
        }
        return data;
      });
    });
  }

  function since(iso) {
    if (!iso) return "";
    var seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return Math.round(seconds / 3600) + " h";
  }

  var MODE_LABEL = { bot: "with the bot", pending_human: "waiting for a person", human: "with a person", resolved: "resolved" };

  /* ---------------------------------------------------------------- sign in */
  function showLogin(message) {
    $("login").hidden = false;
    $("app").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    var error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
  }

  function signIn(key) {
    state.key = key;
    return api("GET", "/v1/agent/conversations?limit=1").then(function () {
      sessionStorage.setItem(KEY_STORE, key);
      $("login").hidden = true;
      $("app").hidden = false;
      $("signout").hidden = false;
      $("analytics-bar").hidden = false;
      $("who").textContent = "signed in · key " + key.slice(0, 10) + "…";
      loadQueue();
      state.queueTimer = setInterval(loadQueue, 5000);
      openLinkedConversation();
    }).catch(function (err) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORE);
      showLogin(err.status === 401 ? "That key is not valid (or was revoked)." : err.message);
    });
  }

  /* ---------------------------------------------------------------- queue */
  function loadQueue() {
    var query = "/v1/agent/conversations?limit=200" + (state.mode ? "&mode=" + encodeURIComponent(state.mode) : "");
    return api("GET", query).then(renderQueue).catch(function (err) {
      if (err.status === 401) signOut("Your key stopped working; sign in again.");
    });
  }

  function renderQueue(items) {
    var list = $("queue");
    list.textContent = "";
    $("queue-empty").hidden = items.length > 0;
    items.forEach(function (item) {
      var li = el("li");
      var button = el("button", { type: "button", "data-testid": "queue-item", "data-id": item.id });
      if (state.current === item.id) button.setAttribute("aria-current", "true");
      button.appendChild(el("span", { className: "title" }, item.title || "(untitled)"));
      var sub = MODE_LABEL[item.owner_mode] || item.owner_mode;
      if (item.waiting_since) sub += " · waiting " + since(item.waiting_since);
      if (item.assignee) sub += " · " + item.assignee;
      sub += " · " + item.bot_id;
      button.appendChild(el("span", { className: "sub" }, sub));
      if (item.last_message) button.appendChild(el("span", { className: "sub" }, item.last_message.content.slice(0, 90)));
      button.addEventListener("click", function () { openConversation(item.id); });
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  /* ---------------------------------------------------------------- conversation */
  function openConversation(id) {
    state.current = id;
    stopStream();
    $("conv-error").hidden = true;
    return api("GET", "/v1/agent/conversations/" + encodeURIComponent(id)).then(function (detail) {
      state.detail = detail;
      renderConversation(detail);
      startStream(id, detail.last_event_id || 0);
      loadQueue();
    }).catch(showConvError);
  }

  function renderConversation(detail) {
    $("empty").hidden = true;
    $("conv").hidden = false;
    $("conv-title").textContent = detail.title || "(untitled)";
    updateMode(detail.owner_mode, detail.assignee);
    var meta = "bot " + detail.bot_id;
    if (detail.page_url) meta += " · from " + detail.page_url;
    $("conv-meta").textContent = meta;
    var list = $("messages");
    list.textContent = "";
    detail.messages.forEach(addMessage);
    list.lastElementChild && list.lastElementChild.scrollIntoView({ block: "end" });
  }

  function updateMode(mode, assignee) {
    if (state.detail) { state.detail.owner_mode = mode; state.detail.assignee = assignee; }
    $("conv-mode").textContent = (MODE_LABEL[mode] || mode) + (assignee ? " (" + assignee + ")" : "");
    $("claim").disabled = !(mode === "pending_human" || mode === "human");
    $("resolve").disabled = !(mode === "pending_human" || mode === "human");
    $("reopen").disabled = mode !== "resolved";
    $("release").disabled = mode === "bot";
  }

  function addMessage(m) {
    var list = $("messages");
    if (m.id && list.querySelector('[data-message-id="' + CSS.escape(m.id) + '"]')) return;
    var kind = m.internal ? "internal" : m.sender_type;
    var li = el("li", { className: "msg " + m.sender_type + (m.internal ? " internal" : ""), "data-testid": "agent-message", "data-sender": kind });
    if (m.id) li.setAttribute("data-message-id", m.id);
    var who = m.sender_type === "agent" ? (m.author || "agent") : m.sender_type;
    if (m.internal) who += " · internal note";
    if (m.status && m.status !== "complete" && m.sender_type === "bot") who += " · " + m.status;
    li.appendChild(el("span", { className: "who" }, who));
    li.appendChild(el("span", { className: "text" }, m.content));
    if (m.citations && m.citations.length) {
      var cites = el("ol", { className: "cites" });
      m.citations.forEach(function (c) {
        var item = el("li", { value: String(c.n) });
        var url = c.url ? safeHttpUrl(c.url) : null;
        var label = (c.title || c.url || c.path || "source") + (c.page ? " (page " + c.page + ")" : "");
        if (url) {
          var a = el("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow" }, label);
          item.appendChild(a);
        } else {
          item.textContent = label;
        }
        cites.appendChild(item);
      });
      li.appendChild(cites);
    }
    if (m.retrieval && m.retrieval.length) {
      var details = el("details", { className: "retrieval" });
      details.appendChild(el("summary", {}, "retrieval (" + m.retrieval.length + " passages)"));
      var table = el("table");
      var head = el("tr");
      ["#", "source", "score", "sparse", "dense", "cited"].forEach(function (h) { head.appendChild(el("th", {}, h)); });
      table.appendChild(head);
      m.retrieval.forEach(function (r) {
        var row = el("tr");
        [r.rank, r.uri, fmt(r.score), fmt(r.sparse_score), fmt(r.dense_score), r.cited ? "yes" : ""].forEach(function (v) {
          row.appendChild(el("td", {}, v));
        });
        table.appendChild(row);
      });
      details.appendChild(table);
      li.appendChild(details);
    }
    list.appendChild(li);
    li.scrollIntoView({ block: "end" });
  }

  function fmt(v) { return typeof v === "number" ? v.toFixed(3) : ""; }

  function showConvError(err) {
    var box = $("conv-error");
    box.hidden = false;
    box.textContent = err.message;
    if (err.status === 401) signOut("Your key stopped working; sign in again.");
  }

  function act(action) {
    if (!state.current) return;
    api("POST", "/v1/agent/conversations/" + encodeURIComponent(state.current) + "/" + action, {}).then(function (moved) {
      updateMode(moved.owner_mode, moved.owner_mode === "human" ? undefined : null);
      loadQueue();
    }).catch(showConvError);
  }

  /* ---------------------------------------------------------------- live events (SSE over fetch) */
  function stopStream() {
    if (state.stream) { state.stream.abort(); state.stream = null; }
  }

  function startStream(id, after) {
    stopStream();
    state.lastEventId = after;
    var controller = new AbortController();
    state.stream = controller;
    var headers = { Authorization: "Bearer " + state.key };
    if (state.lastEventId) headers["Last-Event-ID"] = String(state.lastEventId);
    var path = "/v1/conversations/" + encodeURIComponent(id) + "/events?bot_id=" + encodeURIComponent(state.detail.bot_id);
    fetch(path, { headers: headers, signal: controller.signal, credentials: "omit" }).then(function (response) {
      if (!response.ok || !response.body) throw new Error("stream " + response.status);
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) throw new Error("stream ended");
          buffer += decoder.decode(chunk.value, { stream: true });
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          parts.forEach(handleFrame);
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      if (state.stream === controller && !controller.signal.aborted) {
        setTimeout(function () { if (state.current === id) startStream(id, state.lastEventId); }, 2000);
      }
    });
  }

  function handleFrame(frame) {
    var type = "message", data = "", id = null;
    frame.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) type = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data += line.slice(5).trim();
      else if (line.indexOf("id:") === 0) id = line.slice(3).trim();
    });
    if (id) state.lastEventId = parseInt(id, 10) || state.lastEventId;
    if (!data) return;
    var payload;
    try { payload = JSON.parse(data); } catch (e) { return; }
    if (type === "message") addMessage(payload);
    else if (type === "handoff") { updateMode(payload.mode, state.detail && state.detail.assignee); loadQueue(); }
  }

  /* ---------------------------------------------------------------- analytics report */
  /* The report is a self-contained HTML page (no script). It needs the agent's key, which a plain link
     cannot send, so it is fetched here and shown from a blob: URL in a new tab. The tab is opened at the
     click (a later window.open would be a blocked pop-up) and pointed at the report once it arrives. */
  function openReport() {
    var error = $("analytics-error");
    error.hidden = true;
    var tab = window.open("", "_blank");
    if (tab) {
      tab.document.title = "Preparing the analytics report…";
      tab.document.body.textContent = "Preparing the analytics report…";
    }
    var query = "since=" + encodeURIComponent($("analytics-window").value);
    var bot = state.detail && state.detail.bot_id;
    if (bot) query += "&bot_id=" + encodeURIComponent(bot);
    var button = $("analytics");
    button.disabled = true;
    fetch("/v1/analytics/report?" + query, { headers: { Authorization: "Bearer " + state.key }, credentials: "omit" })
      .then(function (response) {
        if (response.ok) return response.text();
        return response.json().catch(function () { return null; }).then(function (data) {
          throw new Error(data && data.error ? data.error.message : "the report failed (" + response.status + ")");
        });
      })
      .then(function (html) {
        var url = URL.createObjectURL(new Blob([html], { type: "text/html;charset=utf-8" }));
        if (tab && !tab.closed) tab.location.href = url;
        else window.open(url, "_blank");
        setTimeout(function () { URL.revokeObjectURL(url); }, 300000);
      })
      .catch(function (err) {
        if (tab && !tab.closed) tab.close();
        error.hidden = false;
        error.textContent = err.message;
      })
      .then(function () { button.disabled = false; });
  }

  /* The report links each conversation here as /agent#conversation=ID. */
  function openLinkedConversation() {
    var match = /^#conversation=([^&]+)$/.exec(location.hash);
    if (match && state.key) openConversation(decodeURIComponent(match[1]));
  }

  /* ---------------------------------------------------------------- wiring */
  function signOut(message) {
    stopStream();
    if (state.queueTimer) clearInterval(state.queueTimer);
    state.key = null;
    state.current = null;
    sessionStorage.removeItem(KEY_STORE);
    $("analytics-bar").hidden = true;
    showLogin(message);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("login-form").addEventListener("submit", function (event) {
      event.preventDefault();
      signIn($("key").value.trim());
    });
    $("signout").addEventListener("click", function () { signOut(); });
    $("analytics").addEventListener("click", openReport);
    window.addEventListener("hashchange", openLinkedConversation);
    Array.prototype.forEach.call(document.querySelectorAll(".tabs button"), function (tab) {
      tab.addEventListener("click", function () {
        Array.prototype.forEach.call(document.querySelectorAll(".tabs button"), function (t) { t.setAttribute("aria-selected", "false"); });
        tab.setAttribute("aria-selected", "true");
        state.mode = tab.getAttribute("data-mode");
        loadQueue();
      });
    });
    ["claim", "resolve", "reopen", "release"].forEach(function (action) {
      $(action).addEventListener("click", function () { act(action); });
    });
    $("reply").addEventListener("submit", function (event) {
      event.preventDefault();
      var input = $("reply-input");
      var content = input.value.trim();
      if (!content || !state.current) return;
      var internal = $("internal").checked;
      api("POST", "/v1/agent/conversations/" + encodeURIComponent(state.current) + "/messages", { content: content, internal: internal })
        .then(function (message) {
          input.value = "";
          addMessage(message);
          if (!internal && state.detail && state.detail.owner_mode !== "human") updateMode("human", null);
          loadQueue();
        }).catch(showConvError);
    });
    $("reply-input").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { $("reply").requestSubmit(); }
    });
    var saved = sessionStorage.getItem(KEY_STORE);
    if (saved) signIn(saved); else showLogin();
  });
})();
