// sekisho web UI: live updates only. Every page works without this script.
// Elements with data-live="URL" are refreshed from URL whenever the broker reports a change
// (server-sent events on /events); a new pending request gives a visual and a sound cue.
(function () {
  "use strict";
  var parts = document.querySelectorAll("[data-live]");
  if (!parts.length || !window.EventSource) { return; }
  var lastPending = null;

  function cue() {
    document.body.classList.add("alert");
    setTimeout(function () { document.body.classList.remove("alert"); }, 4000);
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      var ctx = new Ctx();
      var osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.25);
    } catch (e) { /* no sound without a user gesture on some browsers */ }
  }

  // A part where someone is typing (a reason, a comment) is left alone, and refreshed once
  // they are done, so a live update never wipes a half-filled form.
  function busy(part) {
    var active = document.activeElement;
    if (active && part.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) { return true; }
    return Array.prototype.some.call(
      part.querySelectorAll("input:not([type]), input[type=text], textarea"),
      function (input) { return input.value !== ""; });
  }

  function refresh() {
    parts.forEach(function (part) {
      if (busy(part)) { part.setAttribute("data-stale", "1"); return; }
      part.removeAttribute("data-stale");
      fetch(part.getAttribute("data-live"), { credentials: "same-origin" })
        .then(function (r) { if (r.status === 401) { location.href = "/login"; } return r.ok ? r.text() : null; })
        .then(function (html) {
          // Replacing identical markup would only throw away what the page holds (focus,
          // elements a script or a person is about to use).
          if (html !== null && !busy(part) && part.innerHTML.trim() !== html.trim()) { part.innerHTML = html; }
        });
    });
  }

  document.addEventListener("focusout", function () {
    setTimeout(function () {
      parts.forEach(function (part) {
        if (part.getAttribute("data-stale") && !busy(part)) { refresh(); }
      });
    }, 0);
  });

  var source = new EventSource("/events");
  source.addEventListener("live", function (event) {
    var data = {};
    try { data = JSON.parse(event.data); } catch (e) { return; }
    var first = lastPending === null;
    if (!first && data.pending > lastPending) { cue(); }
    lastPending = data.pending;
    document.title = document.title.replace(/^\(\d+\) /, "");
    if (data.pending > 0) { document.title = "(" + data.pending + ") " + document.title; }
    var banner = document.getElementById("lockdown-banner");
    if (!!banner !== !!data.lockdown) { location.reload(); return; }
    // The first message only tells the state the page was rendered with.
    if (!first) { refresh(); }
  });
})();
