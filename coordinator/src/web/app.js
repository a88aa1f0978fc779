// Live updates: the server sends each changed task as its re-rendered card (server-sent
// events from the same Watch stream the CLI reads). Without JavaScript the pages still show
// everything; reload to refresh.
(function () {
  // Browser notifications of new questions while a page is open: asked for once, by a click
  // (browsers grant it only on a gesture); the choice is the browser's to keep.
  var notify = document.getElementById("notify");
  if (notify && window.Notification && Notification.permission === "default") {
    notify.hidden = false;
    notify.addEventListener("click", function () {
      Notification.requestPermission().then(function () { notify.hidden = true; });
    });
  }
  var live = document.body.getAttribute("data-live");
  if (live === null || !window.EventSource) return;
  var url = "/events" + (live ? "?task=" + encodeURIComponent(live) : "");
  var logText = document.getElementById("log-text");
  if (live && logText) url += "&log_seq=" + encodeURIComponent(logText.getAttribute("data-log-seq") || "0");
  var source = new EventSource(url);
  // One task's page: output.md, the diff and the worker's output, as text (never markup).
  function show(section, pre, text) {
    var s = document.getElementById(section), p = document.getElementById(pre);
    if (!s || !p) return;
    p.textContent = text;
    s.hidden = text === "";
  }
  source.addEventListener("output", function (e) { show("output-section", "output-text", JSON.parse(e.data).text); });
  source.addEventListener("diff", function (e) { show("diff-section", "diff-text", JSON.parse(e.data).text); });
  source.addEventListener("logs", function (e) {
    if (!logText) return;
    var t = logText.textContent + JSON.parse(e.data).chunk;
    // The end only, as the page first showed it.
    if (t.length > 16384) t = t.slice(t.length - 16384);
    show("logs-section", "log-text", t);
  });
  source.addEventListener("task", function (e) {
    var d = JSON.parse(e.data);
    if (d.asked && window.Notification && Notification.permission === "granted") {
      // Text only (a notification shows no markup); one per question, whatever the tabs.
      new Notification("dispatch: " + d.id + " asks (" + d.asked.label + ")", {
        body: d.asked.text,
        tag: d.id + "/" + d.asked.seq
      });
    }
    var old = document.getElementById("task-" + d.id);
    // Keep what someone is typing into an answer box across the update.
    var kept = {};
    if (old) {
      old.querySelectorAll("textarea[data-keep]").forEach(function (t) {
        kept[t.getAttribute("data-keep")] = { value: t.value, focus: document.activeElement === t };
      });
    }
    var box = document.createElement("div");
    box.innerHTML = d.html;
    var card = box.firstElementChild;
    if (old) {
      old.replaceWith(card);
    } else if (!live) {
      var ended = ["completed", "failed", "blocked", "cancelled", "lost"].indexOf(d.state) >= 0;
      var list = document.getElementById(ended ? "ended" : "active");
      if (!list) return;
      var empty = list.querySelector(".empty");
      if (empty) empty.remove();
      list.prepend(card);
    } else {
      return;
    }
    // An ended task moves from Active to Ended on the list page.
    if (!live) {
      var isEnded = ["completed", "failed", "blocked", "cancelled", "lost"].indexOf(d.state) >= 0;
      var target = document.getElementById(isEnded ? "ended" : "active");
      if (target && card.parentElement !== target) target.prepend(card);
    }
    card.querySelectorAll("textarea[data-keep]").forEach(function (t) {
      var k = kept[t.getAttribute("data-keep")];
      if (k) { t.value = k.value; if (k.focus) t.focus(); }
    });
  });
})();
