"""What the explorer widget and its static stand-in share: input checks, texts, the map, PNGs.

Kept apart from :mod:`rrvae_nb.widgets` (the public functions) and :mod:`rrvae_nb._explorer`
(the widget class, which needs ipywidgets) so that neither imports the other's module at the
top and the static :func:`rrvae_nb.widgets.explorer_figure` works without ipywidgets.
"""

from __future__ import annotations

import io
import math
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import plot as _plot

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


#: Title and colour-bar label of a background map given without them.
BACKGROUND_TITLE, BACKGROUND_LABEL = "background", "value"


def _draw_background(ax, prepared, encoding, background, symmetry, atoms, *, title=None,
                     label=None):
    """The clickable/annotated map, titled and with a labelled colour bar: ``background`` or
    the angle map (cyclic, in degrees over one symmetry period)."""
    if background is None:
        return _plot.scan_map(
            encoding.angle, prepared=prepared, ax=ax, cyclic=True, symmetry=symmetry,
            atoms=atoms, title=f"angle latent (mod {360 / symmetry:.3g}°)" if title is None
            else title, label="angle (°)" if label is None else label)
    return _plot.scan_map(background, prepared=prepared, ax=ax, cmap="gray", atoms=atoms,
                          title=BACKGROUND_TITLE if title is None else title,
                          label=BACKGROUND_LABEL if label is None else label)


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
