// casefile console: live refresh of marked regions. An element with data-refresh="URL" is
// replaced by the server-rendered fragment at URL every few seconds; with
// data-until-not="A B", refreshing stops once no status A or B is shown. Refreshing pauses
// after ten minutes without a key, click or mouse move (an unattended page must not keep
// asking), and resumes at the next one. No other script.
"use strict";
(function () {
  const EVERY_MS = 3000;
  const THROTTLED_MS = 30000;
  const IDLE_MS = 10 * 60 * 1000;
  let lastActivity = Date.now();
  const paused = [];
  function active() {
    lastActivity = Date.now();
    while (paused.length) paused.pop()();
  }
  ["keydown", "mousedown", "mousemove", "touchstart", "focus"].forEach(function (name) {
    window.addEventListener(name, active, { passive: true });
  });
  function watch(el) {
    const url = el.getAttribute("data-refresh");
    const until = (el.getAttribute("data-until-not") || "").split(" ").filter(Boolean);
    let last = el.innerHTML;
    function schedule(ms) { setTimeout(tick, ms); }
    async function tick() {
      if (Date.now() - lastActivity > IDLE_MS) {
        paused.push(function () { schedule(0); });
        return;
      }
      let wait = EVERY_MS;
      try {
        const answer = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (answer.status === 429) {
          wait = THROTTLED_MS;
        } else if (answer.ok && !answer.redirected) {
          const html = await answer.text();
          if (html !== last) {
            // Same-origin HTML rendered (and escaped) by the server's templates.
            el.innerHTML = html;
            last = html;
          }
          if (until.length && !until.some((s) => el.querySelector(".status-" + s))) return;
        }
      } catch (e) {
        // Network trouble: try again at the next tick.
      }
      schedule(wait);
    }
    schedule(EVERY_MS);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(watch);
  });
})();
