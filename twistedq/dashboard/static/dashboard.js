// The twistedq dashboard: one EventSource ("stream", relative to the page),
// a snapshot first, then the sections that changed.  No framework, no build.
(function () {
  "use strict";
  var sections = {};
  var offset = 0;          // server clock minus browser clock, seconds
  var config = {actions: [], token_header: "x-twistedq-token"};
  var $ = function (id) { return document.getElementById(id); };

  function now() { return Date.now() / 1000 + offset; }

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attributes[key]; }
      else if (key === "onclick") { node.addEventListener("click", attributes[key]); }
      // Through the CSS object model: the page's Content-Security-Policy
      // refuses style attributes.
      else if (key === "width") { node.style.width = attributes[key]; }
      else { node.setAttribute(key, attributes[key]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function td(text, cls, title) {
    var cell = el("td", {text: text == null ? "" : String(text)});
    if (cls) { cell.className = cls; }
    cell.title = title || (text == null ? "" : String(text));
    return cell;
  }

  function seconds(value) {
    if (value == null) { return "–"; }
    value = Math.max(0, value);
    if (value < 60) { return value.toFixed(value < 10 ? 1 : 0) + " s"; }
    if (value < 3600) { return Math.floor(value / 60) + " min " + Math.floor(value % 60) + " s"; }
    if (value < 86400) { return Math.floor(value / 3600) + " h " + Math.floor(value % 3600 / 60) + " min"; }
    return Math.floor(value / 86400) + " d " + Math.floor(value % 86400 / 3600) + " h";
  }

  function ago(time) { return time == null ? "–" : seconds(now() - time) + " ago"; }
  function at(time) { return time == null ? "–" : new Date(time * 1000).toLocaleTimeString(); }
  function mib(kib) { return kib == null ? "–" : (kib / 1024).toFixed(0) + " MiB"; }
  function short(id) { return id ? id.slice(0, 8) : ""; }
  function operator() { return config.actions.length > 0; }
  function offers(name) { return config.actions.indexOf(name) >= 0; }

  function fill(tbody, rows, columns, empty) {
    tbody.textContent = "";
    if (!rows.length) {
      tbody.appendChild(el("tr", {"class": "empty"}, [el("td", {colspan: String(columns), text: empty})]));
      return;
    }
    rows.forEach(function (row) { tbody.appendChild(row); });
  }

  function say(text) {
    $("message").textContent = text;
    clearTimeout(say.timer);
    say.timer = setTimeout(function () { $("message").textContent = ""; }, 5000);
  }

  function headers() {
    var result = {"content-type": "application/json"};
    var token = sessionStorage.getItem("twistedq-token");
    if (config.token_header && token) { result[config.token_header] = token; }
    if (config.csrf_header && config.csrf_token) { result[config.csrf_header] = config.csrf_token; }
    return result;
  }

  function act(name, body) {
    return fetch("actions/" + name, {method: "POST", headers: headers(), body: JSON.stringify(body),
                                     credentials: "same-origin"})
      .then(function (response) {
        return response.json().then(function (answer) {
          if (!response.ok) { throw new Error(answer.error || response.statusText); }
          return answer;
        });
      })
      .then(function (answer) { say(name + ": " + JSON.stringify(answer)); return answer; },
            function (error) { say(name + " refused: " + error.message); });
  }

  function button(text, onclick, danger) {
    var node = el("button", {type: "button", text: text, onclick: onclick});
    if (danger) { node.className = "danger"; }
    return node;
  }

  function renderQueues() {
    var queues = sections.queues || {};
    var show = function (id, value) { $(id).textContent = value == null ? "–" : value; };
    show("q-ready", queues.ready);
    show("q-unacked", queues.unacked);
    show("q-consumers", queues.consumers);
    show("q-dead", queues.dead_letters);
    $("queue-name").textContent = queues.queue || "";
  }

  function renderChart() {
    var rates = sections.rates;
    var svg = $("chart");
    if (!rates) { return; }
    var n = rates.succeeded.length, top = 1, ok = 0, bad = 0;
    for (var i = 0; i < n; i++) {
      top = Math.max(top, rates.succeeded[i] + rates.failed[i]);
      ok += rates.succeeded[i];
      bad += rates.failed[i];
    }
    var width = 600 / n, parts = [];
    for (var j = 0; j < n; j++) {
      var hOk = 110 * rates.succeeded[j] / top, hBad = 110 * rates.failed[j] / top;
      var x = (j * width + 0.5).toFixed(1), w = (width - 1).toFixed(1);
      var title = at(rates.start + j * rates.width) + ": " + rates.succeeded[j] + " ok, " + rates.failed[j] + " failed";
      parts.push('<g><title>' + title + '</title>' +
        '<rect x="' + x + '" y="' + (120 - hOk).toFixed(1) + '" width="' + w + '" height="' + hOk.toFixed(1) + '" fill="#2f9e57"/>' +
        '<rect x="' + x + '" y="' + (120 - hOk - hBad).toFixed(1) + '" width="' + w + '" height="' + hBad.toFixed(1) + '" fill="#d14343"/></g>');
    }
    svg.innerHTML = parts.join("");
    $("ok-total").textContent = ok;
    $("bad-total").textContent = bad;
  }

  function renderDaemons() {
    var daemons = sections.daemons || [];
    var live = daemons.filter(function (d) { return !d.gone; }).length;
    $("daemon-count").textContent = live + " up" + (daemons.length > live ? ", " + (daemons.length - live) + " gone" : "");
    fill($("daemons").tBodies[0], daemons.map(function (d) {
      var row = el("tr", {"data-name": d.name}, [
        td(d.name, "name"), td(d.host, "name"), td(d.pid, "num"),
        td((d.children == null ? "–" : d.children) + (d.concurrency != null ? " / " + d.concurrency : ""), "num"),
        td(d.busy, "num"), td(d.held, "num"), td(d.processed, "num"),
        td(mib(d.rss_kib) + (d.children_rss_kib != null ? " + " + mib(d.children_rss_kib) : ""), "num"),
        td(d.uptime == null ? "–" : seconds(d.uptime + (now() - d.last_heartbeat)), "num"),
        td(d.gone ? "gone, " + ago(d.last_heartbeat) : ago(d.last_heartbeat), "num")
      ]);
      if (d.gone) { row.className = "gone"; }
      return row;
    }), 10, sections.daemons ? "no daemon heard yet (heartbeats come every few seconds)" : "…");
  }

  function renderRunning() {
    var running = sections.running || [];
    var total = sections.running_count == null ? running.length : sections.running_count;
    $("running-count").textContent = total + (total > running.length ? " (the " + running.length + " running longest shown)" : "");
    fill($("running").tBodies[0], running.map(function (t) {
      var cells = [td(short(t.id), "id", t.id), td(t.name, "name"), td(t.args, "args"),
                   td(seconds(now() - t.started), "num runtime"), td(t.daemon, "name"), td(t.child)];
      if (operator()) {
        var buttons = [];
        if (offers("terminate")) { buttons.push(button("terminate", function () { act("terminate", {ids: [t.id]}); }, true)); }
        cells.push(el("td", {}, buttons));
      }
      return el("tr", {"data-id": t.id, "data-started": String(t.started)}, cells);
    }), 7, "nothing running");
  }

  function showFailure(id) {
    var pre = $("traceback");
    pre.hidden = false;
    pre.textContent = "reading " + id + "…";
    fetch("failure/" + id, {headers: headers(), credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (doc) {
        var head = id + " " + (doc.task || "") + ": " + doc.status + "\n" + (doc.exception || "") + ": " + (doc.message || "") + "\n\n";
        pre.textContent = head + (doc.traceback || (doc.traceback_hidden ? "(the traceback is shown to operators only)" : "(no traceback stored)"));
      }, function (error) { pre.textContent = "cannot read it: " + error; });
  }

  function renderFailures() {
    var failures = sections.failures || [];
    fill($("failures").tBodies[0], failures.map(function (f) {
      var row = el("tr", {"data-id": f.id, "class": "clickable", title: "show the traceback of " + f.id,
                          onclick: function () { showFailure(f.id); }},
                   [td(at(f.time)), td(f.name, "name"), td(f.exception || f.reason, "name"), td(f.daemon, "name")]);
      return row;
    }), 4, "no failure since the page opened");
  }

  function renderTasksets() {
    var list = $("tasksets");
    list.textContent = "";
    var tasksets = sections.tasksets || [];
    if (!tasksets.length) { list.appendChild(el("li", {"class": "muted", text: "no taskset in progress"})); return; }
    tasksets.forEach(function (t) {
      var total = t.total || 0, done = t.completed || 0, failed = t.failed || 0;
      var percent = total ? Math.round(100 * done / total) : 0;
      var bar = el("div", {"class": "bar"}, [
        el("span", {"class": "done", width: (total ? 100 * (done - failed) / total : 0) + "%"}),
        el("span", {"class": "failed", width: (total ? 100 * failed / total : 0) + "%"})
      ]);
      list.appendChild(el("li", {"data-id": t.id}, [
        el("div", {text: short(t.id) + "  " + (total ? done + " / " + total + " (" + percent + " %)" : "…") +
                         (failed ? ", " + failed + " failed" : "") + (t.ready ? " — ready" : "")}),
        bar
      ]));
    });
  }

  function renderPeriodic() {
    var periodic = sections.periodic || [];
    fill($("periodic").tBodies[0], periodic.map(function (p) {
      var cells = [td(p.name, "name"), td(p.enabled ? "active" : "paused", p.enabled ? "" : "paused"),
                   td(p.last_run_at ? ago(p.last_run_at) : "never"),
                   td(p.next_run_at ? at(p.next_run_at) : "–"), td(p.total_run_count, "num")];
      if (operator() && offers("pause")) {
        cells.push(el("td", {}, [p.enabled
          ? button("pause", function () { act("pause", {name: p.name}); })
          : button("resume", function () { act("resume", {name: p.name}); })]));
      }
      return el("tr", {"data-name": p.name}, cells);
    }), 6, "no periodic task in this daemon's scheduler");
  }

  function showDeadLetters() {
    $("dead-panel").hidden = false;
    fetch("deadletters", {headers: headers(), credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (rows) {
        if (!Array.isArray(rows)) { say("dead letters: " + (rows.error || "refused")); return; }
        fill($("dead").tBodies[0], rows.map(function (d) {
          var cells = [td(d.position, "num"), td(short(d.id), "id", d.id), td(d.name, "name"), td(d.reason, "name"),
                       td(d.detail, "detail"), td(d.time)];
          cells.push(el("td", {}, d.id && offers("republish")
            ? [button("republish", function () { act("republish", {ids: [d.id]}).then(showDeadLetters); })] : []));
          return el("tr", {"data-id": d.id || ""}, cells);
        }), 7, "no dead letter");
      });
  }

  var renderers = {queues: renderQueues, rates: renderChart, daemons: renderDaemons, running: renderRunning,
                   failures: renderFailures, tasksets: renderTasksets, periodic: renderPeriodic};

  function apply(message) {
    offset = message.now - Date.now() / 1000;
    var live = $("live");
    live.textContent = message.live ? "live" : "waiting for events";
    live.className = "badge " + (message.live ? "on" : "off");
    Object.keys(message.sections).forEach(function (name) { sections[name] = message.sections[name]; });
    if ("queues" in message.sections || "daemons" in message.sections) { renderQueues(); }
    Object.keys(message.sections).forEach(function (name) {
      if (renderers[name]) { renderers[name](); }
    });
    document.body.setAttribute("data-updated", String(message.now));
  }

  function connect() {
    var source = new EventSource("stream");
    source.addEventListener("snapshot", function (e) { sections = {}; apply(JSON.parse(e.data)); });
    source.addEventListener("patch", function (e) { apply(JSON.parse(e.data)); });
    source.onerror = function () {
      $("live").textContent = "reconnecting…";
      $("live").className = "badge off";
    };
  }

  function tick() {
    // Times relative to now move without a message from the server.
    $("clock").textContent = new Date(now() * 1000).toLocaleTimeString();
    if (sections.running && sections.running.length) { renderRunning(); }
    if (sections.daemons && sections.daemons.length) { renderDaemons(); }
  }

  function setUpOperator() {
    var shown = operator();
    Array.prototype.forEach.call(document.querySelectorAll(".operator"), function (node) { node.hidden = !shown; });
    if (shown && config.token_header) {
      var form = $("token-form");
      form.hidden = false;
      $("token").value = sessionStorage.getItem("twistedq-token") || "";
      form.addEventListener("submit", function (e) {
        e.preventDefault();
        sessionStorage.setItem("twistedq-token", $("token").value);
        say("token kept for this tab");
      });
    }
    $("show-dead").addEventListener("click", showDeadLetters);
    // Revoke stops a task not yet started (in the broker or held by a
    // daemon); a running one only terminate stops, from its row.
    $("revoke-id").hidden = !offers("revoke");
    $("revoke-id").addEventListener("click", function () {
      var id = window.prompt("Id of the task to revoke (not yet started)");
      if (id) { act("revoke", {ids: [id.trim()]}); }
    });
  }

  fetch("config", {credentials: "same-origin"})
    .then(function (response) { return response.json(); })
    .then(function (answer) { config = answer; }, function () {})
    .then(function () { setUpOperator(); connect(); setInterval(tick, 1000); });
}());
