"""Interactive explorer of a trained rrVAE over a 4D-STEM scan, and its static stand-in.

:func:`explorer` builds an ipywidgets control with two tabs:

* **scan position**: pick a probe position by clicking on a map (when ipympl is installed) or with
  the two sliders; it shows the preprocessed pattern there, its reconstruction and its latents
  (angle with its posterior standard deviation, each content latent with its standard deviation).
* **decoder**: sliders over the content latents and the angle show the decoded pattern; a button
  copies the latents of the current scan position into the sliders.

Widgets need a running kernel; the HTML book shows them only as they were at build time, so every
explorer in a chapter is followed by :func:`explorer_figure`, the same panels for a few chosen scan
positions side by side (book/README.md).

Images are rendered with matplotlib's Agg backend into PNG ``ipywidgets.Image`` widgets, so the
control needs nothing beyond ipywidgets (and works the same under any matplotlib backend); only
the clickable map uses ipympl's canvas widget, when ipympl is importable.
"""

from __future__ import annotations

import io
import math
import sys
import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import plot as _plot

# ``Explorer`` (the widget class) is made on first use, since it needs ipywidgets.
__all__ = ["explorer", "explorer_figure"]

#: Resolution (dots per inch) of the PNG images inside the widget.
WIDGET_DPI = 80
#: Colour of the marker at the selected scan position.
MARKER_COLOR = "#00e5ff"


def _require_ipywidgets():
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "The explorer needs ipywidgets. Install the book extra: pip install 'rrvae-nb[book]' "
            "(or pip install ipywidgets)."
        ) from err
    return ipywidgets


def _ipympl_canvas():
    """ipympl's (Canvas, FigureManager) classes, or None when ipympl is not installed.

    Importing ipympl switches pyplot's backend to ipympl's (``ipympl/__init__.py`` calls
    ``matplotlib.use``), which would turn every later figure of the notebook into a widget and
    out of the HTML book. The backend in use before the import is restored.
    """
    import matplotlib

    rc, defaults = matplotlib.rcParams, matplotlib.rcParamsDefault
    saved = dict.__getitem__(rc, "backend")  # raw value: may be the "auto" sentinel
    saved_default = dict.__getitem__(defaults, "backend")
    plt = sys.modules.get("matplotlib.pyplot")
    saved_module = getattr(plt, "_backend_mod", None)
    try:
        from ipympl.backend_nbagg import Canvas, FigureManager
    except ImportError:
        return None
    finally:
        if dict.__getitem__(rc, "backend") != saved:
            if plt is not None and saved_module is not None:
                plt.switch_backend(saved)
            elif plt is not None:
                plt._backend_mod = None
            dict.__setitem__(rc, "backend", saved)
            dict.__setitem__(defaults, "backend", saved_default)
    return Canvas, FigureManager


def _png(fig: Figure, dpi: int = WIDGET_DPI) -> bytes:
    """Render a Figure (not registered with pyplot) to PNG bytes."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Shared checks and texts


def _checked_inputs(model, prepared, encoding, background, symmetry):
    """Validate the inputs; return (encoding, background map, symmetry)."""
    if getattr(prepared, "scan_shape", None) is None or not hasattr(prepared, "patterns"):
        raise ValueError(
            "prepared must be a rrvae_nb.preprocess.Prepared with a scan grid (scan_shape); pass "
            "4D data or scan_shape=(scan y, scan x) to prepare()."
        )
    shape = tuple(np.asarray(prepared.patterns).shape[1:])
    if tuple(model.pattern_shape) != shape:
        raise ValueError(
            f"The model was built for {tuple(model.pattern_shape)} patterns but prepared holds "
            f"{shape} patterns; use the model trained on these patterns."
        )
    n = len(prepared.patterns)
    if encoding is None:
        encoding = model.encode(prepared.patterns)
    if len(np.asarray(encoding.angle)) != n:
        raise ValueError(
            f"encoding has {len(np.asarray(encoding.angle))} patterns, prepared {n}: pass "
            "encoding=model.encode(prepared.patterns)."
        )
    symmetry = _plot._check_symmetry(symmetry)
    if background is None:
        bg = None
    else:
        bg = _plot._as_map(background, prepared, name="background")
    return encoding, bg, symmetry


def _latent_rows(encoding, index: int) -> list[tuple[str, str, str]]:
    """(name, value, ± std) as text: the angle in degrees (0.1°), the content latents (0.001)."""
    rows = [("angle", f"{math.degrees(float(encoding.angle[index])):+.1f}°",
             f"± {math.degrees(float(encoding.angle_std[index])):.1f}°")]
    z = np.asarray(encoding.z).reshape(len(encoding.angle), -1)
    z_std = np.asarray(encoding.z_std).reshape(z.shape)
    for k in range(z.shape[1]):
        rows.append((f"z{k + 1}", f"{z[index, k]:+.3f}", f"± {z_std[index, k]:.3f}"))
    return rows


def _latent_text(encoding, index: int) -> str:
    """Plain-text latents, one per line: 'angle +12.3° ± 1.2°'."""
    return "\n".join(f"{name:<5} {v} {s}" for name, v, s in _latent_rows(encoding, index))


def _draw_background(ax, prepared, encoding, background, symmetry, atoms):
    """The clickable/annotated map: ``background`` or the angle map (cyclic)."""
    if background is None:
        return _plot.scan_map(encoding.angle, prepared=prepared, ax=ax, cyclic=True,
                              symmetry=symmetry, atoms=atoms, title="angle latent")
    return _plot.scan_map(background, prepared=prepared, ax=ax, cmap="gray", atoms=atoms)


def _position_nm(prepared, iy: int, ix: int) -> tuple[float, float]:
    cal = prepared.calibration
    if cal is None:
        return float(iy), float(ix)
    sy, sx = cal.scan_steps_nm
    return (cal.scan_offset_nm[0] + iy * sy, cal.scan_offset_nm[1] + ix * sx)


def _check_position(prepared, iy, ix) -> tuple[int, int]:
    ny, nx = prepared.scan_shape
    if not (0 <= int(iy) < ny and 0 <= int(ix) < nx) or int(iy) != iy or int(ix) != ix:
        raise ValueError(
            f"Scan position ({iy}, {ix}) is outside the {ny} x {nx} scan; give (iy, ix) indices "
            f"with 0 <= iy < {ny} and 0 <= ix < {nx}."
        )
    return int(iy), int(ix)


# ----------------------------------------------------------------------------------------------
# The widget


def _make_explorer_class():
    w = _require_ipywidgets()

    class Explorer(w.VBox):
        """The explorer widget (an ``ipywidgets.VBox``); see :func:`explorer`.

        Attributes
        ----------
        iy, ix : ipywidgets.IntSlider
            Selected scan position (row, column).
        latents : ipywidgets.HTML
            Table of the latents at the selected position.
        map_view : ipywidgets widget
            The map (an ipympl canvas when clickable, else an ``Image``).
        pattern_image : ipywidgets.Image
            PNG of the pattern and its reconstruction.
        z_sliders : list of ipywidgets.FloatSlider
            Content latents of the decoder tab.
        angle_slider : ipywidgets.FloatSlider
            Decoder angle in degrees.
        decoded_image : ipywidgets.Image
            PNG of the decoded pattern.
        pattern, reconstruction, decoded : numpy.ndarray
            (ky, kx) arrays currently shown.
        """

        def __init__(self, model, prepared, *, encoding=None, background=None, symmetry=1,
                     atoms=None, clickable=None, dpi=WIDGET_DPI):
            encoding, bg, symmetry = _checked_inputs(model, prepared, encoding, background,
                                                     symmetry)
            self.model, self.prepared, self.encoding = model, prepared, encoding
            self._quiet = False
            self.symmetry, self.dpi = symmetry, dpi
            ny, nx = prepared.scan_shape
            cal = prepared.calibration
            self._extent = _plot.pattern_extent(np.asarray(prepared.patterns).shape[1:], cal)
            self._mrad = cal is not None

            # --- tab 1: scan position ------------------------------------------------------
            ipympl = _ipympl_canvas()
            if clickable and ipympl is None:
                raise ImportError(
                    "A clickable map needs ipympl: pip install ipympl (or use clickable=False "
                    "and the sliders)."
                )
            self.clickable = bool(ipympl is not None if clickable is None else clickable)
            fig = Figure(figsize=_plot._map_figsize(prepared.scan_shape, width_in=3.0,
                                                    extra_h=1.1), layout="constrained")
            self._map_fig = fig
            ax = fig.add_subplot()
            self._map_ax = _draw_background(ax, prepared, encoding, bg, symmetry, atoms)
            (self._marker,) = ax.plot([], [], marker="s", ms=9, mfc="none", mec=MARKER_COLOR,
                                      mew=2.0, ls="none")
            if self.clickable:
                canvas_cls, manager_cls = ipympl
                canvas = canvas_cls(fig)
                with warnings.catch_warnings():  # ipympl 0.10's toolbar vs. traitlets, harmless
                    warnings.filterwarnings("ignore", category=DeprecationWarning,
                                            message="Passing unrecognized arguments")
                    manager_cls(canvas, 0)
                canvas.header_visible = False
                canvas.footer_visible = False
                canvas.toolbar_visible = False
                canvas.resizable = False
                canvas.mpl_connect("button_press_event", self._on_click)
                self.map_view = canvas
            else:
                self.map_view = w.Image(format="png")
            slider = dict(continuous_update=False, style={"description_width": "5em"},
                          layout=w.Layout(width="95%"))
            self.iy = w.IntSlider(value=ny // 2, min=0, max=ny - 1, description="scan y",
                                  **slider)
            self.ix = w.IntSlider(value=nx // 2, min=0, max=nx - 1, description="scan x",
                                  **slider)
            self.latents = w.HTML()
            self.pattern_image = w.Image(format="png")
            self._pattern_fig = Figure(figsize=(5.0, 2.6), layout="constrained")
            pa, ra = self._pattern_fig.subplots(1, 2, sharex=True, sharey=True)
            self._pattern_axes = (pa, ra)
            hint = "click on the map or " if self.clickable else ""
            left = w.VBox([self.map_view, self.iy, self.ix,
                           w.HTML(f"<small>Choose a probe position: {hint}move the sliders."
                                  "</small>")],
                          layout=w.Layout(width="45%"))
            right = w.VBox([self.pattern_image, self.latents], layout=w.Layout(width="55%"))
            position_tab = w.HBox([left, right])

            # --- tab 2: decoder ----------------------------------------------------------------
            z = np.asarray(encoding.z).reshape(len(encoding.angle), -1)
            reach = max(3.0, float(np.ceil(np.abs(z).max()))) if z.size else 3.0
            fslider = dict(continuous_update=False, style={"description_width": "5em"},
                           layout=w.Layout(width="95%"), readout_format=".2f")
            self.z_sliders = [w.FloatSlider(value=0.0, min=-reach, max=reach, step=0.05,
                                            description=f"z{k + 1}", **fslider)
                              for k in range(z.shape[1])]
            fslider["readout_format"] = ".0f"
            self.angle_slider = w.FloatSlider(value=0.0, min=-180.0, max=180.0, step=1.0,
                                              description="angle (°)", **fslider)
            self.copy_button = w.Button(description="latents at scan position",
                                        tooltip="copy the latents of the selected scan position",
                                        icon="arrow-down", layout=w.Layout(width="auto"))
            self.copy_button.on_click(lambda _: self.copy_position_latents())
            self.decoded_image = w.Image(format="png")
            self._decoded_fig = Figure(figsize=(3.0, 2.8), layout="constrained")
            self._decoded_ax = self._decoded_fig.add_subplot()
            decoder_tab = w.HBox([
                w.VBox([*self.z_sliders, self.angle_slider, self.copy_button,
                        w.HTML("<small>The decoder renders the pattern these latents describe, "
                               "turned by the angle (counter-clockwise positive).</small>")],
                       layout=w.Layout(width="50%")),
                self.decoded_image,
            ])

            tabs = w.Tab(children=[position_tab, decoder_tab])
            tabs.set_title(0, "scan position")
            tabs.set_title(1, "decoder")
            super().__init__([tabs])
            self.tabs = tabs

            for s in (self.iy, self.ix):
                s.observe(lambda _: self._update_position(), names="value")
            for s in (*self.z_sliders, self.angle_slider):
                s.observe(lambda _: self._update_decoder(), names="value")
            self._update_position()
            self._update_decoder()

        # ------------------------------------------------------------------ actions
        @property
        def index(self) -> int:
            """Index of the selected pattern in ``prepared.patterns`` (row-major)."""
            return self.iy.value * self.prepared.scan_shape[1] + self.ix.value

        def select(self, iy: int, ix: int) -> None:
            """Move to scan position (iy, ix) (what a click or the sliders do)."""
            iy, ix = _check_position(self.prepared, iy, ix)
            if (iy, ix) == (self.iy.value, self.ix.value):
                return
            self._quiet = True  # one redraw for both sliders
            try:
                self.iy.value = iy
                self.ix.value = ix
            finally:
                self._quiet = False
            self._update_position()

        def copy_position_latents(self) -> None:
            """Set the decoder sliders to the latents and angle of the selected position."""
            i = self.index
            z = np.asarray(self.encoding.z).reshape(len(self.encoding.angle), -1)[i]
            for s, v in zip(self.z_sliders, z, strict=True):
                s.value = float(np.clip(v, s.min, s.max))
            self.angle_slider.value = float(np.clip(
                round(math.degrees(float(self.encoding.angle[i]))), -180, 180))

        def _on_click(self, event) -> None:
            if event.inaxes is not self._map_ax or event.xdata is None:
                return
            cal = self.prepared.calibration
            (sy, sx), (y0, x0) = ((1.0, 1.0), (0.0, 0.0)) if cal is None else (
                cal.scan_steps_nm, cal.scan_offset_nm)
            ny, nx = self.prepared.scan_shape
            iy = int(np.clip(round((event.ydata - y0) / sy), 0, ny - 1))
            ix = int(np.clip(round((event.xdata - x0) / sx), 0, nx - 1))
            self.select(iy, ix)

        # ------------------------------------------------------------------ drawing
        def _show_pattern(self, ax, data, title, vmin=None, vmax=None):
            ax.clear()
            ax.imshow(data, cmap="inferno", extent=self._extent, origin="upper",
                      interpolation="nearest", vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize="medium")
            if self._mrad:
                ax.set_xlabel("kx (mrad)")
            else:
                ax.set_xticks([])
                ax.set_yticks([])

        def _update_position(self) -> None:
            if self._quiet:
                return
            i = self.index
            iy, ix = self.iy.value, self.ix.value
            enc = self.encoding
            z = np.asarray(enc.z).reshape(len(enc.angle), -1)[i]
            t = None if getattr(enc, "translation", None) is None else enc.translation[i]
            self.pattern = np.asarray(self.prepared.patterns[i], dtype=float)
            self.reconstruction = np.asarray(
                self.model.decode(z, angle=float(enc.angle[i]), translation=t), dtype=float)
            pa, ra = self._pattern_axes
            # one colour scale for both, so that intensities compare
            lo = min(self.pattern.min(), self.reconstruction.min())
            hi = max(self.pattern.max(), self.reconstruction.max())
            self._show_pattern(pa, self.pattern, "pattern", lo, hi)
            self._show_pattern(ra, self.reconstruction, "reconstruction", lo, hi)
            if self._mrad:
                pa.set_ylabel("ky (mrad)")
            self.pattern_image.value = _png(self._pattern_fig, self.dpi)

            y, x = _position_nm(self.prepared, iy, ix)
            unit = "nm" if self.prepared.calibration is not None else "scan px"
            rows = "".join(
                f"<tr><td>{name}</td><td style='text-align:right'>{v}</td><td>{s}</td></tr>"
                for name, v, s in _latent_rows(enc, i))
            self.latents.value = (
                f"<b>position</b> ({iy}, {ix}): y = {y:.3g} {unit}, x = {x:.3g} {unit}"
                f"<table class='rrvae-latents'>{rows}</table>")
            self._marker.set_data([x], [y])
            if self.clickable:
                self.map_view.draw_idle()
            else:
                self.map_view.value = _png(self._map_fig, self.dpi)

        def _update_decoder(self) -> None:
            z = np.array([s.value for s in self.z_sliders], dtype=np.float32)
            self.decoded = np.asarray(
                self.model.decode(z, angle=math.radians(self.angle_slider.value)), dtype=float)
            self._show_pattern(self._decoded_ax, self.decoded, "decoded")
            if self._mrad:
                self._decoded_ax.set_ylabel("ky (mrad)")
            self.decoded_image.value = _png(self._decoded_fig, self.dpi)

    return Explorer


_EXPLORER_CLASS = None


def __getattr__(name):  # the class needs ipywidgets, which is imported only on use
    if name == "Explorer":
        return _explorer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _explorer_class():
    global _EXPLORER_CLASS
    if _EXPLORER_CLASS is None:
        _EXPLORER_CLASS = _make_explorer_class()
    return _EXPLORER_CLASS


def explorer(model, prepared, *, encoding=None, background=None, symmetry: int = 1, atoms=None,
             clickable: bool | None = None, position=None):
    """An interactive explorer of a trained model over the scan.

    Tab "scan position": click on the map (with ipympl) or move the sliders to a probe position;
    it shows the pattern there, its reconstruction and its latents (angle with its posterior std,
    content latents z with their std). Tab "decoder": sliders over the content latents and the
    angle show the decoded pattern.

    Parameters
    ----------
    model : RrVAE
        A trained model for ``prepared.patterns``.
    prepared : Prepared
        Patterns with their scan grid and calibration (maps in nm, patterns in mrad).
    encoding : Encoding, optional
        ``model.encode(prepared.patterns)``; computed when not given.
    background : array-like, optional
        (scan y, scan x) or (N,) map to click on (e.g. a HAADF image or a content latent);
        default: the angle map (cyclic, over [-180/n, 180/n) degrees).
    symmetry : int
        n-fold symmetry of the angles (for the angle map).
    atoms : (N, 2) array or GroundTruth, optional
        Atom positions (y, x) in nm drawn on the map.
    clickable : bool, optional
        Use a clickable ipympl map; default: when ipympl is installed.
    position : (int, int), optional
        Initial scan position (iy, ix); default the centre of the scan.

    Returns
    -------
    Explorer
        An ``ipywidgets.VBox``; display it as the last expression of a cell. Follow it with
        :func:`explorer_figure` for the HTML book.
    """
    ex = _explorer_class()(model, prepared, encoding=encoding, background=background,
                           symmetry=symmetry, atoms=atoms, clickable=clickable)
    if position is not None:
        ex.select(*position)
    return ex


# ----------------------------------------------------------------------------------------------
# The static stand-in


def explorer_figure(model, prepared, positions, *, encoding=None, background=None,
                    symmetry: int = 1, atoms=None, size_in: float = 2.2):
    """What :func:`explorer` shows, for a few scan positions side by side (for the HTML book).

    The top row is the map (``background`` or the angle map) with the positions marked 1, 2, ...;
    below it one column per position: the pattern, its reconstruction and, underneath, its latents
    (angle and content latents with their posterior standard deviations). The decoder tab's static
    counterpart is :func:`rrvae_nb.plot.manifold_mosaic`.

    Parameters
    ----------
    model, prepared, encoding, background, symmetry, atoms
        As in :func:`explorer`.
    positions : sequence of (int, int)
        Scan positions (iy, ix).
    size_in : float
        Width of one column in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    encoding, bg, symmetry = _checked_inputs(model, prepared, encoding, background, symmetry)
    pos = [tuple(p) for p in positions]
    if not pos or any(len(p) != 2 for p in pos):
        raise ValueError(
            f"positions must be a non-empty list of scan positions [(iy, ix), ...]; got "
            f"{positions!r}."
        )
    pos = [_check_position(prepared, iy, ix) for iy, ix in pos]
    k = len(pos)
    ny, nx = prepared.scan_shape
    n_lat = 1 + np.asarray(encoding.z).reshape(len(encoding.angle), -1).shape[1]
    map_h = min(3.0, max(2.2, size_in * k * 0.6))
    width = max(k * size_in, map_h * nx / ny + 1.6)
    text_h = 0.2 * n_lat + 0.35
    fig = plt.figure(figsize=(width, map_h + 2 * size_in + text_h + 0.5), layout="constrained")
    outer = fig.add_gridspec(2, 1, height_ratios=[map_h, 2 * size_in + text_h])
    map_ax = fig.add_subplot(outer[0])
    _draw_background(map_ax, prepared, encoding, bg, symmetry, atoms)
    grid = outer[1].subgridspec(2, k)
    cal = prepared.calibration
    extent = _plot.pattern_extent(np.asarray(prepared.patterns).shape[1:], cal)
    idx = [iy * nx + ix for iy, ix in pos]
    z = np.asarray(encoding.z).reshape(len(encoding.angle), -1)
    for c, ((iy, ix), i) in enumerate(zip(pos, idx, strict=True)):
        y, x = _position_nm(prepared, iy, ix)
        map_ax.plot([x], [y], marker="s", ms=9, mfc="none", mec=MARKER_COLOR, mew=2.0)
        map_ax.annotate(str(c + 1), (x, y), xytext=(6, 6), textcoords="offset points",
                        color=MARKER_COLOR, fontweight="bold",
                        path_effects=_outline())
        t = None if getattr(encoding, "translation", None) is None else encoding.translation[i]
        recon = model.decode(z[i], angle=float(encoding.angle[i]), translation=t)
        pattern = np.asarray(prepared.patterns[i], dtype=float)
        lo, hi = float(min(pattern.min(), recon.min())), float(max(pattern.max(), recon.max()))
        for r, (data, name) in enumerate(((pattern, "pattern"), (recon, "reconstruction"))):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(data, cmap="inferno", vmin=lo, vmax=hi, extent=extent, origin="upper",
                      interpolation="nearest")
            ax.tick_params(labelsize="x-small")
            if cal is None:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{c + 1}: ({iy}, {ix})", fontsize="medium")
            if c == 0:
                ax.set_ylabel(name + ("\nky (mrad)" if cal is not None else ""),
                              fontsize="small")
            if r == 1:
                ax.set_xlabel(_latent_text(encoding, i), fontsize="small",
                              family="monospace", loc="left")
    return fig


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.5, foreground="black")]
