/* zasync web view: keeps a page up to date without a reload, and without
 * disturbing what the reader is doing.
 *
 * Every --refresh seconds it asks /api/summary for the database's last
 * transaction id, sending the one it has as If-None-Match: while nothing
 * was committed the answer is a bodiless 304.  When the id changed (or the
 * page is older than STALE_MS: worker health and the chart's minutes
 * change with time alone) it asks for this page again, sending the page's
 * ETag: a 304 means nothing visible changed and nothing is touched.  A new
 * page is morphed into the old one by Idiomorph (idiomorph.js, vendored,
 * 0BSD licence in idiomorph-LICENSE.txt), region by region ([data-live]):
 * only the elements and text that differ are changed, so an open
 * <details> stays open, a selection in unchanged text stays selected, the
 * scroll position and a field being typed in stay as they are.
 *
 * The new HTML was rendered and escaped by the server: nothing here builds
 * markup from data.  Relative times (<time class="live-time">) are
 * counted here, once a second, from their datetime attribute, which is
 * why the server's ETag leaves their text out.  It also asks before a
 * destructive action.
 */
(function () {
  "use strict";

  var STALE_MS = 30000;
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  var summaryUrl = body.getAttribute("data-summary-url");
  var serial = body.getAttribute("data-serial");
  var status = document.getElementById("live-status");
  var pageTag = null;        // the ETag of the page as it is shown
  var checkedAt = Date.now();
  var skew = 0;              // the server's clock minus ours, in ms

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // -- relative times ----------------------------------------------------

  function fmtSeconds(s) {
    if (s < 10) { return s.toFixed(2) + " s"; }
    if (s < 60) { return Math.round(s) + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }

  function relative(node, now) {
    var when = Date.parse(node.getAttribute("datetime"));
    if (isNaN(when)) { return null; }
    var delta = (now - when) / 1000;
    if (node.getAttribute("data-mode") === "since") { return fmtSeconds(Math.max(0, delta)); }
    if (delta > -1 && delta < 1) { return "now"; }
    var size = Math.abs(delta);
    var text = size >= 10 ? fmtSeconds(size) : size.toFixed(0) + " s";
    return delta > 0 ? text + " ago" : "in " + text;
  }

  function countTimes() {
    var now = Date.now() + skew;
    document.querySelectorAll("time.live-time").forEach(function (node) {
      var text = relative(node, now);
      if (text !== null && node.textContent !== text) {
        node.textContent = text;
      }
    });
  }

  window.setInterval(countTimes, 1000);

  if (!(seconds > 0) || !summaryUrl || !window.fetch || !window.DOMParser ||
      !window.Idiomorph) {
    return;
  }

  // -- polling -----------------------------------------------------------

  function say(text) {
    if (status && status.textContent !== text) {
      status.textContent = text;
    }
  }

  var morphing = {
    morphStyle: "outerHTML",
    ignoreActiveValue: true,
    callbacks: {
      // the reader opened or closed it: the server does not know
      beforeAttributeUpdated: function (name, element) {
        return !(name === "open" && element.tagName === "DETAILS");
      },
      // a relative time for the same moment keeps the text counted here
      beforeNodeMorphed: function (old, fresh) {
        return !(old.nodeType === 1 && old.classList.contains("live-time") &&
                 fresh.nodeType === 1 &&
                 old.getAttribute("datetime") === fresh.getAttribute("datetime") &&
                 old.getAttribute("data-mode") === fresh.getAttribute("data-mode"));
      }
    }
  };

  function apply(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-live]").forEach(function (node) {
      var old = document.getElementById(node.id);
      if (old) {
        window.Idiomorph.morph(old, document.importNode(node, true), morphing);
      }
    });
    if (fresh.title && document.title !== fresh.title) {
      document.title = fresh.title;
    }
    serial = fresh.body.getAttribute("data-serial") || serial;
    countTimes();
  }

  function fetchPage() {
    var headers = {"Accept": "text/html"};
    if (pageTag) {
      headers["If-None-Match"] = pageTag;
    }
    return fetch(window.location.href, {
      credentials: "same-origin", cache: "no-store", headers: headers
    }).then(function (response) {
      checkedAt = Date.now();
      if (response.status === 304) {
        return;     // nothing visible changed: touch nothing
      }
      var type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/html") !== 0) {
        throw new Error("not a page");
      }
      pageTag = response.headers.get("ETag");
      return response.text().then(apply);
    });
  }

  function tick() {
    if (document.hidden) {
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    fetch(summaryUrl, {
      credentials: "same-origin", cache: "no-store",
      headers: {"Accept": "application/json", "If-None-Match": "\"serial-" + serial + "\""}
    }).then(function (response) {
      var date = Date.parse(response.headers.get("Date") || "");
      if (!isNaN(date)) {
        // the Date header has whole seconds: follow only a real skew
        skew = Math.abs(date - Date.now()) > 2000 ? date - Date.now() : 0;
      }
      if (response.status === 304) {
        return false;
      }
      return response.json().then(function (data) {
        var changed = data.serial !== serial;
        serial = data.serial;
        return changed;
      });
    }).then(function (changed) {
      if (changed || pageTag === null || Date.now() - checkedAt > STALE_MS) {
        return fetchPage();
      }
    }).then(function () {
      say("Live: updates every " + seconds + " s.");
    }, function () {
      say("Cannot reach the server; retrying.");
    }).then(function () {
      window.setTimeout(tick, seconds * 1000);
    });
  }

  window.setTimeout(tick, seconds * 1000);
}());
