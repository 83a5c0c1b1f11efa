/* zasync web view: keeps a page up to date without a reload.
 *
 * Every few seconds it asks /api/summary (JSON) for the database's last
 * transaction id; when that changed, or the page is older than STALE_MS
 * (ages and worker health change with time alone), it fetches this page
 * again and puts its fresh [data-live] regions in place of the old ones.
 * The new HTML was rendered and escaped by the server: nothing here builds
 * markup from data.  It also asks before a destructive action.
 */
(function () {
  "use strict";

  var STALE_MS = 15000;
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  var summaryUrl = body.getAttribute("data-summary-url");
  var serial = body.getAttribute("data-serial");
  var status = document.getElementById("live-status");
  var swappedAt = Date.now();

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  if (!(seconds > 0) || !summaryUrl || !window.fetch || !window.DOMParser) {
    return;
  }

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function typing() {
    var active = document.activeElement;
    return active && active.closest && active.closest("[data-live]") &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-live]").forEach(function (node) {
      var old = document.getElementById(node.id);
      if (old) {
        old.replaceWith(document.importNode(node, true));
      }
    });
    if (fresh.title) {
      document.title = fresh.title;
    }
    serial = fresh.body.getAttribute("data-serial") || serial;
    swappedAt = Date.now();
  }

  function reload() {
    return fetch(window.location.href, {
      credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"}
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/html") !== 0) {
        throw new Error("not a page");
      }
      return response.text();
    }).then(swap);
  }

  function tick() {
    if (document.hidden) {
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    fetch(summaryUrl, {
      credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}
    }).then(function (response) {
      return response.json();
    }).then(function (data) {
      var changed = data.serial !== serial;
      if ((changed || Date.now() - swappedAt > STALE_MS) && !typing()) {
        return reload();
      }
    }).then(function () {
      say("Live: updated " + new Date().toLocaleTimeString() + ".");
    }, function () {
      say("Cannot reach the server; retrying.");
    }).then(function () {
      window.setTimeout(tick, seconds * 1000);
    });
  }

  window.setTimeout(tick, seconds * 1000);
}());
