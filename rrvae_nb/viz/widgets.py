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

import numpy as np

from . import plot as _plot
from ._explorer_common import (  # noqa: F401  (re-exported: the names widgets always had)
    BACKGROUND_LABEL,
    BACKGROUND_TITLE,
    MARKER_COLOR,
    WIDGET_DPI,
    _check_position,
    _checked_inputs,
    _draw_background,
    _ipympl_canvas,
    _latent_rows,
    _latent_text,
    _png,
    _position_nm,
    _require_ipywidgets,
)

# ``Explorer`` (the widget class, in rrvae_nb._explorer) is imported on first use: it needs
# ipywidgets.
__all__ = ["explorer", "explorer_figure"]


def __getattr__(name):  # the class needs ipywidgets, which is imported only on use
    if name == "Explorer":
        return _explorer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _explorer_class():
    """The :class:`rrvae_nb._explorer.Explorer` class (imports ipywidgets on first use)."""
    _require_ipywidgets()
    from ._explorer import Explorer

    return Explorer


def explorer(model, prepared, *, encoding=None, background=None, symmetry: int = 1, atoms=None,
             clickable: bool | None = None, position=None, map_title: str | None = None,
             map_label: str | None = None):
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
    map_title, map_label : str, optional
        Title of the map and label of its colour bar (as :func:`rrvae_nb.plot.scan_map`'s
        ``title`` and ``label``); default "angle latent (mod 360/n°)" and "angle (°)" for the
        angle map, "background" and "value" for a ``background``.

    Returns
    -------
    Explorer
        An ``ipywidgets.VBox`` that fits a notebook column (its rows wrap, the map scales
        down); display it as the last expression of a cell. Follow it with
        :func:`explorer_figure` for the HTML book.
    """
    ex = _explorer_class()(model, prepared, encoding=encoding, background=background,
                           symmetry=symmetry, atoms=atoms, clickable=clickable,
                           map_title=map_title, map_label=map_label)
    if position is not None:
        ex.select(*position)
    return ex


# ----------------------------------------------------------------------------------------------
# The static stand-in


def explorer_figure(model, prepared, positions, *, encoding=None, background=None,
                    symmetry: int = 1, atoms=None, size_in: float = 2.2,
                    map_title: str | None = None, map_label: str | None = None):
    """What :func:`explorer` shows, for a few scan positions side by side (for the HTML book).

    The top row is the map (``background`` or the angle map) with the positions marked 1, 2, ...;
    below it one column per position: the pattern, its reconstruction and, underneath, its latents
    (angle and content latents with their posterior standard deviations). The decoder tab's static
    counterpart is :func:`rrvae_nb.plot.manifold_mosaic`.

    Parameters
    ----------
    model, prepared, encoding, background, symmetry, atoms, map_title, map_label
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
    _draw_background(map_ax, prepared, encoding, bg, symmetry, atoms, title=map_title,
                     label=map_label)
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
