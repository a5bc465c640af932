"""The explorer widget of :func:`rrvae_nb.widgets.explorer`, a class at module level.

This module imports ipywidgets at the top; :mod:`rrvae_nb.widgets` imports it only when an
explorer is made, so that ``import rrvae_nb.widgets`` (and its static
:func:`~rrvae_nb.widgets.explorer_figure`) works without ipywidgets.

Layout: two tabs. "scan position" holds the map (left) and the pattern, its reconstruction and
the latents (right); "decoder" the latent sliders and the decoded pattern. Each row wraps when
the notebook column is narrow, and the map scales down with its column (no fixed pixel width).
"""

from __future__ import annotations

import math
import warnings

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure

from . import plot as _plot
from ._explorer_common import (
    MARKER_COLOR,
    WIDGET_DPI,
    _check_position,
    _checked_inputs,
    _draw_background,
    _ipympl_canvas,
    _latent_rows,
    _png,
    _position_nm,
)

__all__ = ["Explorer"]

#: Width of the map figure in inches (map and colour bar); at WIDGET_DPI it is 320 pixels, and
#: the PNG map shrinks further with a narrow column.
MAP_WIDTH_IN = 4.0


def _fit(natural_px: int) -> w.Layout:
    """A layout that fills its column up to the image's own width, keeping the aspect ratio."""
    return w.Layout(width="100%", max_width=f"{natural_px}px", height="auto")


class Explorer(w.VBox):
    """The explorer widget (an ``ipywidgets.VBox``); see :func:`rrvae_nb.widgets.explorer`.

    Attributes
    ----------
    iy, ix : ipywidgets.IntSlider
        Selected scan position (row, column).
    latents : ipywidgets.HTML
        Table of the latents at the selected position.
    map_view : ipywidgets widget
        The map (an ipympl canvas when clickable, else an ``Image``), with a title and a
        colour-bar label.
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
                 atoms=None, clickable=None, dpi=WIDGET_DPI, map_title=None, map_label=None):
        encoding, bg, symmetry = _checked_inputs(model, prepared, encoding, background, symmetry)
        self.model, self.prepared, self.encoding = model, prepared, encoding
        self._quiet = False
        self.symmetry, self.dpi = symmetry, dpi
        cal = prepared.calibration
        self._extent = _plot.pattern_extent(np.asarray(prepared.patterns).shape[1:], cal)
        self._mrad = cal is not None
        self._build_map(bg, atoms, clickable, map_title, map_label)
        tabs = w.Tab(children=[self._position_tab(), self._decoder_tab()])
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

    # ------------------------------------------------------------------ building
    def _build_map(self, bg, atoms, clickable, title, label) -> None:
        """The map figure (titled, colour bar labelled) and its view: ipympl canvas or PNG."""
        ipympl = _ipympl_canvas()
        if clickable and ipympl is None:
            raise ImportError(
                "A clickable map needs ipympl: pip install ipympl (or use clickable=False "
                "and the sliders)."
            )
        self.clickable = bool(ipympl is not None if clickable is None else clickable)
        width, height = _plot._map_figsize(self.prepared.scan_shape, width_in=MAP_WIDTH_IN - 1.5,
                                           extra_h=1.4)
        fig = Figure(figsize=(width, height), dpi=self.dpi, layout="constrained")
        self._map_fig = fig
        ax = fig.add_subplot()
        self._map_ax = _draw_background(ax, self.prepared, self.encoding, bg, self.symmetry,
                                        atoms, title=title, label=label)
        (self._marker,) = ax.plot([], [], marker="s", ms=9, mfc="none", mec=MARKER_COLOR,
                                  mew=2.0, ls="none")
        if not self.clickable:
            self.map_view = w.Image(format="png", layout=_fit(round(width * self.dpi)))
            return
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
        canvas.layout = w.Layout(max_width="100%", overflow="auto")
        canvas.mpl_connect("button_press_event", self._on_click)
        self.map_view = canvas

    def _position_tab(self) -> w.Box:
        """Tab 1: the map with the position sliders, beside the patterns and the latents."""
        ny, nx = self.prepared.scan_shape
        slider = dict(continuous_update=False, style={"description_width": "5em"},
                      layout=w.Layout(width="95%"))
        self.iy = w.IntSlider(value=ny // 2, min=0, max=ny - 1, description="scan y", **slider)
        self.ix = w.IntSlider(value=nx // 2, min=0, max=nx - 1, description="scan x", **slider)
        self.latents = w.HTML()
        pattern_size = (5.0, 2.6)
        self.pattern_image = w.Image(format="png", layout=_fit(round(pattern_size[0] * self.dpi)))
        self._pattern_fig = Figure(figsize=pattern_size, layout="constrained")
        pa, ra = self._pattern_fig.subplots(1, 2, sharex=True, sharey=True)
        self._pattern_axes = (pa, ra)
        hint = "click on the map or " if self.clickable else ""
        left = w.VBox([self.map_view, self.iy, self.ix,
                       w.HTML(f"<small>Choose a probe position: {hint}move the sliders.</small>")],
                      layout=w.Layout(flex="1 1 260px", min_width="0"))
        right = w.VBox([self.pattern_image, self.latents],
                       layout=w.Layout(flex="1 1 300px", min_width="0"))
        return w.HBox([left, right], layout=w.Layout(flex_flow="row wrap", width="100%"))

    def _decoder_tab(self) -> w.Box:
        """Tab 2: sliders over the content latents and the angle, and the decoded pattern."""
        z = np.asarray(self.encoding.z).reshape(len(self.encoding.angle), -1)
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
        decoded_size = (3.0, 2.8)
        self.decoded_image = w.Image(format="png", layout=_fit(round(decoded_size[0] * self.dpi)))
        self._decoded_fig = Figure(figsize=decoded_size, layout="constrained")
        self._decoded_ax = self._decoded_fig.add_subplot()
        controls = w.VBox([*self.z_sliders, self.angle_slider, self.copy_button,
                           w.HTML("<small>The decoder renders the pattern these latents "
                                  "describe, turned by the angle (counter-clockwise "
                                  "positive).</small>")],
                          layout=w.Layout(flex="1 1 260px", min_width="0"))
        image = w.Box([self.decoded_image], layout=w.Layout(flex="1 1 200px", min_width="0"))
        return w.HBox([controls, image], layout=w.Layout(flex_flow="row wrap", width="100%"))

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
