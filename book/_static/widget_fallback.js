// Static fallback for ipywidgets in the HTML book.
//
// A widget needs a running Python kernel. In the built HTML an ipywidgets output is only a
// <script type="application/vnd.jupyter.widget-view+json"> tag: it shows the widget's state saved
// at build time when the widget scripts can be loaded (online), and nothing at all otherwise
// (offline, blocked CDN). So that a reader never faces an empty space, this script puts a short
// visible note in front of every widget output saying where the control works.
(function () {
  "use strict";
  var WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]';

  function addFallbacks() {
    var views = document.querySelectorAll(WIDGET_VIEW);
    for (var i = 0; i < views.length; i++) {
      var view = views[i];
      var previous = view.previousElementSibling;
      if (previous && previous.classList.contains("rrvae-widget-fallback")) {
        continue; // already added
      }
      var note = document.createElement("div");
      note.className = "rrvae-widget-fallback";
      note.setAttribute("role", "note");
      note.textContent =
        "Interactive control: it responds only in a running notebook " +
        "(launch this page on Binder or Colab with the rocket button above, " +
        "or run `make lab` on your computer). In this web page it is shown as it was " +
        "when the book was built, or not at all where its scripts cannot load.";
      view.parentNode.insertBefore(note, view);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addFallbacks);
  } else {
    addFallbacks();
  }
})();
