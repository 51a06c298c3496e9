/* ELYSIUM's one script for the shop: keeps the keyboard's place when htmx swaps a region.
 *
 * When a swap removes the element that had the focus (the button pressed, the line removed),
 * the browser drops the focus to <body> and the next Tab lands in the footer. Once the swap
 * has settled, and only if the focus was lost that way, this moves it to, in order:
 *   1. the first field with an error among what was swapped in (aria-invalid="true", or the
 *      control described by an error message that was just filled in out of band);
 *   2. the first [data-focus-after-swap] element swapped into the region that was asked for,
 *      then into the out-of-band updates (a new address card, the empty wishlist);
 *   3. the nearest [data-focus-after-swap] element before the place that changed (the page's
 *      or the list's heading, when a card simply went away).
 * A swap asked for while nothing had the focus (a slot filled as it scrolls into view, the back
 * office's counts refreshed on a timer) took no focus away, so it gives none: moving it would
 * scroll the page back to the mark under the reader's eyes.
 * The live region (#messages) says what changed; the focus only says where to carry on.
 * Without JavaScript every action loads a full page, and nothing here runs.
 */
(function () {
  "use strict";

  var MARK = "[data-focus-after-swap]";
  var swap = null;
  // What had the focus when each request was sent (before htmx disables its element).
  var focusAtRequest = new WeakMap();
  // What a swap adds to the page: htmx swaps the out-of-band updates first, announcing each,
  // then the region that was asked for.
  var records = [];
  var changes = new MutationObserver(function (delivered) {
    records.push.apply(records, delivered);
  });

  function precedes(a, b) {
    return Boolean(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING);
  }

  function inDocumentOrder(elements) {
    return elements.sort(function (a, b) {
      return precedes(a, b) ? -1 : 1;
    });
  }

  /* The last mark before `target` that is not inside it. */
  function markBefore(target) {
    var found = null;
    var marks = document.querySelectorAll(MARK);
    for (var i = 0; i < marks.length; i++) {
      if (target.contains(marks[i])) continue;
      if (!precedes(marks[i], target)) break;
      found = marks[i];
    }
    return found;
  }

  function added() {
    var elements = [];
    var taken = records.concat(changes.takeRecords());
    records = [];
    taken.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (node.nodeType === Node.ELEMENT_NODE) elements.push(node);
      });
    });
    return elements;
  }

  function within(elements, selector) {
    var found = [];
    elements.forEach(function (element) {
      if (!element.isConnected) return;
      if (element.matches(selector)) found.push(element);
      found.push.apply(found, element.querySelectorAll(selector));
    });
    return inDocumentOrder(found);
  }

  function invalidFields(elements) {
    var fields = within(elements, '[aria-invalid="true"]');
    within(elements, ".field-error[id]").forEach(function (error) {
      if (!error.textContent.trim()) return;
      var described = document.querySelector('[aria-describedby~="' + CSS.escape(error.id) + '"]');
      if (described) fields.push(described);
    });
    return inDocumentOrder(fields);
  }

  /* A group (a fieldset of radios) takes the focus through its chosen or first control. */
  function focusable(element) {
    if (element.matches("input, select, textarea, button, a[href], [tabindex]")) return element;
    return (
      element.querySelector("input:checked:not(:disabled)") ||
      element.querySelector("input:not(:disabled), select:not(:disabled), textarea:not(:disabled)")
    );
  }

  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body || !active.isConnected;
  }

  function restoreFocus(done) {
    if (!done.hadFocus || !focusLost()) return;
    var candidates = invalidFields(done.main.concat(done.outOfBand))
      .concat(within(done.main, MARK))
      .concat(within(done.outOfBand, MARK))
      .concat(done.before && done.before.isConnected ? [done.before] : []);
    for (var i = 0; i < candidates.length; i++) {
      var target = focusable(candidates[i]);
      if (target) {
        target.focus();
        return;
      }
    }
  }

  function finish(current) {
    if (current.finishing) return;
    current.finishing = true;
    window.setTimeout(function () {
      if (swap !== current) return; // a newer swap took over
      swap = null;
      current.main = added();
      changes.disconnect();
      restoreFocus(current);
    }, 0);
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!focusLost()) focusAtRequest.set(event.detail.xhr, document.activeElement);
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!event.detail.shouldSwap || !target) return;
    changes.disconnect();
    records = [];
    changes.observe(document.body, { childList: true, subtree: true });
    swap = {
      before: markBefore(target),
      main: [],
      outOfBand: [],
      hadFocus: focusAtRequest.has(event.detail.xhr),
    };
  });

  document.addEventListener("htmx:oobAfterSwap", function () {
    if (swap) swap.outOfBand.push.apply(swap.outOfBand, added());
  });

  document.addEventListener("htmx:afterSettle", function () {
    if (swap) finish(swap);
  });

  /* A swap that left nothing behind (a card deleted) has nothing to settle: look now. */
  document.addEventListener("htmx:afterOnLoad", function () {
    if (swap && !document.querySelector("." + htmx.config.settlingClass)) finish(swap);
  });
})();
