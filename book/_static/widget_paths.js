// Set-up for the widget scripts that the book serves itself (tools/vendor_js.py copies them from
// npm into _static/), so that a page shows its widgets without a network. Runs after require.js
// and before embed-amd.js (nb_ipywidgets_js in book/_config.yml lists the three in that order).
(function () {
  "use strict";
  var here = document.currentScript && document.currentScript.src;
  if (!here) {
    return;
  }
  var staticDir = here.substring(0, here.lastIndexOf("/") + 1);

  // html-manager's loader asks RequireJS for a widget module by name first and falls back to a
  // CDN only when that fails: point the names at the local copies. html-manager also finds its
  // icon fonts from its own module's URL, which RequireJS otherwise puts next to the page.
  window.__jupyter_widgets_assets_path__ = staticDir + "html-manager/";
  if (typeof window.requirejs !== "undefined") {
    window.requirejs.config({
      paths: {
        "@jupyter-widgets/html-manager/dist": staticDir + "html-manager",
        "jupyter-matplotlib": staticDir + "jupyter-matplotlib/index",
      },
    });
  }

  // The widgets typeset their labels with MathJax 2's `MathJax.Hub.Queue` whenever a global
  // MathJax exists; the book loads MathJax 3, which has no Hub, so that call would throw. Give
  // MathJax 3 the one entry point they use (MathJax runs deferred, before DOMContentLoaded;
  // the widgets render on the load event, after this).
  function bridgeMathJax() {
    var mj = window.MathJax;
    if (mj && typeof mj.typesetPromise === "function" && !mj.Hub) {
      mj.Hub = {
        Queue: function (command) {
          var element = command && command[2];
          mj.typesetPromise(element ? [element] : undefined).catch(function (err) {
            console.warn("MathJax could not typeset a widget label:", err);
          });
        },
      };
    }
  }
  document.addEventListener("DOMContentLoaded", bridgeMathJax);
  window.addEventListener("load", bridgeMathJax);
})();
