/*! ragbot chat widget. Embed: <script src="https://RAGBOT/widget.js" data-bot="pk_..." async></script>
 * Options on the script tag: data-bot (the bot's public key, required), data-mode="inline" (no launcher;
 * the panel is always open and fills its container), data-preview (test traffic: ragbot's own demo page,
 * left out of analytics). Vanilla JS, no dependencies, no third-party requests;
 * everything it shows is built with DOM APIs (textContent), never parsed as HTML. */
(function () {
  "use strict";
  if (window.RagbotWidget || document.getElementById("ragbot-widget")) return; // included twice

  var script = document.currentScript || document.querySelector("script[data-bot][src*='widget.js']");
  var PK = script && script.getAttribute("data-bot");
  if (!PK) {
    if (window.console) console.warn("ragbot widget: the script tag needs data-bot=\"pk_...\"");
    return;
  }
  var BASE = new URL(script.src, location.href).origin;
  var INLINE = script.getAttribute("data-mode") === "inline";
  var PREVIEW = script.hasAttribute("data-preview");
  var KEY = "ragbot:" + PK;
  var CHAT_ICON = "M4 4h16v11H8l-4 4z";
  var CLOSE_ICON = "M6 6l12 12M18 6L6 18";
  var THUMB = "M7 10v11H3V10zm0 0l4-8c1.7 0 2.5 1 2.5 2.5L13 9h6a2 2 0 012 2.3l-1.3 7.6A2.5 2.5 0 0117.2 21H7";

  // ---------------------------------------------------------------- state (localStorage, per public key)
  var st = { token: null, visitor_id: null, conversation_id: null, open: false, lead: false };
  try {
    var saved = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
    Object.keys(st).forEach(function (k) {
      if (saved[k] != null) st[k] = saved[k];
    });
  } catch (e) {
    /* storage blocked or corrupt: start fresh */
  }
  function save() {
    try {
      localStorage.setItem(KEY, JSON.stringify(st));
    } catch (e) {
      /* storage blocked: the conversation lasts as long as the page */
    }
  }

  // ---------------------------------------------------------------- api client
  function api(path, body, auth, headers, signal) {
    headers = headers || {};
    if (body) headers["Content-Type"] = "application/json";
    if (auth && st.token) headers.Authorization = "Bearer " + st.token;
    return fetch(BASE + path, {
      method: body ? "POST" : "GET",
      headers: headers,
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
      mode: "cors",
      cache: "no-store",
      signal: signal,
    });
  }

  function Failure(text, retry, status, code) {
    this.text = text;
    this.retry = retry;
    this.status = status;
    this.code = code;
  }

  function retryAfter(res, err) {
    var h = res.headers.get("Retry-After");
    var n = h == null ? NaN : /^\s*\d+\s*$/.test(h) ? +h : Math.ceil((Date.parse(h) - Date.now()) / 1000);
    if (isNaN(n) && err && err.retry_after != null) n = Math.ceil(+err.retry_after);
    return isNaN(n) ? null : Math.max(1, n);
  }

  // What the visitor reads for an HTTP error (JSON body {"error": {"code", "message"}}).
  async function failure(res, connectText) {
    var err = {};
    try {
      err = (await res.json()).error || {};
    } catch (e) {
      /* not JSON */
    }
    var s = res.status;
    var code = err.code;
    if (s === 429) {
      var n = retryAfter(res, err);
      return new Failure(
        "You're sending messages too quickly. " +
          (n ? "Try again in " + n + (n === 1 ? " second." : " seconds.") : "Try again in a moment."),
        true, s, code
      );
    }
    if (s === 403 && code === "origin_not_allowed") return new Failure("This chat isn't available on this site.", false, s, code);
    if (s === 403 || s === 404) return new Failure("This chat isn't available right now.", false, s, code);
    if (s === 413 || s === 422) return new Failure(s === 413 || code === "message_too_long" ? "That message is too long." : "That message couldn't be sent.", false, s, code);
    if (s >= 500) return new Failure("The assistant is unavailable right now.", true, s, code);
    return new Failure(connectText, true, s, code);
  }

  var sessionPromise = null;
  function session(force) {
    if (!sessionPromise || force) {
      var p = (sessionPromise = startSession());
      p.catch(function () {
        if (sessionPromise === p) sessionPromise = null; // the next attempt tries again
      });
    }
    return sessionPromise;
  }

  async function startSession() {
    var res;
    try {
      res = await api("/v1/widget/session", st.token ? { public_key: PK, token: st.token } : { public_key: PK });
      if (!res.ok && st.token && [400, 401, 422].indexOf(res.status) >= 0) {
        st.token = null; // too old to renew: start over as a new visitor
        res = await api("/v1/widget/session", { public_key: PK });
      }
    } catch (e) {
      throw new Failure("The assistant is unavailable right now.", true);
    }
    if (!res.ok) throw await failure(res, "The assistant is unavailable right now.");
    var data = await res.json();
    if (st.visitor_id && data.visitor_id !== st.visitor_id) {
      st.conversation_id = null; // not ours any more
      st.lead = false;
    }
    st.token = data.token;
    st.visitor_id = data.visitor_id;
    save();
    applyBot(data.bot || {});
    return data;
  }

  // A request with the session token (POST when there is a body); a 401 renews the session once.
  async function authed(path, body, headers, signal) {
    await session();
    var res = await api(path, body, true, headers && Object.assign({}, headers), signal);
    if (res.status === 401) {
      await session(true);
      res = await api(path, body, true, headers, signal);
    }
    return res;
  }

  async function postChat(text) {
    function send() {
      var body = { message: text, stream: true };
      if (PREVIEW) body.test = true;
      if (st.conversation_id) body.conversation_id = st.conversation_id;
      else body.page_url = location.href.slice(0, 2000); // kept with a new conversation
      return authed("/v1/chat", body, { Accept: "text/event-stream" });
    }
    var res = await send();
    if (res.status === 404 && st.conversation_id) {
      st.conversation_id = null; // the conversation is gone: start a new one
      save();
      res = await send();
    }
    return res;
  }

  // ---------------------------------------------------------------- SSE parser (event:/data: lines)
  function sseParser(onEvent) {
    var buf = "";
    var type = "";
    var data = [];
    var id = null;
    function line(l) {
      if (l === "") {
        if (data.length) {
          var payload;
          try {
            payload = JSON.parse(data.join("\n"));
          } catch (e) {
            payload = null;
          }
          if (payload) onEvent(type || "message", payload, id);
        }
        type = "";
        data = [];
        id = null;
        return;
      }
      if (l.charAt(0) === ":") return; // comment / keep-alive ping
      var i = l.indexOf(":");
      var field = i < 0 ? l : l.slice(0, i);
      var value = i < 0 ? "" : l.slice(i + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    return function feed(chunk, end) {
      buf += chunk;
      var lines = buf.split("\n");
      buf = end ? "" : lines.pop();
      lines.forEach(function (l) {
        line(l.replace(/\r$/, ""));
      });
      if (end) line("");
    };
  }

  async function readEvents(res, onEvent, onChunk) {
    onChunk = onChunk || function () {};
    var reader = res.body.getReader();
    var decoder = new TextDecoder();
    var feed = sseParser(onEvent);
    for (;;) {
      var r = await reader.read();
      if (r.done) break;
      feed(decoder.decode(r.value, { stream: true }));
      onChunk();
    }
    feed(decoder.decode(), true);
    onChunk();
  }

  // ---------------------------------------------------------------- DOM helpers and markdown renderer
  function el(tag, cls, text, attrs) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    if (attrs) Object.keys(attrs).forEach(function (k) {
      e.setAttribute(k, attrs[k]);
    });
    return e;
  }

  function safeUrl(u) {
    if (typeof u !== "string" || !u) return null;
    try {
      var url = new URL(u);
      return url.protocol === "http:" || url.protocol === "https:" ? url : null;
    } catch (e) {
      return null;
    }
  }

  function link(href, text) {
    var a = el("a", null, text, { href: href, target: "_blank", rel: "noopener noreferrer nofollow" });
    return a;
  }

  function clock(s) {
    s = Math.floor(s);
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = ("0" + (s % 60)).slice(-2);
    return h ? h + ":" + ("0" + m).slice(-2) + ":" + sec : m + ":" + sec;
  }

  // A citation's link target: the source URL with #page=N (PDF page) or #t=S (video time); null = no link.
  function citationHref(c) {
    var url = safeUrl(c.url);
    if (!url) return null;
    if (c.start_s != null && isFinite(c.start_s)) url.hash = "t=" + Math.floor(c.start_s);
    else if (c.page != null && isFinite(c.page) && !url.hash) url.hash = "page=" + Math.floor(c.page);
    return url.href;
  }

  // `code`, **bold**, [text](url), [n] citation markers, bare http(s) URLs; everything else is text.
  var INLINE_RE = /`([^`\n]+)`|\*\*(.+?)\*\*|\[([^\]\n]+)\]\(([^()\s]+)\)|\[(\d{1,3})\]|(https?:\/\/[^\s<>"'`]+)/g;

  function inline(parent, text, cites) {
    var last = 0;
    var m;
    INLINE_RE.lastIndex = 0;
    var matches = [];
    while ((m = INLINE_RE.exec(text))) matches.push(m);
    matches.forEach(function (m) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      var tail = "";
      if (m[1] != null) parent.appendChild(el("code", null, m[1]));
      else if (m[2] != null) {
        var b = el("strong");
        inline(b, m[2], cites);
        parent.appendChild(b);
      } else if (m[3] != null) {
        var u = safeUrl(m[4]);
        parent.appendChild(u ? link(u.href, m[3]) : document.createTextNode(m[3]));
      } else if (m[5] != null) {
        var c = cites[m[5]];
        if (!c) parent.appendChild(document.createTextNode(m[0]));
        else {
          var sup = el("sup", "ref");
          var href = citationHref(c);
          var label = "[" + m[5] + "]";
          var ref = href ? link(href, label) : el("span", null, label);
          ref.setAttribute("aria-label", "Source " + m[5]);
          sup.appendChild(ref);
          parent.appendChild(sup);
        }
      } else {
        var raw = m[6].replace(/[.,;:!?)\]]+$/, "");
        tail = m[6].slice(raw.length);
        var url = safeUrl(raw);
        parent.appendChild(url ? link(url.href, raw) : document.createTextNode(raw));
      }
      if (tail) parent.appendChild(document.createTextNode(tail));
    });
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // Paragraphs (blank-line separated), - / * / 1. lists, ``` fenced code, # headings (as bold lines).
  function markdown(text, cites) {
    var frag = document.createDocumentFragment();
    var lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    var para = null;
    var list = null;
    for (var i = 0; i < lines.length; i++) {
      var l = lines[i];
      var m;
      if (/^\s*```/.test(l)) {
        para = list = null;
        var code = [];
        while (++i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i]);
        var pre = el("pre");
        pre.appendChild(el("code", null, code.join("\n")));
        frag.appendChild(pre);
      } else if (!l.trim()) {
        para = list = null;
      } else if ((m = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(l))) {
        para = null;
        var tag = m[1] ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) {
          list = frag.appendChild(el(tag));
          if (m[2] && m[2] !== "1") list.setAttribute("start", m[2]);
        }
        inline(list.appendChild(el("li")), m[3], cites);
      } else if (list && /^\s/.test(l)) {
        var li = list.lastChild;
        li.appendChild(el("br"));
        inline(li, l.trim(), cites);
      } else if ((m = /^#{1,6}\s+(.*)$/.exec(l))) {
        para = list = null;
        inline(frag.appendChild(el("p")).appendChild(el("strong")), m[1], cites);
      } else {
        list = null;
        if (para) para.appendChild(el("br"));
        else para = frag.appendChild(el("p"));
        inline(para, l, cites);
      }
    }
    return frag;
  }

  // ---------------------------------------------------------------- view
  var CSS =
    ":host{all:initial}" +
    ".rb{--a:#2563eb;--at:#fff;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2328;text-align:left;direction:ltr}" +
    ".rb *,.rb *::before,.rb *::after{box-sizing:border-box}" +
    "[hidden]{display:none!important}" +
    "button{font:inherit;cursor:pointer}" +
    "button:focus-visible,textarea:focus-visible,a:focus-visible{outline:2px solid transparent;box-shadow:0 0 0 2px #fff,0 0 0 4px #1f2328}" +
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483646;width:56px;height:56px;border-radius:50%;border:0;background:var(--a);color:var(--at);box-shadow:0 4px 14px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;padding:0}" +
    ".launcher svg{width:28px;height:28px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}" +
    ".panel{position:fixed;right:20px;bottom:88px;z-index:2147483647;width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 108px);display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden}" +
    ".inline .log,.inline .form{padding-left:max(14px,calc(50% - 380px));padding-right:max(14px,calc(50% - 380px))}" +
    ".inline{height:100%}.inline .panel{position:relative;right:auto;bottom:auto;z-index:auto;width:100%;max-width:none;height:100%;max-height:none;border-radius:0;box-shadow:none}" +
    ".head{display:flex;align-items:center;gap:6px;padding:10px 10px 10px 16px;background:var(--a);color:var(--at)}" +
    ".head h2{flex:1;margin:0;font-size:16px;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}" +
    ".head button{background:transparent;color:inherit;border:1px solid transparent;border-radius:8px;padding:4px 8px;font-size:14px}" +
    ".head .x{font-size:22px;line-height:1;padding:2px 9px}" +
    ".head .human{border-color:currentColor}" +
    ".log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px}" +
    ".msg{max-width:88%;padding:8px 12px;border-radius:12px;overflow-wrap:anywhere}" +
    ".visitor{align-self:flex-end;background:var(--a);color:var(--at);white-space:pre-wrap}" +
    ".bot{align-self:flex-start;background:#f1f3f5}" +
    ".agent{align-self:flex-start;background:#fff6dc;border:1px solid #e9cf7a}" +
    ".system{align-self:center;font-size:13px;color:#57606a;text-align:center}" +
    ".label{display:block;font-size:12px;font-weight:600;color:#57606a;margin-bottom:2px}" +
    ".msg p,.msg ul,.msg ol,.msg pre{margin:0 0 .5em}.body>:last-child{margin-bottom:0}" +
    ".msg ul,.msg ol{padding-left:1.3em}" +
    ".msg pre{padding:8px;background:#1f2328;color:#f6f8fa;border-radius:6px;overflow-x:auto;font-size:13px;white-space:pre}" +
    "code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}" +
    ":not(pre)>code{background:rgba(0,0,0,.07);padding:1px 4px;border-radius:4px}" +
    ".bot a,.agent a{color:#0550ae}.ref a{text-decoration:none;font-weight:600}" +
    ".cites{margin:.5em 0 0;padding:.4em 0 0 1.6em;border-top:1px solid rgba(0,0,0,.1);font-size:13px}" +
    ".typing::after{content:'\\2026';display:inline-block;animation:rb 1s steps(4) infinite;overflow:hidden;vertical-align:bottom;width:1em}" +
    "@keyframes rb{0%{width:0}100%{width:1.2em}}" +
    ".actions{display:flex;gap:4px;margin-top:4px}.actions button{border:0;background:transparent;color:#57606a;border-radius:6px;padding:4px;line-height:0}" +
    ".actions svg{width:16px;height:16px;fill:none;stroke:currentColor;stroke-width:2;stroke-linejoin:round}[data-testid=feedback-down] svg{transform:rotate(180deg)}" +
    ".actions button[aria-pressed=true]{background:rgba(0,0,0,.1)}" +
    ".starters{display:flex;flex-wrap:wrap;gap:6px}" +
    ".starter{border:1px solid var(--a);background:#fff;color:#1f2328;border-radius:16px;padding:6px 12px;text-align:left;font-size:14px}" +
    ".err{margin:0 12px 8px;padding:8px 10px;background:#fdecea;color:#8a1c13;border-radius:8px;font-size:14px;display:flex;gap:8px;align-items:center;justify-content:space-between}" +
    ".err button{border:1px solid currentColor;background:#fff;color:inherit;border-radius:6px;padding:2px 10px}" +
    ".form{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;margin:0}" +
    "textarea{flex:1;resize:none;font:inherit;font-size:16px;line-height:1.4;padding:8px 10px;border:1px solid #c9ced6;border-radius:8px;max-height:120px;color:#1f2328;background:#fff;margin:0}" +
    ".send{border:0;border-radius:8px;background:var(--a);color:var(--at);padding:0 14px;font-weight:600}" +
    ".send:disabled{opacity:.5;cursor:default}" +
    ".status{padding:6px 14px;font-size:13px;color:#57606a;background:#f6f8fa;border-top:1px solid #e5e7eb}" +
    ".leadform{max-height:60%;overflow-y:auto;padding:10px 14px;border-top:1px solid #e5e7eb;font-size:14px}" +
    ".leadform p{margin:0 0 8px;font-weight:600}.leadform label{display:block;margin-bottom:8px}" +
    ".leadform input,.more input{display:block;width:100%;font:inherit;font-size:16px;padding:6px 8px;border:1px solid #c9ced6;border-radius:6px;margin:2px 0 0;color:#1f2328;background:#fff}" +
    ".leadform .consent{display:flex;gap:6px;font-size:13px}.leadform .consent input{width:auto;margin:3px 0 0}" +
    ".fe{display:block;color:#8a1c13;font-size:13px}[aria-invalid=true]{border-color:#8a1c13!important}" +
    ".row{display:flex;gap:8px}.row .send{padding:6px 14px}.skip{border:0;background:transparent;color:#57606a}" +
    ".more{display:flex;gap:6px;margin-top:4px}.more input{font-size:14px;padding:4px 6px;margin:0}.more .send{padding:0 10px}" +
    "@media (max-width:480px){.rb:not(.inline) .panel{top:0;left:0;right:0;bottom:0;width:100%;max-width:none;height:100%;max-height:none;border-radius:0}.open .launcher{display:none}}" +
    "@media (prefers-reduced-motion:reduce){.typing::after{animation:none;width:1.2em}}";

  var host = document.createElement("ragbot-widget");
  host.id = "ragbot-widget";
  // Inline !important styles beat the host page's stylesheets, even their !important rules. Set through
  // the CSSOM (and the shadow styles adopted as a constructed sheet) so a strict host-page CSP allows them.
  host.style.setProperty("all", "initial", "important");
  if (INLINE) ["display:block", "width:100%", "height:100%"].forEach(function (d) {
    host.style.setProperty(d.split(":")[0], d.split(":")[1], "important");
  });
  var shadow = host.attachShadow({ mode: "open" });
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } catch (e) {
    shadow.appendChild(el("style", null, CSS));
  }
  var root = shadow.appendChild(el("div", INLINE ? "rb inline" : "rb"));

  var launcher = el("button", "launcher", null, {
    type: "button",
    "data-testid": "launcher",
    "aria-label": "Open chat",
    "aria-expanded": "false",
    "aria-controls": "rb-panel",
  });
  var icon = launcher.appendChild(svgIcon(CHAT_ICON)).firstChild;
  if (!INLINE) root.appendChild(launcher);

  var panel = root.appendChild(
    el("div", "panel", null, { id: "rb-panel", role: "dialog", "aria-label": "Chat", "data-testid": "panel" })
  );
  panel.hidden = true;
  var head = panel.appendChild(el("div", "head"));
  var titleEl = head.appendChild(el("h2", null, "Chat"));
  var handoffBtn = head.appendChild(el("button", "human", "Talk to a human", { type: "button", "data-testid": "handoff" }));
  handoffBtn.hidden = true;
  var closeBtn = el("button", "x", "\u00d7", { type: "button", "aria-label": "Close chat", "data-testid": "close" });
  if (!INLINE) head.appendChild(closeBtn);

  var log = panel.appendChild(el("div", "log", null, { role: "log", "aria-live": "polite", "data-testid": "messages" }));
  var welcome = log.appendChild(el("div", "msg bot", null, { "data-testid": "welcome" }));
  welcome.hidden = true;
  var starters = log.appendChild(el("div", "starters"));
  var statusEl = panel.appendChild(el("div", "status", null, { role: "status", "data-testid": "handoff-status" }));
  statusEl.hidden = true;
  var leadForm = panel.appendChild(el("div", "leadform", null, { "data-testid": "lead-form" }));
  leadForm.hidden = true;
  var errBox = panel.appendChild(el("div", "err", null, { role: "alert", "data-testid": "error" }));
  errBox.hidden = true;
  var form = panel.appendChild(el("form", "form"));
  var input = form.appendChild(
    el("textarea", null, null, { rows: "1", "aria-label": "Message", placeholder: "Ask a question\u2026", "data-testid": "input", maxlength: "4000" })
  );
  var sendBtn = form.appendChild(el("button", "send", "Send", { type: "submit", "data-testid": "send" }));

  var bot = { features: {} };
  var busy = false;
  var ready = Promise.resolve(); // the session and the stored conversation, before a new message

  function applyBot(b) {
    bot = b;
    bot.features = b.features || {};
    var title = b.title || b.name || "Chat";
    titleEl.textContent = title;
    panel.setAttribute("aria-label", title);
    launcher.setAttribute("aria-label", "Chat with " + title);
    var accent = typeof b.accent_color === "string" && /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i.test(b.accent_color) ? b.accent_color : null;
    if (accent) {
      root.style.setProperty("--a", accent);
      root.style.setProperty("--at", luminance(accent) > 0.5 ? "#111" : "#fff");
    }
    welcome.textContent = "";
    welcome.appendChild(markdown(b.welcome_message || "", {}));
    welcome.hidden = !b.welcome_message;
    starters.textContent = "";
    (Array.isArray(b.starter_questions) ? b.starter_questions : []).forEach(function (q) {
      if (typeof q !== "string" || !q.trim()) return;
      starters.appendChild(el("button", "starter", q, { type: "button", "data-testid": "starter" })).addEventListener("click", function () {
        ask(q);
      });
    });
    starters.hidden = !!log.querySelector(".visitor,.bot:not([data-testid=welcome]),.agent");
    setMode(mode);
  }

  function svgIcon(d) {
    var NS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.appendChild(document.createElementNS(NS, "path")).setAttribute("d", d);
    return svg;
  }

  function luminance(hex) {
    var h = hex.slice(1);
    if (h.length === 3) h = h.replace(/./g, "$&$&");
    var rgb = [0, 2, 4].map(function (i) {
      var c = parseInt(h.substr(i, 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
  }

  function open(focus) {
    panel.hidden = false;
    root.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    icon.setAttribute("d", CLOSE_ICON);
    if (!INLINE) {
      st.open = true;
      save();
    }
    scrollDown(true);
    if (focus) input.focus();
    syncStream();
  }

  function close(returnFocus) {
    if (INLINE) return;
    panel.hidden = true;
    root.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    icon.setAttribute("d", CHAT_ICON);
    st.open = false;
    save();
    if (returnFocus) launcher.focus();
    syncStream();
  }

  function scrollDown(force) {
    if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 80) log.scrollTop = log.scrollHeight;
  }

  function showError(f, retry) {
    errBox.textContent = "";
    errBox.appendChild(el("span", null, f.text));
    if (f.retry && retry) {
      errBox.appendChild(el("button", null, "Retry", { type: "button", "data-testid": "retry" })).addEventListener("click", function () {
        clearError();
        retry();
      });
    }
    errBox.hidden = false;
  }

  function clearError() {
    errBox.hidden = true;
    errBox.textContent = "";
  }

  // One message in the log: visitor text, or a bot/agent answer with its citations and actions row.
  function addMessage(sender, content, author) {
    starters.hidden = true;
    var m = { sender: sender, text: content || "", cites: {}, id: null };
    if (sender === "visitor") {
      m.el = el("div", "msg visitor", m.text, { "data-testid": "message-visitor" });
    } else if (sender === "system") {
      m.el = el("div", "msg system", m.text, { "data-testid": "message-system" });
    } else {
      m.el = el("div", "msg " + (sender === "agent" ? "agent" : "bot"), null, { "data-testid": "message-bot", "data-sender": sender });
      if (sender === "agent") m.el.appendChild(el("span", "label", String(author || "Support agent")));
      m.body = m.el.appendChild(el("div", "body"));
      m.citeList = m.el.appendChild(el("ol", "cites", null, { "aria-label": "Sources" }));
      m.actions = m.el.appendChild(el("div", "actions"));
    }
    log.appendChild(m.el);
    paint(m);
    scrollDown(true);
    return m;
  }

  function paint(m) {
    if (!m.body) return;
    var near = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    m.body.textContent = "";
    m.body.appendChild(markdown(m.text, m.cites));
    m.body.classList.toggle("typing", !!m.streaming && !m.text);
    m.citeList.textContent = "";
    Object.keys(m.cites)
      .sort(function (a, b) {
        return a - b;
      })
      .forEach(function (n) {
        var c = m.cites[n];
        var li = m.citeList.appendChild(el("li", null, null, { value: n }));
        var label = String(c.title || c.url || c.path || "Source " + n);
        if (c.start_s != null && isFinite(c.start_s)) label += " (at " + clock(c.start_s) + ")";
        else if (c.page != null) label += " (p. " + c.page + ")";
        var href = citationHref(c);
        var item = href ? link(href, label) : el("span", null, label);
        item.setAttribute("data-testid", "citation");
        if (c.snippet) item.title = String(c.snippet).slice(0, 300);
        li.appendChild(item);
      });
    m.citeList.hidden = !m.citeList.firstChild;
    m.actions.textContent = "";
    if (bot.features.feedback && m.id && m.sender === "bot" && !m.streaming) {
      [["up", "Helpful"], ["down", "Not helpful"]].forEach(function (b) {
        var btn = m.actions.appendChild(el("button", null, null, { type: "button", "data-testid": "feedback-" + b[0], "aria-label": b[1], "aria-pressed": String(m.vote === b[0]) }));
        btn.appendChild(svgIcon(THUMB));
        btn.addEventListener("click", function () {
          if (m.vote !== b[0]) sendFeedback(m, b[0]);
        });
      });
    }
    m.actions.hidden = !m.actions.firstChild;
    if (near) scrollDown(true);
  }

  function setCitations(m, list) {
    (list || []).forEach(function (c) {
      if (c && c.n != null) m.cites[c.n] = c;
    });
  }

  function fail(e, retry) {
    showError(e instanceof Failure ? e : new Failure("Connection lost.", !!retry), retry);
  }

  function convPath(tail) {
    return "/v1/conversations/" + encodeURIComponent(st.conversation_id) + tail;
  }

  // ---------------------------------------------------------------- feedback (one vote per answer, changeable)
  function sendFeedback(m, rating, comment) {
    var before = m.vote;
    m.vote = rating;
    paint(m);
    if (m.more) m.el.removeChild(m.more);
    m.more = null;
    if (rating === "down" && comment == null) {
      // an optional word on what was wrong
      m.more = m.el.appendChild(el("form", "more"));
      var box = m.more.appendChild(el("input", null, null, { "aria-label": "What was wrong? (optional)", placeholder: "What was wrong? (optional)", maxlength: "2000", "data-testid": "feedback-comment" }));
      m.more.appendChild(el("button", "send", "Send", { type: "submit", "data-testid": "feedback-send" }));
      m.more.addEventListener("submit", function (e) {
        e.preventDefault();
        if (box.value.trim()) sendFeedback(m, "down", box.value.trim());
      });
    } else if (comment) m.more = m.el.appendChild(el("div", "label", "Thanks for the feedback."));
    var body = { rating: rating };
    if (comment) body.comment = comment;
    // one request at a time per answer, in click order: the last vote is the one kept
    m.fb = (m.fb || Promise.resolve()).then(async function () {
      try {
        var res = await authed("/v1/messages/" + encodeURIComponent(m.id) + "/feedback", body);
        if (!res.ok) throw await failure(res, "Your feedback couldn't be sent.");
        setMode((await res.json()).owner_mode); // a thumbs-down may bring in a person
      } catch (e) {
        if (m.vote === rating) {
          m.vote = before;
          paint(m);
        }
        fail(e);
      }
    });
  }

  // ---------------------------------------------------------------- people: handoff and the live events
  var mode = "bot"; // who owns the conversation: bot | pending_human | human | resolved
  var agentName = "";
  var seen = {}; // ids of messages already shown
  var thanked = {}; // leads already thanked for
  var live = false; // the stored conversation is loaded: live events may start
  var ev = { conv: null, last: 0, ctrl: null, timer: null, tries: 0 };

  function setMode(m) {
    if (typeof m === "string" && m) mode = m;
    var people = mode === "pending_human" || mode === "human";
    if (mode !== "human") agentName = "";
    handoffBtn.hidden = !bot.features.handoff || !st.conversation_id || people;
    statusEl.textContent = mode === "human" ? "You're chatting with " + (agentName || "our team") : "Waiting for a person\u2026";
    statusEl.hidden = !people;
    syncStream();
  }

  async function requestHandoff() {
    if (!st.conversation_id) return;
    handoffBtn.disabled = true;
    clearError();
    try {
      var res = await authed(convPath("/handoff"), {});
      if (!res.ok) {
        var f = await failure(res, "Our team can't be reached right now.");
        if (f.code === "handoff_disabled") {
          bot.features.handoff = false;
          f = new Failure("Talking to a person isn't available here.", false);
        }
        setMode(mode);
        throw f;
      }
      var d = await res.json();
      if (d.system_message) showLive(d.system_message);
      if (d.lead_form) renderLeadForm(d.lead_form);
      setMode(d.owner_mode);
    } catch (e) {
      fail(e, requestHandoff);
    } finally {
      handoffBtn.disabled = false;
    }
  }
  handoffBtn.addEventListener("click", requestHandoff);

  function showLive(d) {
    if (!d || !d.id || seen[d.id] || d.internal || (d.sender_type !== "agent" && d.sender_type !== "system")) return;
    seen[d.id] = 1;
    if (d.sender_type === "agent" && d.author) {
      agentName = String(d.author);
      setMode();
    }
    addMessage(d.sender_type, String(d.content || ""), d.author);
  }

  function onLive(type, d) {
    if (type === "message") showLive(d); // visitor and bot messages: this page has them already
    else if (type === "handoff") {
      if (d.mode === "human" && d.assignee) agentName = String(d.assignee);
      setMode(d.mode);
    }
    else if (type === "lead_form") renderLeadForm(d);
    else if (type === "lead_saved") thank(d.lead_id);
  }

  // One event stream, for the current conversation, while the panel is open or people own it.
  function syncStream() {
    var want = live && st.conversation_id && (!panel.hidden || mode === "pending_human" || mode === "human");
    if (!want || ev.conv !== st.conversation_id) stopStream();
    if (want && !ev.ctrl && !ev.timer) openStream();
  }

  function stopStream() {
    clearTimeout(ev.timer);
    ev.timer = null;
    if (ev.ctrl) ev.ctrl.abort();
    ev.ctrl = null;
  }

  async function openStream() {
    if (ev.conv !== st.conversation_id) {
      ev.conv = st.conversation_id;
      ev.last = 0; // a new conversation: everything it has
      ev.tries = 0;
    }
    var ctrl = (ev.ctrl = new AbortController());
    var headers = { Accept: "text/event-stream" };
    if (ev.last) headers["Last-Event-ID"] = String(ev.last);
    var gone = false;
    try {
      var res = await authed(convPath("/events"), null, headers, ctrl.signal);
      gone = [403, 404].indexOf(res.status) >= 0;
      if (res.ok) {
        ev.tries = 0;
        await readEvents(res, function (type, d, id) {
          if (ctrl !== ev.ctrl) return;
          if (id && +id > ev.last) ev.last = +id;
          onLive(type, d);
        });
      }
    } catch (e) {
      /* dropped, or stopped on purpose */
    }
    if (ctrl !== ev.ctrl) return; // stopped or replaced meanwhile
    ev.ctrl = null;
    if (gone) return;
    var wait = Math.min(30000, 1000 * Math.pow(2, ev.tries++)) * (0.75 + Math.random() / 2);
    ev.timer = setTimeout(function () {
      ev.timer = null;
      syncStream();
    }, wait);
  }
  addEventListener("pagehide", stopStream);
  addEventListener("pageshow", function (e) {
    if (e.persisted) syncStream();
  });

  // ---------------------------------------------------------------- lead form
  var LABELS = { email: "Email", name: "Name", phone: "Phone", company: "Company" };

  function renderLeadForm(data) {
    var spec = (data && data.form) || bot.lead_form;
    if (!spec || !Array.isArray(spec.fields) || !leadForm.hidden) return;
    leadForm.textContent = "";
    var f = leadForm.appendChild(el("form", null, null, { novalidate: "" }));
    f.appendChild(el("p", null, String(spec.title || "Leave your details")));
    var inputs = {};
    var errs = {};
    function slot(name, parent) {
      errs[name] = parent.appendChild(el("span", "fe", null, { "data-testid": "lead-error-" + (name || "form"), id: "rb-e-" + name }));
      errs[name].hidden = true;
    }
    spec.fields.forEach(function (fd) {
      var name = String(fd.name);
      var label = f.appendChild(el("label"));
      label.appendChild(el("span", null, (fd.label || LABELS[name] || name.replace(/^custom:/, "")) + (fd.required ? " *" : "")));
      inputs[name] = label.appendChild(
        el("input", null, null, {
          type: name === "email" ? "email" : name === "phone" ? "tel" : "text",
          name: name,
          autocomplete: { email: "email", name: "name", phone: "tel", company: "organization" }[name] || "off",
          "aria-required": String(!!fd.required),
          "aria-describedby": "rb-e-" + name,
          "data-testid": "lead-" + name,
        })
      );
      slot(name, label);
    });
    var consent = null;
    if (spec.consent_text) {
      var c = f.appendChild(el("label", "consent"));
      consent = c.appendChild(el("input", null, null, { type: "checkbox", "data-testid": "lead-consent", "aria-describedby": "rb-e-consent" }));
      c.appendChild(el("span", null, String(spec.consent_text)));
      slot("consent", f);
    }
    slot("", f);
    var row = f.appendChild(el("div", "row"));
    var submit = row.appendChild(el("button", "send", "Send", { type: "submit", "data-testid": "lead-submit" }));
    row.appendChild(el("button", "skip", "Not now", { type: "button", "data-testid": "lead-dismiss" })).addEventListener("click", function () {
      leadForm.hidden = true;
    });
    f.addEventListener("submit", async function (e) {
      e.preventDefault();
      var fields = {};
      Object.keys(inputs).forEach(function (k) {
        if (inputs[k].value.trim()) fields[k] = inputs[k].value.trim();
      });
      var utm = {};
      new URLSearchParams(location.search).forEach(function (v, k) {
        if (/^utm_(source|medium|campaign|term|content)$/.test(k)) utm[k] = v.slice(0, 200);
      });
      var body = { fields: fields, consent: !!(consent && consent.checked), page_url: location.href.slice(0, 2000) };
      if (Object.keys(utm).length) body.utm = utm;
      Object.keys(errs).forEach(function (k) {
        errs[k].hidden = true;
        errs[k].textContent = "";
        if (inputs[k]) inputs[k].removeAttribute("aria-invalid");
      });
      function mark(k, text) {
        var box = errs[k] || errs[""];
        box.textContent += (errs[k] ? "" : (box.textContent ? " " : "") + (k ? k + ": " : "")) + text;
        box.hidden = false;
        if (inputs[k]) inputs[k].setAttribute("aria-invalid", "true");
      }
      submit.disabled = true;
      try {
        var res = await authed(st.conversation_id ? convPath("/lead") : "/v1/leads", body);
        if (res.status === 422) {
          var j = await res.json().catch(function () {
            return {};
          });
          var bad = j.fields || (j.error && j.error.fields) || { "": "Please check the form." };
          Object.keys(bad).forEach(function (k) {
            mark(k, String(bad[k]));
          });
          var first = f.querySelector("[aria-invalid=true]");
          if (first) first.focus();
          return;
        }
        if (!res.ok) throw await failure(res, "Your details couldn't be sent.");
        st.lead = true;
        save();
        thank((await res.json()).lead_id);
      } catch (x) {
        mark("", x instanceof Failure ? x.text : "Connection lost.");
      } finally {
        submit.disabled = false;
      }
    });
    leadForm.hidden = false;
    scrollDown(true);
  }

  function thank(id) {
    leadForm.hidden = true;
    leadForm.textContent = "";
    if (thanked[id]) return;
    thanked[id] = 1;
    addMessage("system", "Thanks! We've got your details and will be in touch.").el.setAttribute("data-testid", "lead-thanks");
  }

  // ---------------------------------------------------------------- chat turn
  async function ask(text, retrying) {
    if (busy || !text) return;
    busy = true;
    sendBtn.disabled = true;
    clearError();
    if (!retrying) addMessage("visitor", text);
    var m = null;
    var ended = false;
    var retry = function () {
      ask(text, true);
    };
    try {
      await ready;
      var res;
      try {
        res = await postChat(text);
      } catch (e) {
        throw e instanceof Failure ? e : new Failure("Connection lost.", true);
      }
      if (!res.ok) throw await failure(res, "The assistant is unavailable right now.");
      var bubble = function () {
        if (!m) {
          m = addMessage("bot", "");
          m.streaming = true;
          paint(m);
        }
        return m;
      };
      if (mode === "bot") bubble(); // typing... (people answer through the live events instead)
      log.setAttribute("aria-busy", "true");
      var streamError = null;
      try {
        await readEvents(
          res,
          function (type, d) {
            if ((type === "start" || type === "done") && d.conversation_id && d.conversation_id !== st.conversation_id) {
              st.conversation_id = d.conversation_id;
              save();
              setMode(); // the handoff button and the live events belong to a conversation
            }
            if (type === "delta" && typeof d.text === "string") bubble().text += d.text;
            else if (type === "citation") setCitations(bubble(), [d]);
            else if (type === "error") streamError = new Failure(String(d.message || "Something went wrong."), true);
            else if (type === "done") {
              ended = true;
              setMode(d.owner_mode);
              if (d.status === "forwarded" || d.status === "superseded") {
                // people own the conversation: no bot answer (a superseded one is withdrawn)
                if (m) m.text = "";
                if (m) m.cites = {};
              } else {
                bubble().id = d.message_id || null;
                if (typeof d.answer === "string" && d.answer) m.text = d.answer;
                setCitations(m, d.citations);
              }
            }
          },
          function () {
            if (m) paint(m);
          }
        );
      } catch (e) {
        /* connection dropped mid-stream */
      }
      if (streamError) throw streamError;
      if (!ended) throw new Failure("Connection lost.", true);
    } catch (e) {
      showError(e instanceof Failure ? e : new Failure("Connection lost.", true), retry);
    } finally {
      if (m) {
        m.streaming = false;
        if (!m.text && !Object.keys(m.cites).length) log.removeChild(m.el);
        else paint(m);
      }
      log.setAttribute("aria-busy", "false");
      busy = false;
      sendBtn.disabled = false;
    }
  }

  // ---------------------------------------------------------------- restore the stored conversation
  async function loadHistory() {
    if (!st.conversation_id) return;
    var res = await authed(convPath(""));
    if (res.status === 404) {
      st.conversation_id = null;
      save();
      return;
    }
    if (!res.ok) return;
    var data = await res.json();
    ev.conv = st.conversation_id;
    ev.last = +data.last_event_id || 0; // live events resume after what this shows
    (data.messages || []).forEach(function (msg) {
      var sender = ["visitor", "bot", "agent", "system"].indexOf(msg.sender_type) >= 0 ? msg.sender_type : "bot";
      seen[msg.id] = 1;
      if (!msg.content && !(msg.citations || []).length) return; // e.g. an answer that failed before a word
      if (sender === "agent" && msg.author) agentName = String(msg.author);
      var m = addMessage(sender, String(msg.content || ""), msg.author);
      if (m.body) {
        m.id = msg.id;
        setCitations(m, msg.citations);
        paint(m);
      }
    });
    setMode(data.owner_mode);
    scrollDown(true);
  }

  function boot() {
    ready = session()
      .then(loadHistory)
      .then(function () {
        live = true;
        setMode();
        if (bot.ask_lead_before_chat && !st.conversation_id && !st.lead) renderLeadForm({ reason: "before_chat" });
      })
      .catch(function (e) {
        showError(e instanceof Failure ? e : new Failure("The assistant is unavailable right now.", true), boot);
      });
  }

  // ---------------------------------------------------------------- events
  launcher.addEventListener("click", function () {
    if (panel.hidden) open(true);
    else close(true);
  });
  closeBtn.addEventListener("click", function () {
    close(true);
  });
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && !INLINE) {
      e.preventDefault();
      close(true);
    }
  });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || busy) return;
    input.value = "";
    grow();
    ask(text);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (form.requestSubmit) form.requestSubmit();
      else form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 120) + "px";
  }
  input.addEventListener("input", grow);

  function mount() {
    var parent = INLINE && script.parentNode && script.parentNode !== document.head ? script.parentNode : document.body;
    if (parent === script.parentNode) parent.insertBefore(host, script);
    else parent.appendChild(host);
    if (INLINE || st.open) open(false);
    boot();
  }

  window.RagbotWidget = {
    open: function () {
      open(true);
    },
    close: function () {
      close(false);
    },
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
