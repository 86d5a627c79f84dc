// casefile console: live refresh of marked regions. An element with data-refresh="URL" is
// replaced by the server-rendered fragment at URL every few seconds; with
// data-until-not="A B", refreshing stops once no status A or B is shown. No other script.
"use strict";
(function () {
  const EVERY_MS = 3000;
  function watch(el) {
    const url = el.getAttribute("data-refresh");
    const until = (el.getAttribute("data-until-not") || "").split(" ").filter(Boolean);
    let last = el.innerHTML;
    async function tick() {
      try {
        const answer = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (answer.redirected || !answer.ok) return schedule();
        const html = await answer.text();
        if (html !== last) {
          // Same-origin HTML rendered (and escaped) by the server's templates.
          el.innerHTML = html;
          last = html;
        }
        if (until.length && !until.some((s) => el.querySelector(".status-" + s))) return;
      } catch (e) {
        // Network trouble: try again at the next tick.
      }
      schedule();
    }
    function schedule() { setTimeout(tick, EVERY_MS); }
    schedule();
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(watch);
  });
})();
