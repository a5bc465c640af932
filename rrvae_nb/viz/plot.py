"""Figures of the book: diffraction patterns, maps over the scan, latent spaces, training.

Every function puts calibrated axes on its figure and returns the matplotlib ``Figure`` (or the
``Axes`` where stated); none calls ``plt.show()``.

Conventions
-----------
* **Scan maps** are arrays (scan y, scan x) drawn with ``imshow(origin="upper")``: x to the
  right, y *down* as in the data. Axes are in nm: pixel (i, j) is centred on
  ``scan_offset_nm + (i, j) * scan_steps_nm`` of the :class:`~rrvae_nb.signals.Calibration`
  (one step per axis, so rectangular scan pixels are drawn to scale), and the image spans
  ``scan x * x step`` by ``scan y * y step``. Without a calibration the
  axes are in scan pixels.
* **Diffraction patterns** (N, ky, kx) are drawn the same way with axes in mrad (pixel (0, 0) at
  ``k_offset_mrad``), or without ticks when no calibration is given.
* **Angles** are in radians, positive = counter-clockwise on screen (:mod:`rrvae_nb.rotate`). A
  pattern with n-fold symmetry has an angle defined modulo 2 pi / n, so angle maps use the cyclic
  colormap ``"twilight"`` over [-pi/n, pi/n), labelled in degrees.
* **Atoms** are (N, 2) positions (y, x) in nm in the scan frame, as in
  :class:`rrvae_nb.simulate.GroundTruth` (which may be passed directly).

The figures are made with ``matplotlib.pyplot``, so in a notebook they appear on their own at the
end of the cell; assign the result (``fig = ...``) or end the line with ``;`` to avoid a second
copy.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors
from matplotlib.ticker import FixedLocator, FuncFormatter

from ..model.rotate import wrap_angle

__all__ = [
    "show_patterns",
    "scan_map",
    "latent_maps",
    "manifold_mosaic",
    "angle_histogram",
    "com_vectors",
    "training_curves",
    "reconstructions",
]

#: Colormap of angle maps (cyclic: -180 and +180 degrees have the same colour).
CYCLIC_CMAP = "twilight"
#: Colour of atoms drawn over maps, and of defects (dopants, vacancies).
ATOM_COLOR = "white"
DEFECT_COLOR = "#ff3b30"
SCALES = ("linear", "sqrt", "log")


# ----------------------------------------------------------------------------------------------
# Calibration and extents


def _resolve_calibration(calibration, prepared=None):
    """A Calibration (or None) from a Calibration, a Prepared, a hyperspy signal or ``prepared``."""
    if calibration is None and prepared is not None:
        return getattr(prepared, "calibration", None)
    if calibration is None:
        return None
    if hasattr(calibration, "scan_steps_nm") and hasattr(calibration, "k_steps_mrad"):
        return calibration
    if hasattr(calibration, "axes_manager"):  # a calibrated hyperspy signal
        from ..stem.signals import calibration_of

        return calibration_of(calibration)
    if hasattr(calibration, "patterns") and hasattr(calibration, "calibration"):  # a Prepared
        return calibration.calibration
    raise ValueError(
        f"calibration must be a rrvae_nb.signals.Calibration (or a Prepared or a calibrated "
        f"hyperspy signal); got {type(calibration).__name__}. Build one with "
        "Calibration(scan_step_nm=..., k_step_mrad=...) or read it with calibration_of(signal)."
    )


def scan_extent(shape, calibration=None) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) of a (scan y, scan x) map, in nm.

    Pixel centres sit on the probe positions ``offset + index * step``; without a calibration
    the unit is one scan pixel and the first pixel is centred on 0.
    """
    ny, nx = int(shape[0]), int(shape[1])
    (sy, sx), (y0, x0) = ((1.0, 1.0), (0.0, 0.0)) if calibration is None else (
        calibration.scan_steps_nm, calibration.scan_offset_nm)
    return (x0 - sx / 2, x0 + (nx - 0.5) * sx, y0 + (ny - 0.5) * sy, y0 - sy / 2)


def pattern_extent(shape, calibration=None) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) of an (ky, kx) pattern, in mrad.

    Pixel (0, 0) is centred on ``calibration.k_offset_mrad``; without a calibration the unit is
    one diffraction pixel.
    """
    nky, nkx = int(shape[0]), int(shape[1])
    (sy, sx), (k0y, k0x) = ((1.0, 1.0), (0.0, 0.0)) if calibration is None else (
        calibration.k_steps_mrad, calibration.k_offset_mrad)
    return (k0x - sx / 2, k0x + (nkx - 0.5) * sx, k0y + (nky - 0.5) * sy, k0y - sy / 2)


def _scan_labels(ax, calibration) -> None:
    unit = "scan px" if calibration is None else "nm"
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")


# ----------------------------------------------------------------------------------------------
# Small helpers


def _map_figsize(shape, width_in: float = 3.2, extra_w: float = 1.5, extra_h: float = 1.0):
    """Figure size whose axes box matches a (scan y, scan x) map, so the colour bar fits it."""
    ny, nx = shape
    height = min(width_in * ny / nx, 2.2 * width_in)
    return (height * nx / ny + extra_w, height + extra_h)


def _new_axes(ax, figsize, **kwargs):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained", **kwargs)
    return fig, ax


def _as_map(values, prepared=None, name: str = "values") -> np.ndarray:
    """Values as a (scan y, scan x) float array."""
    v = np.asarray(values)
    if v.ndim == 1:
        if prepared is None:
            raise ValueError(
                f"{name} is flat, shape {v.shape}: pass prepared=<the Prepared it came from> to "
                "put it on the scan grid, or reshape it to (scan y, scan x) first."
            )
        v = prepared.to_map(v)
    if v.ndim != 2:
        raise ValueError(
            f"{name} must be a map (scan y, scan x) or flat (N,) with prepared=...; got shape "
            f"{v.shape}. For several values per position pick one, e.g. encoding.z[:, 0]."
        )
    if prepared is not None and getattr(prepared, "scan_shape", None) is not None:
        if tuple(v.shape) != tuple(prepared.scan_shape):
            raise ValueError(
                f"{name} has shape {v.shape} but the scan is {tuple(prepared.scan_shape)} "
                "(scan y, scan x); pass values from the same Prepared."
            )
    if v.size == 0:
        raise ValueError(f"{name} is empty (shape {v.shape}); nothing to draw.")
    if np.issubdtype(v.dtype, np.complexfloating) or not (
        np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_
    ):
        raise ValueError(f"{name} must be real numbers; got dtype {v.dtype}.")
    return v.astype(float)


def _stack_and_calibration(patterns, calibration):
    """The (N, ky, kx) stack of ``patterns`` and its calibration: the one given, else the one a
    ``Prepared`` result carries, else None."""
    if calibration is None and hasattr(patterns, "calibration"):
        calibration = patterns.calibration
    return _as_stack(patterns), _resolve_calibration(calibration)


def _as_stack(patterns, name: str = "patterns") -> np.ndarray:
    """Patterns as a float (N, ky, kx) array; a single (ky, kx) pattern becomes N = 1."""
    x = patterns.patterns if hasattr(patterns, "patterns") else patterns
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4:  # (scan y, scan x, ky, kx)
        x = x.reshape((-1,) + x.shape[-2:])
    if x.ndim != 3:
        raise ValueError(
            f"{name} must have shape (N, ky, kx) (or one pattern (ky, kx)); got {x.shape}."
        )
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one pattern.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} is complex; pass intensities (abs(wave) ** 2).")
    x = x.astype(float)
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{name} contains NaN or infinite values; replace them first, e.g. "
            "np.nan_to_num(patterns)."
        )
    return x


def _intensity_norm(data: np.ndarray, scale: str, vmin=None, vmax=None) -> colors.Normalize:
    """Colour normalisation of intensities for ``scale`` in {"linear", "sqrt", "log"}."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}.")
    lo = float(np.min(data)) if vmin is None else float(vmin)
    hi = float(np.max(data)) if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1.0
    if scale == "linear":
        return colors.Normalize(lo, hi)
    if scale == "sqrt":
        # negative values (mean-subtracted data) are clipped to the bottom colour
        return colors.PowerNorm(0.5, vmin=max(lo, 0.0), vmax=max(hi, 1e-12))
    # symmetric log: zeros and negative values are allowed, linear within 1e-3 of the peak
    peak = max(abs(lo), abs(hi))
    return colors.SymLogNorm(linthresh=1e-3 * peak, vmin=lo, vmax=hi, base=10)


def _atoms_and_defects(atoms, defects):
    """(positions (N, 2), defect mask (N,) or None, extra defect positions (M, 2) or None)."""
    if atoms is None and defects is None:
        return None, None, None
    vacancies = None
    if atoms is not None and hasattr(atoms, "positions_nm"):  # a GroundTruth
        if defects is None:
            defects = np.asarray(atoms.is_defect, dtype=bool)
        vac = np.asarray(getattr(atoms, "vacancies_nm", np.zeros((0, 2))), dtype=float)
        vacancies = vac.reshape(-1, 2) if vac.size else None
        atoms = atoms.positions_nm
    pos = None
    if atoms is not None:
        pos = np.asarray(atoms, dtype=float)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ValueError(
                f"atoms must be (N, 2) positions (y, x) in nm; got shape {pos.shape}."
            )
    mask = extra = None
    if defects is not None:
        d = np.asarray(defects)
        if d.dtype == np.bool_:
            if pos is None or d.shape != (len(pos),):
                raise ValueError(
                    "defects as a boolean mask needs atoms=... of the same length; got mask shape "
                    f"{d.shape} for {0 if pos is None else len(pos)} atoms. Or pass defects as "
                    "(M, 2) positions (y, x) in nm."
                )
            mask = d
        else:
            d = d.astype(float)
            if d.ndim != 2 or d.shape[1] != 2:
                raise ValueError(
                    "defects must be a boolean mask over atoms or (M, 2) positions (y, x) in nm; "
                    f"got shape {d.shape}."
                )
            extra = d
    if vacancies is not None:
        extra = vacancies if extra is None else np.concatenate([extra, vacancies])
    return pos, mask, extra


def _draw_atoms(ax, atoms, defects, *, size: float = 28.0) -> None:
    """Draw atoms as open circles and defects in another colour, keeping the axis limits."""
    pos, mask, extra = _atoms_and_defects(atoms, defects)
    if pos is None and extra is None:
        return
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    if pos is not None and len(pos):
        plain = pos if mask is None else pos[~mask]
        # a white ring on a thin dark ring reads on light and dark colours alike
        ax.scatter(plain[:, 1], plain[:, 0], s=size, facecolors="none", edgecolors="black",
                   linewidths=2.0, alpha=0.6)
        ax.scatter(plain[:, 1], plain[:, 0], s=size, facecolors="none", edgecolors=ATOM_COLOR,
                   linewidths=0.9, label="atoms")
        if mask is not None and mask.any():
            ax.scatter(pos[mask, 1], pos[mask, 0], s=size * 1.6, facecolors="none",
                       edgecolors=DEFECT_COLOR, linewidths=1.6, label="defects")
    if extra is not None and len(extra):
        ax.scatter(extra[:, 1], extra[:, 0], s=size * 1.6, marker="X", c=DEFECT_COLOR,
                   edgecolors="black", linewidths=0.5, label="defects")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def _colorbar(ax, mappable, label: str = ""):
    """A colour bar right of ``ax`` (works with constrained layout)."""
    cb = ax.figure.colorbar(mappable, ax=ax, fraction=0.05, pad=0.03, aspect=18)
    cb.set_label(label)
    return cb


def _angle_ticks(cb, symmetry: int, half_turn_deg: float | None = None) -> None:
    """Put degree ticks on an angle colour bar whose data are radians."""
    half = 180.0 / symmetry if half_turn_deg is None else half_turn_deg
    ticks = np.radians(np.linspace(-half, half, 5))
    cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{math.degrees(v):.3g}°"))


def _check_symmetry(symmetry) -> int:
    if isinstance(symmetry, bool) or int(symmetry) != symmetry or symmetry < 1:
        raise ValueError(f"symmetry must be a positive integer (n-fold); got {symmetry!r}.")
    return int(symmetry)


# ----------------------------------------------------------------------------------------------
# Patterns


def show_patterns(
    patterns,
    *,
    calibration=None,
    ncols: int = 6,
    titles=None,
    scale: str = "linear",
    cmap: str = "inferno",
    size_in: float = 1.8,
    same_scale: bool = False,
    colorbar: bool = False,
):
    """A grid of diffraction patterns.

    Parameters
    ----------
    patterns : array-like or Prepared
        (N, ky, kx) patterns (a single (ky, kx) pattern or (scan y, scan x, ky, kx) also work).
    calibration : Calibration, optional
        Gives axes in mrad (pixel (0, 0) at ``k_offset_mrad``); without it the axes carry no ticks.
        Taken from ``patterns`` when a Prepared is given.
    ncols : int
        Panels per row.
    titles : sequence of str, optional
        One title per pattern.
    scale : {"linear", "sqrt", "log"}
        Colour scale of the intensities (``"log"`` is a symmetric log, so zeros are allowed).
    cmap : str
        Colormap.
    size_in : float
        Side of one panel in inches.
    same_scale : bool
        One colour range for all panels (default: each panel uses its own range).
    colorbar : bool
        Add one colour bar (most useful with ``same_scale=True``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    x, cal = _stack_and_calibration(patterns, calibration)
    n = len(x)
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) != n:
            raise ValueError(f"titles has {len(titles)} entries for {n} patterns; give one each.")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols!r}.")
    ncols = min(int(ncols), n)
    nrows = math.ceil(n / ncols)
    extra_w = 0.9 if cal is not None else 0.1
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size_in + extra_w + (0.6 if colorbar else 0),
                               nrows * size_in + (0.3 if titles is not None else 0) + 0.2
                               + (0.4 if cal is not None else 0)),
        sharex=True, sharey=True, squeeze=False, layout="constrained",
    )
    extent = pattern_extent(x.shape[1:], cal)
    shared = _intensity_norm(x, scale) if same_scale else None
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        norm = shared if shared is not None else _intensity_norm(x[i], scale)
        im = ax.imshow(x[i], cmap=cmap, norm=norm, extent=extent, origin="upper",
                       interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize="small")
        if cal is None:
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.tick_params(labelsize="x-small")
    if cal is not None:
        for ax in axes[-1, :]:
            ax.set_xlabel("kx (mrad)", fontsize="small")
        for ax in axes[:, 0]:
            ax.set_ylabel("ky (mrad)", fontsize="small")
    if colorbar and im is not None:
        fig.colorbar(im, ax=axes, shrink=0.9, label="intensity")
    return fig


# ----------------------------------------------------------------------------------------------
# Maps over the scan


def scan_map(
    values,
    *,
    calibration=None,
    prepared=None,
    ax=None,
    title: str = "",
    label: str = "",
    cmap: str = "viridis",
    cyclic: bool = False,
    symmetry: int = 1,
    atoms=None,
    defects=None,
    vmin=None,
    vmax=None,
    colorbar: bool = True,
):
    """A map over the scan with a colour bar, axes in nm.

    Parameters
    ----------
    values : array-like
        (scan y, scan x), or flat (N,) per-pattern values together with ``prepared``.
    calibration : Calibration, optional
        Scan step and offset (nm); default ``prepared.calibration``; without either the axes are
        in scan pixels.
    prepared : Prepared, optional
        The :class:`rrvae_nb.preprocess.Prepared` the values belong to.
    ax : matplotlib Axes, optional
        Where to draw; a new figure otherwise.
    title, label : str
        Axes title and colour-bar label.
    cmap : str
        Colormap (ignored when ``cyclic``).
    cyclic : bool
        ``values`` are angles in rad: wrapped into [-pi/n, pi/n) (n = ``symmetry``) and drawn with
        the cyclic colormap "twilight" over exactly that range; the colour bar is labelled in
        degrees.
    symmetry : int
        n-fold symmetry of the angles (only with ``cyclic``).
    atoms : (N, 2) array or GroundTruth, optional
        Atom positions (y, x) in nm, drawn as small open circles. A GroundTruth also gives its
        defect flags and vacancies unless ``defects`` is given.
    defects : (N,) bool or (M, 2) array, optional
        Mask over ``atoms`` marking defects, or defect positions (y, x) in nm; drawn in red.
    vmin, vmax : float, optional
        Colour range (default: the data range; for ``cyclic``: -pi/n, pi/n).
    colorbar : bool
        Draw the colour bar.

    Returns
    -------
    matplotlib.axes.Axes
    """
    cal = _resolve_calibration(calibration, prepared)
    v = _as_map(values, prepared)
    fig, ax = _new_axes(ax, _map_figsize(v.shape, extra_h=1.0 + 0.3 * bool(title)))
    extent = scan_extent(v.shape, cal)
    if cyclic:
        n = _check_symmetry(symmetry)
        v = wrap_angle(v, n)
        lo = -math.pi / n if vmin is None else vmin
        hi = math.pi / n if vmax is None else vmax
        cmap = CYCLIC_CMAP
    else:
        lo, hi = vmin, vmax
    im = ax.imshow(v, cmap=cmap, vmin=lo, vmax=hi, extent=extent, origin="upper",
                   interpolation="nearest")
    _scan_labels(ax, cal)
    if title:
        ax.set_title(title)
    _draw_atoms(ax, atoms, defects)
    if colorbar:
        cb = _colorbar(ax, im, label)
        if cyclic:
            _angle_ticks(cb, n)
    return ax


def latent_maps(encoding, prepared, *, symmetry: int = 1, atoms=None, defects=None,
                title: str = "", panel_in: float = 3.3):
    """One row of maps: the angle latent (cyclic, degrees) and each content latent.

    Parameters
    ----------
    encoding : Encoding
        From ``model.encode(prepared.patterns)``: angle (N,) in rad and z (N, latent_dim).
    prepared : Prepared
        Gives the scan grid and its calibration (nm).
    symmetry : int
        n-fold symmetry: the angle map spans [-180/n, 180/n) degrees.
    atoms, defects
        As in :func:`scan_map`, drawn on every panel.
    title : str
        Figure title.
    panel_in : float
        Width of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    angle = np.asarray(encoding.angle)
    z = np.asarray(encoding.z)
    if z.ndim == 1:
        z = z[:, None]
    d = z.shape[1]
    ny, nx = prepared.scan_shape if prepared.scan_shape is not None else (1, 1)
    img_h = min((panel_in - 1.1) * ny / nx, 1.6 * panel_in)
    fig, axes = plt.subplots(1, 1 + d, figsize=(panel_in * (1 + d) + 0.4,
                                                img_h + 1.0 + (0.35 if title else 0)),
                             squeeze=False, layout="constrained")
    axes = axes[0]
    n = _check_symmetry(symmetry)
    scan_map(angle, prepared=prepared, ax=axes[0], cyclic=True, symmetry=n, atoms=atoms,
             defects=defects, title=f"angle (mod {360 / n:.3g}°)")
    for i in range(d):
        scan_map(z[:, i], prepared=prepared, ax=axes[1 + i], atoms=atoms, defects=defects,
                 title=f"content latent z{i + 1}")
    for ax in axes[1:]:
        ax.set_ylabel("")
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Latent space


def manifold_mosaic(model, *, n: int = 8, extent: float = 2.0, dims=(0, 1), angle: float = 0.0,
                    ax=None, cmap: str = "inferno"):
    """The decoded latent manifold as a mosaic with the latent values on the axes.

    Tile (row i, column j) is ``model.manifold(...)[i, j]``: the pattern decoded at pose
    ``angle`` with content latent ``dims[0]`` on the horizontal axis and ``dims[1]`` increasing
    upwards (other latents 0). Ticks sit at the tile centres and read the latent values. All tiles
    share one colour scale.

    Parameters
    ----------
    model : RrVAE
    n : int
        Tiles per axis (>= 2).
    extent : float
        Latents span [-extent, extent] (prior standard deviations).
    dims : (int, int)
        0-based indices of the latents along x and y; labels are 1-based (z1, z2, ...).
    angle : float
        Pose in rad at which every tile is rendered.
    ax : matplotlib Axes, optional
    cmap : str

    Returns
    -------
    matplotlib.axes.Axes
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2 (tiles per axis); got {n!r}.")
    if not extent > 0:
        raise ValueError(f"extent must be > 0 (latent range); got {extent!r}.")
    n = int(n)
    images = np.asarray(model.manifold(n=n, extent=extent, dims=dims, angle=angle))
    values = np.linspace(-extent, extent, n)
    step = values[1] - values[0]
    one_d = images.ndim == 3
    if one_d:  # latent_dim == 1: one row along that latent
        images = images[None]
    rows, cols, h, w = images.shape
    mosaic = images.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    lo, hi = -extent - step / 2, extent + step / 2
    if one_d:
        ext = (lo, hi, -step / 2, step / 2)
    else:
        ext = (lo, hi, lo, hi)
    fig, ax = _new_axes(ax, (5.2, 5.2 if not one_d else 1.6))
    ax.imshow(mosaic, cmap=cmap, extent=ext, origin="upper", interpolation="nearest")
    for b in values[:-1] + step / 2:  # thin separators between tiles
        ax.axvline(b, color="white", lw=0.6)
        if not one_d:
            ax.axhline(b, color="white", lw=0.6)
    labels = [f"{v:.3g}" for v in values]
    ax.set_xticks(values, labels)
    d0 = dims[0] if not one_d else 0
    ax.set_xlabel(f"content latent z{d0 + 1}")
    if one_d:
        ax.set_yticks([])
    else:
        ax.set_yticks(values, labels)
        ax.set_ylabel(f"content latent z{dims[1] + 1}")
    ax.tick_params(labelsize="small")
    if angle:
        ax.set_title(f"decoded at angle {math.degrees(angle):.3g}°", fontsize="medium")
    return ax


def angle_histogram(angles, *, symmetry: int = 1, bins: int = 72, ax=None, label=None,
                    color=None):
    """Polar histogram of angles (rad), with the 2 pi / n period marked.

    Angles are counted over the full circle (0° to the right, counter-clockwise positive, as on
    screen). The sector [-180/n, 180/n)° that one period of an n-fold symmetric pattern spans is
    shaded and its edges dashed; an angle latent wrapped into that period fills only this sector.

    Parameters
    ----------
    angles : array-like
        Angles in rad (any shape; flattened).
    symmetry : int
        n-fold symmetry.
    bins : int
        Bins over the full circle.
    ax : polar Axes, optional
        Made with ``subplot_kw={"projection": "polar"}``; a new one otherwise.
    label : str, optional
        Legend entry (call again on the same ``ax`` to overlay another set).
    color : optional
        Bar colour.

    Returns
    -------
    matplotlib.projections.polar.PolarAxes
    """
    a = np.asarray(angles, dtype=float).ravel()
    if a.size == 0:
        raise ValueError("angles is empty; pass at least one angle (rad).")
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError("angles are all NaN or infinite; pass finite angles in rad.")
    n = _check_symmetry(symmetry)
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2; got {bins!r}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained",
                               subplot_kw={"projection": "polar"})
    elif getattr(ax, "name", "") != "polar":
        raise ValueError(
            "angle_histogram needs a polar Axes: make it with "
            "plt.subplots(subplot_kw={'projection': 'polar'}) or leave ax=None."
        )
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    counts, _ = np.histogram(wrap_angle(a, 1), bins=edges)
    width = edges[1] - edges[0]
    first = not getattr(ax, "_rrvae_period_marked", False)
    ax.bar(edges[:-1], counts, width=width, align="edge", alpha=0.7, color=color, label=label,
           edgecolor="none")
    if first:
        top = counts.max() * 1.05 if counts.max() > 0 else 1.0
        theta = np.linspace(-np.pi / n, np.pi / n, 64)
        ax.fill_between(theta, 0, top, color="0.5", alpha=0.12, zorder=0,
                        label=f"one period ({360 / n:.3g}°)" if n > 1 else None)
        for edge in (-np.pi / n, np.pi / n) if n > 1 else ():
            ax.plot([edge, edge], [0, top], ls="--", color="0.3", lw=1)
        ax._rrvae_period_marked = True
    ax.set_theta_zero_location("E")
    ax.set_theta_direction(1)
    ax.set_rlabel_position(90 + 180 / max(n, 2))
    ax.tick_params(labelsize="small")
    if label is not None or n > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0), fontsize="small", frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------
# COM


def com_vectors(com, *, calibration=None, ax=None, step: int = 1, atoms=None,
                color_by_angle: bool = True, background=None, background_cmap: str = "gray",
                defects=None):
    """Arrows of the centre of mass over the scan, axes in nm.

    Arrows point along the COM as seen on the pattern (towards the nuclei): ``com_x`` to the right
    and ``com_y`` down, like the scan's y axis, so an arrow points from the probe position towards
    the atom that deflects the beam.

    Parameters
    ----------
    com : rrvae_nb.com.COMMaps
        COM components (scan y, scan x) in ``com.units``.
    calibration : Calibration, optional
        Scan step and offset in nm (default: ``com.scan_step_nm`` with the first probe at 0, or
        scan pixels).
    ax : matplotlib Axes, optional
    step : int
        Draw every ``step``-th arrow along each axis.
    atoms : (N, 2) array or GroundTruth, optional
        Atom positions (y, x) in nm.
    color_by_angle : bool
        Colour arrows by direction (cyclic "twilight", colour bar in degrees); black otherwise.
    background : (scan y, scan x) array, optional
        A map drawn under the arrows (e.g. ``com.magnitude`` or a HAADF image).
    background_cmap : str
    defects : optional
        As in :func:`scan_map`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    cy, cx = np.asarray(com.com_y, dtype=float), np.asarray(com.com_x, dtype=float)
    if cy.ndim != 2 or cy.shape != cx.shape:
        raise ValueError(
            f"com must hold two maps (scan y, scan x) of the same shape; got {cy.shape} and "
            f"{cx.shape}."
        )
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer; got {step!r}.")
    cal = _resolve_calibration(calibration)
    if cal is None and getattr(com, "scan_step_nm", None) is not None:
        from ..stem.signals import Calibration

        cal = Calibration(scan_step_nm=com.scan_step_nm, k_step_mrad=1.0)  # float or (y, x)
    ny, nx = cy.shape
    sy, sx = (1.0, 1.0) if cal is None else cal.scan_steps_nm
    y0, x0 = (0.0, 0.0) if cal is None else cal.scan_offset_nm
    yy, xx = np.meshgrid(y0 + sy * np.arange(ny), x0 + sx * np.arange(nx), indexing="ij")
    sl = (slice(None, None, int(step)), slice(None, None, int(step)))
    fig, ax = _new_axes(ax, _map_figsize(cy.shape, width_in=3.6, extra_h=1.2))
    extent = scan_extent(cy.shape, cal)
    if background is not None:
        bg = _as_map(background, name="background")
        if bg.shape != cy.shape:
            raise ValueError(f"background has shape {bg.shape}, the COM maps {cy.shape}.")
        ax.imshow(bg, cmap=background_cmap, extent=extent, origin="upper",
                  interpolation="nearest")
    u, v = cx[sl], -cy[sl]  # screen coordinates: V up; the scan's y axis points down
    ang = np.arctan2(v, u)
    # dark edges keep light arrows visible on any background
    kwargs = dict(pivot="middle", angles="uv", scale_units="width", width=0.006,
                  headwidth=3.5, headlength=4, edgecolor="black", linewidth=0.4)
    mag = np.hypot(u, v)
    typical = float(np.percentile(mag[np.isfinite(mag)], 90)) if np.isfinite(mag).any() else 0.0
    ncols = max(1, math.ceil(nx / int(step)))
    scale = typical * ncols / 0.9 if typical > 0 else None
    if color_by_angle:
        q = ax.quiver(xx[sl], yy[sl], u, v, ang, cmap=CYCLIC_CMAP,
                      norm=colors.Normalize(-math.pi, math.pi), scale=scale, **kwargs)
        cb = _colorbar(ax, q, "COM direction")
        _angle_ticks(cb, 1)
    else:
        q = ax.quiver(xx[sl], yy[sl], u, v, color="black", scale=scale, **kwargs)
    if typical > 0:
        key = float(f"{typical:.1g}")
        ax.quiverkey(q, 0.82, 1.03, key, f"{key:g} {com.units}", labelpos="W",
                     coordinates="axes", fontproperties={"size": "small"})
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    _scan_labels(ax, cal)
    _draw_atoms(ax, atoms, defects, size=40.0)
    return ax


# ----------------------------------------------------------------------------------------------
# Training and reconstructions


def _curve(history, name: str) -> np.ndarray:
    if isinstance(history, dict):
        value = history.get(name, [])
    else:
        value = getattr(history, name, [])
    return np.asarray(value if value is not None else [], dtype=float).ravel()


def training_curves(history, ax=None):
    """Training and held-out negative ELBO per pattern against epoch.

    Parameters
    ----------
    history : rrvae_nb.train.History or dict
        With ``train_loss`` and optionally ``val_loss`` and ``kl_weight`` (one value per epoch).
        Epochs with a KL weight below 1 (warm-up) are shaded: their training loss is not yet the
        full negative ELBO.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    train = _curve(history, "train_loss")
    val = _curve(history, "val_loss")
    kl = _curve(history, "kl_weight")
    if train.size == 0:
        raise ValueError("history has no training loss (train_loss is empty): train first.")
    fig, ax = _new_axes(ax, (5.0, 3.4))
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, "-", marker="o" if train.size < 30 else None, ms=3,
            label="training (-ELBO)")
    if val.size:
        ax.plot(np.arange(1, val.size + 1), val, "-", marker="o" if val.size < 30 else None,
                ms=3, label="held out (-ELBO)")
    if kl.size == train.size and np.any(kl < 1):
        warm = epochs[kl < 1]
        ax.axvspan(warm.min() - 0.5, warm.max() + 0.5, color="0.85", zorder=0,
                   label="KL warm-up")
    both = np.concatenate([train, val])
    both = both[np.isfinite(both)]
    if both.size and both.min() > 0 and both.max() / both.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per pattern")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def _pick(n_total: int, n: int, idx) -> np.ndarray:
    if idx is None:
        return np.unique(np.linspace(0, n_total - 1, min(int(n), n_total)).round().astype(int))
    idx = np.atleast_1d(np.asarray(idx))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be a non-empty list of pattern indices; got {idx!r}.")
    if idx.min() < -n_total or idx.max() >= n_total:
        raise ValueError(f"idx out of range for {n_total} patterns: {idx.tolist()}.")
    return idx % n_total


def reconstructions(model, patterns, *, idx=None, calibration=None, n: int = 6,
                    size_in: float = 1.7, cmap: str = "inferno"):
    """Input, reconstruction and difference of a few patterns, one column each.

    The reconstruction decodes each pattern's posterior-mean latents at its own encoded angle
    (``model.reconstruct``). Inputs and reconstructions share one colour scale; the difference
    (input - reconstruction) uses a diverging scale centred on 0.

    Parameters
    ----------
    model : RrVAE
    patterns : (N, ky, kx) array or Prepared
    idx : sequence of int, optional
        Which patterns (default: ``n`` evenly spaced).
    calibration : Calibration, optional
        Axes in mrad (default: from a Prepared).
    n : int
        Number of patterns when ``idx`` is not given.
    size_in : float
        Panel side in inches.
    cmap : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    x, cal = _stack_and_calibration(patterns, calibration)
    sel = _pick(len(x), n, idx)
    inputs = x[sel].astype(np.float32)
    recon = np.asarray(model.reconstruct(inputs), dtype=float)
    diff = inputs - recon
    m = len(sel)
    fig, axes = plt.subplots(3, m, figsize=(m * size_in + 1.6, 3 * size_in + 0.6),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    extent = pattern_extent(x.shape[1:], cal)
    lo, hi = float(min(inputs.min(), recon.min())), float(max(inputs.max(), recon.max()))
    big = float(np.abs(diff).max()) or 1.0
    rows = (("input", inputs, dict(cmap=cmap, vmin=lo, vmax=hi)),
            ("reconstruction", recon, dict(cmap=cmap, vmin=lo, vmax=hi)),
            ("difference", diff, dict(cmap="RdBu_r", vmin=-big, vmax=big)))
    images = []
    for r, (name, data, kw) in enumerate(rows):
        for c in range(m):
            ax = axes[r, c]
            im = ax.imshow(data[c], extent=extent, origin="upper", interpolation="nearest", **kw)
            if r == 0:
                ax.set_title(f"#{sel[c]}", fontsize="small")
            if cal is None:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.tick_params(labelsize="x-small")
        axes[r, 0].set_ylabel(name + ("\nky (mrad)" if cal is not None else ""),
                              fontsize="small")
        images.append(im)
    if cal is not None:
        for ax in axes[-1]:
            ax.set_xlabel("kx (mrad)", fontsize="small")
    fig.colorbar(images[0], ax=axes[:2, :], shrink=0.85, label="intensity")
    fig.colorbar(images[2], ax=axes[2:, :], shrink=0.85, label="input - recon.")
    return fig
