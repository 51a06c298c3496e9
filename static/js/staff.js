/* Back office: elements marked data-refresh reload themselves (htmx listens for the
   "refresh" event) every 30 seconds while this browser tab is visible, and at once on coming
   back to the tab if a turn was missed. htmx can't test visibility itself without eval,
   which the shop's htmx config and Content-Security-Policy forbid. */
(function () {
  "use strict";
  var PERIOD = 30000;
  var last = Date.now();

  function refresh() {
    last = Date.now();
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      element.dispatchEvent(new CustomEvent("refresh"));
    });
  }

  setInterval(function () {
    if (document.visibilityState === "visible") {
      refresh();
    }
  }, PERIOD);

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && Date.now() - last >= PERIOD) {
      refresh();
    }
  });
})();
