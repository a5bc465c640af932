// Tell RequireJS where the widget front ends that the book serves itself are (tools/vendor_js.py
// copies them from npm into _static/). html-manager's loader first asks RequireJS for a widget
// module by name and only falls back to a CDN when that fails, so with these paths a page shows
// its widgets without a network. Runs after require.js and before embed-amd.js
// (nb_ipywidgets_js in book/_config.yml lists the three in that order).
(function () {
  "use strict";
  if (typeof window.requirejs === "undefined") {
    return;
  }
  var here = document.currentScript && document.currentScript.src;
  if (!here) {
    return;
  }
  var staticDir = here.substring(0, here.lastIndexOf("/") + 1);
  window.requirejs.config({
    paths: {
      "jupyter-matplotlib": staticDir + "jupyter-matplotlib/index",
    },
  });
})();
