"""Simulated 4D-STEM datasets with ground truth (abTEM multislice).

Recipes
-------
:func:`graphene`
    Monolayer graphene, pristine or with single vacancies and/or substitutional (3-fold
    coordinated) Si dopants; 60 keV and 30 mrad by default.
:func:`zincblende_110`
    A zincblende crystal (ZnS, or GaAs) seen along [110], with its thickness as a parameter so a
    thin crystal (COM follows the projected field) can be compared with a thick one (channelling).
:func:`hexagonal_bn`
    Monolayer hexagonal boron nitride with a boron vacancy and a carbon substitution, at 80 keV
    and 25 mrad: a material none of the chapters uses, on which the package's defaults are
    tested.
:func:`emulate_graphene_experiment`
    Graphene data shaped like the paper's Nion experiment: a 64 x 64 scan over about 1 nm, a
    256 x 256 camera that the bright-field disk nearly fills, finite dose, a finite source and a
    little random probe-position error; optionally residual aberrations, a camera turned against
    the scan, slow drift, a camera's blur, gain and read-out noise, a Si dopant above the carbon
    plane, and a HAADF image recorded in the same run.

Every recipe returns a :class:`Simulation`: a calibrated hyperspy ``Signal2D`` with axes
(scan y, scan x | ky, kx) in nm and mrad, built by :func:`rrvae_nb.signals.make_signal`, and the
ground truth beside it (:class:`GroundTruth`: atom positions in nm, atomic numbers, which atoms
are defects, vacancy sites). The ground truth is also stored as plain arrays under
``metadata.Sample.ground_truth`` so that it survives a ``.hspy`` round trip, and the recipe and
its exact parameters under ``metadata.Simulation``. :func:`ground_truth_of` reads it back, and
rebuilds it from the recipe parameters (without simulating) for files that cannot hold it, such
as Nion ``.ndata1``.

Settings: the optics, the camera and the scan are grouped in three small dataclasses,
:class:`Optics`, :class:`Camera` and :class:`Scan` (each recipe's defaults in
:data:`RECIPE_DEFAULTS`). Every recipe takes them as ``optics=``, ``camera=``, ``scan=``, or as
the flat keywords of its signature (``energy_kev=60``, ``scan_gpts=32``, ...); flat keywords
given in a call override the objects' fields. Both forms give the same data, and a run records
its parameters under the flat names.

Frames and units: the scan frame has its origin at the first (nominal) probe position, the same
origin as the navigation axes; y runs along array axis 0 and x along axis 1. The diffraction axes
(ky, kx) are parallel to (y, x), so the centre of mass (COM) of a pattern points towards nearby
nuclei. Angles are in mrad, lengths in nm, beam energies in keV.

abTEM (>= 1.0.11) and ase are optional (the ``sim`` extra) and imported only when a recipe runs.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, replace
from dataclasses import field as _field
from functools import partial

import numpy as np

from .signals import Calibration, make_signal, require_hyperspy
from .units import electron_wavelength_nm

__all__ = [
    "GroundTruth",
    "Simulation",
    "Optics",
    "Camera",
    "Scan",
    "Settings",
    "RECIPE_DEFAULTS",
    "graphene",
    "zincblende_110",
    "hexagonal_bn",
    "emulate_graphene_experiment",
    "ground_truth_of",
    "ground_truth_from_recipe",
    "RECIPES",
    "GRAPHENE_LATTICE_NM",
    "HBN_LATTICE_NM",
    "ZINCBLENDE_LATTICE_NM",
]

#: Graphene lattice constant (nm).
GRAPHENE_LATTICE_NM = 0.246
#: Cubic lattice constants of the zincblende recipes (nm).
ZINCBLENDE_LATTICE_NM = {"ZnS": 0.541, "GaAs": 0.5653}
#: hexagonal boron nitride lattice constant (nm).
HBN_LATTICE_NM = 0.2504
#: Graphene defect kinds understood by the recipes.
DEFECT_KINDS = ("vacancy", "si")
#: hBN defect kinds: a boron vacancy, a carbon atom on a boron site.
HBN_DEFECT_KINDS = ("vacancy", "carbon")
#: Honeycomb monolayers: ase formula, lattice constant (nm), substituent atomic numbers.
_HONEYCOMB = {
    "graphene": ("C2", GRAPHENE_LATTICE_NM, {"si": 14}),
    "hBN": ("BN", HBN_LATTICE_NM, {"carbon": 6}),
}
#: Oldest abTEM release these recipes were checked against.
MIN_ABTEM = (1, 0, 11)
#: Atoms this far outside the scan window (nm) are still listed in the ground truth.
GROUND_TRUTH_MARGIN_NM = 0.2
#: Fraction of the Nyquist frequency that abTEM keeps (its anti-aliasing aperture).
_ANTIALIAS = 2.0 / 3.0


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """What is really in a simulated sample, in the scan frame.

    Attributes
    ----------
    positions_nm : numpy.ndarray
        (N, 2) positions (y, x) in nm of the atoms (for a crystal seen along a zone axis: of the
        atomic columns) inside the scan window plus a 0.2 nm margin. Same origin as the
        navigation axes: (0, 0) is the first nominal probe position.
    numbers : numpy.ndarray
        (N,) atomic numbers Z.
    is_defect : numpy.ndarray
        (N,) booleans, True for dopant atoms (e.g. Si in graphene).
    vacancies_nm : numpy.ndarray
        (M, 2) positions (y, x) in nm of removed atoms; M may be 0.
    probe_positions_nm : numpy.ndarray or None
        (scan y, scan x, 2) true (y, x) probe positions in nm when the scan was jittered; None
        for a perfect grid (then position (i, j) is (i, j) x the scan step).
    """

    positions_nm: np.ndarray
    numbers: np.ndarray
    is_defect: np.ndarray
    vacancies_nm: np.ndarray
    probe_positions_nm: np.ndarray | None = None

    def __post_init__(self):
        pos = np.asarray(self.positions_nm, dtype=float).reshape(-1, 2)
        num = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        dfc = np.asarray(self.is_defect, dtype=bool).reshape(-1)
        vac = np.asarray(self.vacancies_nm, dtype=float).reshape(-1, 2)
        if not (len(pos) == len(num) == len(dfc)):
            raise ValueError(
                f"GroundTruth arrays disagree in length: {len(pos)} positions, {len(num)} "
                f"atomic numbers, {len(dfc)} defect flags. Give one entry per atom."
            )
        object.__setattr__(self, "positions_nm", pos)
        object.__setattr__(self, "numbers", num)
        object.__setattr__(self, "is_defect", dfc)
        object.__setattr__(self, "vacancies_nm", vac)
        if self.probe_positions_nm is not None:
            probe = np.asarray(self.probe_positions_nm, dtype=float)
            if probe.ndim != 3 or probe.shape[-1] != 2:
                raise ValueError(
                    "GroundTruth.probe_positions_nm must have shape (scan y, scan x, 2); got "
                    f"{probe.shape}."
                )
            object.__setattr__(self, "probe_positions_nm", probe)

    def to_dict(self) -> dict:
        """Plain numpy arrays, as stored in ``metadata.Sample.ground_truth``."""
        out = {
            "positions_nm": self.positions_nm,
            "numbers": self.numbers,
            "is_defect": self.is_defect,
            "vacancies_nm": self.vacancies_nm,
        }
        if self.probe_positions_nm is not None:
            out["probe_positions_nm"] = self.probe_positions_nm
        return out


@dataclass(frozen=True)
class Simulation:
    """A simulated 4D-STEM dataset and its ground truth.

    Attributes
    ----------
    signal : hyperspy Signal2D
        (scan y, scan x | ky, kx) in nm and mrad. Intensities are a fraction of the incident
        beam per pixel, or electron counts when a dose was given. The ground truth, the recipe
        and its parameters are in its metadata too.
    atoms : GroundTruth
        Atom positions (nm, scan frame), atomic numbers, defect flags and vacancy sites.
    haadf : hyperspy Signal2D or None
        The HAADF image recorded with the same scan, (scan y, scan x) in nm, in electrons
        scattered into the annulus; None unless the recipe was asked for one
        (:func:`emulate_graphene_experiment`'s ``haadf_inner_mrad`` and ``haadf_outer_mrad``).
    """

    signal: object
    atoms: GroundTruth
    haadf: object | None = None


# --------------------------------------------------------------------------------------------
# Settings shared by the recipes: optics, camera, scan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optics:
    """The beam, the probe and the wave's sampling.

    Attributes
    ----------
    energy_kev : float
        Beam energy (keV).
    convergence_mrad : float
        Probe convergence semi-angle (mrad).
    sampling_nm : float
        Real-space sampling of wave function and potential (nm).
    source_size_nm : float
        Standard deviation (nm) of the Gaussian image of the source at the sample (partial
        spatial coherence; FWHM = 2.355 x this); 0 for a point source.
    """

    energy_kev: float = 60.0
    convergence_mrad: float = 30.0
    sampling_nm: float = 0.01
    source_size_nm: float = 0.0


@dataclass(frozen=True)
class Camera:
    """The recorded patterns: angular range, camera pixels, binning and dose.

    Attributes
    ----------
    max_angle_mrad : float
        Half-width of the recorded patterns (mrad), centre to edge.
    pixels : int or None
        Resample the patterns (bilinear, electrons conserved) onto a camera of this many pixels
        a side spanning +/- ``max_angle_mrad``; None keeps the simulation's own pixels.
    binning : int
        Sum b x b camera pixels after the dose is applied (needs ``pixels``).
    electrons_per_pattern : float or None
        Finite dose: Poisson counts for this many incident electrons per probe position; None
        for noise-free intensities (fractions of the incident beam).
    """

    max_angle_mrad: float = 60.0
    pixels: int | None = None
    binning: int = 1
    electrons_per_pattern: float | None = None


@dataclass(frozen=True)
class Scan:
    """The probe positions.

    Attributes
    ----------
    gpts : int or (int, int)
        Probe positions (y, x); extent / gpts must give square steps.
    extent_nm : float or (float, float)
        Size (y, x) of the scan window (nm); the last position is one step short of it.
    center_nm : (float, float) or None
        Centre (y, x) of the scan window in supercell coordinates (nm); None: the recipe's
        default (the defects' centroid, or the supercell centre).
    jitter_nm : float
        Standard deviation (nm) of a random error of each probe position (scan noise).
    """

    gpts: int | tuple[int, int] = 32
    extent_nm: float | tuple[float, float] = 1.0
    center_nm: tuple[float, float] | None = None
    jitter_nm: float = 0.0


@dataclass(frozen=True)
class Settings:
    """A recipe's optics, camera and scan (its defaults: :data:`RECIPE_DEFAULTS`)."""

    optics: Optics
    camera: Camera
    scan: Scan


#: Flat keyword of the recipes -> (group, field) of :class:`Settings`.
_KEYWORDS = {
    "energy_kev": ("optics", "energy_kev"),
    "convergence_mrad": ("optics", "convergence_mrad"),
    "scan_center_nm": ("scan", "center_nm"),
    "scan_extent_nm": ("scan", "extent_nm"),
    "scan_gpts": ("scan", "gpts"),
    "max_angle_mrad": ("camera", "max_angle_mrad"),
    "detector_px": ("camera", "pixels"),
    "detector_binning": ("camera", "binning"),
    "sampling_nm": ("optics", "sampling_nm"),
    "electrons_per_pattern": ("camera", "electrons_per_pattern"),
    "source_size_nm": ("optics", "source_size_nm"),
    "jitter_nm": ("scan", "jitter_nm"),
}
#: The experiment emulation's keywords speak of a camera and a field of view.
_EXPERIMENT_KEYWORDS = {
    "scan_gpts": ("scan", "gpts"),
    "fov_nm": ("scan", "extent_nm"),
    "camera_px": ("camera", "pixels"),
    "camera_max_angle_mrad": ("camera", "max_angle_mrad"),
    "camera_binning": ("camera", "binning"),
    "electrons_per_pattern": ("camera", "electrons_per_pattern"),
    "source_size_nm": ("optics", "source_size_nm"),
    "jitter_nm": ("scan", "jitter_nm"),
    "energy_kev": ("optics", "energy_kev"),
    "convergence_mrad": ("optics", "convergence_mrad"),
    "sampling_nm": ("optics", "sampling_nm"),
}

#: Default settings of each recipe.
RECIPE_DEFAULTS = {
    "graphene": Settings(Optics(60.0, 30.0, 0.01), Camera(60.0), Scan(32, 1.0)),
    "hexagonal_bn": Settings(Optics(80.0, 25.0, 0.01), Camera(50.0), Scan(32, 1.0)),
    "zincblende_110": Settings(Optics(200.0, 25.0, 0.008), Camera(60.0), Scan(24, 0.8)),
    "emulate_graphene_experiment": Settings(
        Optics(60.0, 30.0, 0.01, source_size_nm=0.02),
        Camera(36.0, pixels=256, binning=1, electrons_per_pattern=5e4),
        Scan(64, 1.0, jitter_nm=0.005),
    ),
}


# --------------------------------------------------------------------------------------------
# Optional dependencies and parameter checks
# --------------------------------------------------------------------------------------------


def _require_sim():
    """Import abTEM and ase, or raise an ImportError that names the ``sim`` extra."""
    try:
        import abtem
        import ase
    except ImportError as err:
        raise ImportError(
            "rrvae_nb.simulate needs abTEM (>= 1.0.11) and ase. Install the sim extra: "
            "pip install 'rrvae-nb[sim]'"
        ) from err
    parts = abtem.__version__.split("+")[0].split(".")[:3]
    version = tuple(int(p) if p.isdigit() else 0 for p in parts)
    if version < MIN_ABTEM:
        raise ImportError(
            f"rrvae_nb.simulate needs abTEM >= 1.0.11 (found {abtem.__version__}); older "
            "releases compute COM and noise differently. Upgrade: pip install -U 'rrvae-nb[sim]'"
        )
    return abtem, ase


def _number(name: str, value, fix: str, *, allow_zero: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number; got {value!r}. {fix}") from err
    ok = math.isfinite(out) and (out >= 0 if allow_zero else out > 0)
    if not ok:
        kind = "zero or a positive number" if allow_zero else "a positive number"
        raise ValueError(f"{name} must be {kind}; got {value!r}. {fix}")
    return out


def _pair(name: str, value, fix: str) -> tuple[float, float]:
    """A positive scalar or (y, x) pair as a (y, x) tuple of floats."""
    values = (value, value) if np.isscalar(value) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name} must be a number or a (y, x) pair; got {value!r}. {fix}")
    return tuple(_number(name, v, fix) for v in values)


def _whole(name: str, value, minimum: int, fix: str = "") -> int:
    ok = not isinstance(value, bool)
    try:
        ok = ok and float(value).is_integer() and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a whole number >= {minimum}; got {value!r}. {fix}")
    return int(value)


def _whole_pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    values = (value, value) if np.isscalar(value) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name} must be a whole number or a (y, x) pair; got {value!r}.")
    return tuple(_whole(name, v, minimum) for v in values)


def _finite_pair(value) -> tuple[float, ...]:
    """A (y, x) pair of finite floats from a pair or one number; () if it is not one."""
    values = (value, value) if np.isscalar(value) else tuple(value)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return ()
    return out if len(out) == 2 and all(math.isfinite(v) for v in out) else ()


def _centre(value) -> tuple[float, float] | None:
    """A scan centre (y, x) in nm, or None."""
    if value is None:
        return None
    out = _finite_pair(value)
    if not out:
        raise ValueError(
            f"scan_center_nm must be a (y, x) pair of finite numbers in nm (supercell "
            f"coordinates) or None for the default; got {value!r}."
        )
    return out


#: The electron wavelength in nm (relativistic, CODATA constants): one formula for the package.
_wavelength_nm = electron_wavelength_nm


def _check_defects(defects, material: str = "graphene") -> tuple[str, ...]:
    if isinstance(defects, str):
        defects = (defects,)
    defects = tuple(str(d).lower() for d in defects)
    kinds = ("vacancy", *_HONEYCOMB[material][2])
    unknown = [d for d in defects if d not in kinds]
    if unknown:
        raise ValueError(
            f"Unknown {material} defect(s) {unknown}: give a sequence of {kinds}, e.g. "
            f"defects=('vacancy',), ('{kinds[1]}',), ('vacancy', '{kinds[1]}') or () for "
            f"pristine {material}."
        )
    return defects


def _check_optics(settings: Settings, seed, names: dict | None = None) -> dict:
    """Check the settings every recipe shares; returns them as clean Python numbers.

    The dict's keys are the recipes' flat keywords (recorded with a run's parameters); ``names``
    maps them to the caller's parameter names for the messages.
    """
    o, camera, scan = settings.optics, settings.camera, settings.scan
    energy_kev, convergence_mrad, sampling_nm = o.energy_kev, o.convergence_mrad, o.sampling_nm
    max_angle_mrad, detector_px = camera.max_angle_mrad, camera.pixels
    detector_binning, electrons_per_pattern = camera.binning, camera.electrons_per_pattern
    source_size_nm, jitter_nm = o.source_size_nm, scan.jitter_nm
    names = names or {}
    angle, px, binning = (names.get(k, k) for k in ("max_angle_mrad", "detector_px",
                                                    "detector_binning"))
    energy_kev = _number("energy_kev", energy_kev, "Give the beam energy in keV, e.g. 60.")
    convergence_mrad = _number(
        "convergence_mrad", convergence_mrad, "Give the probe semi-angle in mrad, e.g. 30."
    )
    sampling_nm = _number(
        "sampling_nm", sampling_nm, "Give the wave-function sampling in nm, e.g. 0.01."
    )
    max_angle_mrad = _number(angle, max_angle_mrad, "Give the detector half-width in mrad.")
    wavelength = _wavelength_nm(energy_kev)
    limit = _ANTIALIAS * wavelength / (2 * sampling_nm) * 1e3
    if max_angle_mrad > limit:
        raise ValueError(
            f"{angle}={max_angle_mrad:g} exceeds the largest angle that a wave sampled at "
            f"{sampling_nm:g} nm carries at {energy_kev:g} keV ({limit:.1f} mrad after "
            f"anti-aliasing). Use sampling_nm <= "
            f"{_ANTIALIAS * wavelength / (2 * max_angle_mrad * 1e-3):.4f} or a smaller {angle}."
        )
    if max_angle_mrad <= convergence_mrad:
        raise ValueError(
            f"{angle}={max_angle_mrad:g} must exceed convergence_mrad={convergence_mrad:g} so "
            "that the whole bright-field disk is recorded."
        )
    if detector_px is not None:
        fix = "Use None to keep the simulation's own pixels." if px == "detector_px" else ""
        detector_px = _whole(px, detector_px, 2, fix)
    detector_binning = _whole(binning, detector_binning, 1)
    if detector_binning > 1 and (detector_px is None or detector_px % detector_binning):
        raise ValueError(
            f"{binning}={detector_binning} needs {px} set to a multiple of it; got "
            f"{px}={detector_px!r}. E.g. {px}=256 with {binning}=4 or 8."
        )
    if electrons_per_pattern is not None:
        electrons_per_pattern = _number(
            "electrons_per_pattern", electrons_per_pattern,
            "Give the dose in electrons per probe position, e.g. 5e4, or None for no noise.",
        )
    source_size_nm = _number("source_size_nm", source_size_nm,
                             "Give the source's Gaussian sigma in nm, e.g. 0.02 (0: point source).",
                             allow_zero=True)
    jitter_nm = _number("jitter_nm", jitter_nm,
                        "Give the rms probe-position error in nm, e.g. 0.005 (0: perfect grid).",
                        allow_zero=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed must be an integer or None; got {seed!r}.")
    return dict(
        energy_kev=energy_kev, convergence_mrad=convergence_mrad, sampling_nm=sampling_nm,
        max_angle_mrad=max_angle_mrad, detector_px=detector_px, detector_binning=detector_binning,
        electrons_per_pattern=electrons_per_pattern, source_size_nm=source_size_nm,
        jitter_nm=jitter_nm, seed=None if seed is None else int(seed),
    )


# --------------------------------------------------------------------------------------------
# Structures (ase, lengths in Å, positions (x, y, z) as ase has them)
# --------------------------------------------------------------------------------------------


def _nearest(xy: np.ndarray, target_xy, cell_xy) -> int:
    """Index of the point of ``xy`` nearest ``target_xy`` under periodic boundaries."""
    d = xy - np.asarray(target_xy)
    d -= np.round(d / cell_xy) * cell_xy
    return int(np.argmin(np.hypot(d[:, 0], d[:, 1])))


def _graphene_structure(supercell: tuple[int, int], defects: tuple[str, ...],
                        material: str = "graphene"):
    """Honeycomb monolayer supercell (graphene or hBN) with defects about the cell centre.

    The first defect takes the atom at the cell centre (in hBN a boron atom); defect k takes the
    atom k rectangular cells (sqrt(3) a, the armchair direction, which is y) further along +y
    (same sublattice).

    Returns
    -------
    atoms : ase.Atoms
        Vacancies removed, substituents set.
    vacancies_xy : numpy.ndarray
        (M, 2) removed sites (x, y) in Å.
    sites_xy : numpy.ndarray
        (K, 2) all defect sites (x, y) in Å, in the order of ``defects``.
    is_defect : numpy.ndarray
        (N,) booleans over the returned atoms: True for substituents.
    """
    abtem, _ = _require_sim()
    from ase.build import graphene as ase_graphene

    formula, a_nm, substituents = _HONEYCOMB[material]
    ny, nx = supercell
    # The orthogonal cell is (a, sqrt(3) a) along (x, y): zigzag along x, armchair along y.
    unit = abtem.orthogonalize_cell(ase_graphene(formula=formula, a=a_nm * 10, vacuum=2.0))
    atoms = unit * (nx, ny, 1)
    cell_xy = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    centre = cell_xy / 2
    xy = atoms.positions[:, :2]
    first_kind = atoms.numbers == atoms.numbers[0]  # ase lists boron first in hBN
    first = np.flatnonzero(first_kind)[_nearest(xy[first_kind], centre, cell_xy)]
    atoms.translate(np.r_[centre - atoms.positions[first, :2], 0.0])
    atoms.wrap()
    rect_y = unit.cell[1, 1]
    if len(defects) * rect_y > cell_xy[1] / 2 + 1e-6:
        raise ValueError(
            f"{len(defects)} defects 0.426 nm apart along y do not fit in a supercell of "
            f"{supercell} (y, x) rectangular cells without meeting their periodic images. Use a "
            "larger supercell or fewer defects."
        )
    sites, removed = [], []
    is_defect = np.zeros(len(atoms), dtype=bool)
    for k, kind in enumerate(defects):
        index = _nearest(atoms.positions[:, :2], centre + [0.0, k * rect_y], cell_xy)
        sites.append(atoms.positions[index, :2].copy())
        if kind == "vacancy":
            removed.append(index)
        else:
            atoms.numbers[index] = substituents[kind]
            is_defect[index] = True
    vacancies = atoms.positions[removed, :2].copy() if removed else np.zeros((0, 2))
    if removed:
        del atoms[removed]
        is_defect = np.delete(is_defect, removed)
    return atoms, vacancies, np.array(sites, dtype=float).reshape(-1, 2), is_defect


def _zincblende_structure(material: str, supercell: tuple[int, int], layers: int):
    """Zincblende [110] supercell with the midpoint of a dumbbell at the cell centre.

    The beam (z) runs along [110]; y is [001] (the dumbbell axis) and x is [1-10].
    """
    _require_sim()
    from ase.build import bulk, surface

    a = ZINCBLENDE_LATTICE_NM[material] * 10
    # cubic=True is needed: the primitive cell gives a wrongly oriented surface cell.
    cell = surface(bulk(material, "zincblende", a=a, cubic=True), (1, 1, 0), layers,
                   periodic=True)
    ny, nx = supercell
    atoms = cell * (nx, ny, 1)
    cell_xy = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    centre = cell_xy / 2
    xy = atoms.positions[:, :2]
    cation = atoms.numbers == atoms.numbers[0]  # ase lists the cation first
    first = np.flatnonzero(cation)[_nearest(xy[cation], centre, cell_xy)]
    partner = np.flatnonzero(~cation)[_nearest(xy[~cation], xy[first], cell_xy)]
    d = xy[partner] - xy[first]
    d -= np.round(d / cell_xy) * cell_xy
    atoms.translate(np.r_[centre - (xy[first] + d / 2), 0.0])
    atoms.wrap()
    return atoms


def _columns(xy: np.ndarray, numbers: np.ndarray, cell_xy: np.ndarray):
    """Atomic columns along the beam: mean (x, y) position (Å) and atomic number of each.

    Atoms are grouped by their position modulo the cell (to 1e-4 of the cell), so that a column
    split by wrapping at the cell edge counts once.
    """
    frac = np.round(np.mod(xy / cell_xy, 1.0), 4) % 1.0
    _, first, inverse = np.unique(frac, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    positions = np.zeros((len(first), 2))
    col_numbers = np.zeros(len(first), dtype=np.int64)
    for i, f in enumerate(first):
        members = inverse == i
        z = np.unique(numbers[members])
        if len(z) != 1:  # pragma: no cover - structural invariant of the recipes
            raise RuntimeError(f"Atomic column at {xy[f]} Å mixes species {z}.")
        d = xy[members] - xy[f]
        d -= np.round(d / cell_xy) * cell_xy
        positions[i] = xy[f] + d.mean(axis=0)
        col_numbers[i] = z[0]
    return positions, col_numbers


def _in_window(xy, values, cell_xy, start_xy, extent_xy, margin):
    """Points (and periodic images) inside the window plus a margin, relative to its start."""
    out_xy, out_v = [], [[] for _ in values]
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            rel = xy + cell_xy * [i, j] - start_xy
            keep = np.all((rel >= -margin) & (rel <= np.asarray(extent_xy) + margin), axis=1)
            out_xy.append(rel[keep])
            for store, v in zip(out_v, values, strict=True):
                store.append(v[keep])
    rel = np.concatenate(out_xy)
    order = np.lexsort((rel[:, 0], rel[:, 1]))  # rows by y, then x
    return rel[order], [np.concatenate(v)[order] for v in out_v]


# --------------------------------------------------------------------------------------------
# Plans: everything about a run that is decided before the simulation
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    recipe: str
    params: dict  # the recipe's keyword arguments, JSON-ready (recorded in metadata/manifest)
    optics: dict  # checked settings from _check_optics
    atoms: object  # ase.Atoms
    title: str
    slice_thickness_nm: float | tuple[float, ...]  # one thickness for all slices, or each's
    scan_start_nm: tuple[float, float]  # supercell frame, (y, x)
    scan_step_nm: float
    scan_gpts: tuple[int, int]
    extent_nm: tuple[float, float]
    truth_xy: np.ndarray  # atoms or columns, (x, y) Å
    truth_numbers: np.ndarray
    truth_defect: np.ndarray
    vacancies_xy: np.ndarray
    elements: list
    thickness_nm: float | None
    frozen_phonons: int = 0  # configurations averaged (abTEM FrozenPhonons); 0: none
    phonon_sigma_nm: float = 0.0  # rms displacement of every atom along each axis (nm)
    # what only the experiment emulation has (see _plan_emulate_graphene_experiment): probe
    # aberrations, scan rotation and drift, the camera model; empty for the other recipes
    extra: dict = _field(default_factory=dict)


def _scan_window(cell_nm, centre_nm, extent_nm, gpts):
    """Start (y, x) and square step (nm) of a scan window; checks it lies inside the cell."""
    (ext_y, ext_x), (ny, nx) = extent_nm, gpts
    step_y, step_x = ext_y / ny, ext_x / nx
    if not np.isclose(step_y, step_x, rtol=1e-3):
        nx_fit = max(1, round(ext_x / step_y))
        raise ValueError(
            f"Scan steps must be square: scan_extent_nm ({ext_y:g}, {ext_x:g}) over scan_gpts "
            f"({ny}, {nx}) gives {step_y:.4g} nm x {step_x:.4g} nm. Make the extent proportional "
            f"to the number of positions, e.g. scan_gpts=({ny}, {nx_fit}) with "
            f"scan_extent_nm=({ext_y:g}, {nx_fit * step_y:.4g})."
        )
    start = (centre_nm[0] - ext_y / 2, centre_nm[1] - ext_x / 2)
    cy, cx = cell_nm
    eps = 1e-9
    if min(start) < -eps or start[0] + ext_y > cy + eps or start[1] + ext_x > cx + eps:
        raise ValueError(
            f"The scan window (start (y, x) = ({start[0]:.3f}, {start[1]:.3f}) nm, extent "
            f"{ext_y:.3f} x {ext_x:.3f} nm) reaches outside the simulated supercell "
            f"({cy:.3f} x {cx:.3f} nm). Use a larger supercell, a smaller scan extent, or a "
            "scan_center_nm further inside the supercell."
        )
    return start, step_y


def _graphene_plan(recipe, params, optics, defects, supercell, scan_center_nm, extent, gpts,
                   material="graphene", si_height_nm=0.0):
    atoms, vacancies_xy, sites_xy, is_defect = _graphene_structure(supercell, defects, material)
    slices = atoms.cell[2, 2] / 10  # one slice: a flat monolayer
    if si_height_nm > 0 and np.any(atoms.numbers == 14):
        slices = _lift_si(atoms, si_height_nm)
    cell_xy = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    if scan_center_nm is None:
        centre_xy = sites_xy.mean(axis=0) if len(sites_xy) else cell_xy / 2
        scan_center_nm = (centre_xy[1] / 10, centre_xy[0] / 10)
    start, step = _scan_window((cell_xy[1] / 10, cell_xy[0] / 10), scan_center_nm, extent, gpts)
    kinds = ", ".join(defects) if defects else "pristine"
    prefix = "Emulated graphene experiment" if recipe.startswith("emulate") else \
        f"Simulated {material}"
    return _Plan(
        recipe=recipe, params=params, optics=optics, atoms=atoms,
        title=f"{prefix} ({kinds}), {optics['energy_kev']:g} keV",
        slice_thickness_nm=slices,
        scan_start_nm=start, scan_step_nm=step, scan_gpts=gpts, extent_nm=extent,
        truth_xy=atoms.positions[:, :2], truth_numbers=atoms.numbers.copy(),
        truth_defect=is_defect, vacancies_xy=vacancies_xy,
        elements=sorted(set(atoms.get_chemical_symbols())), thickness_nm=None,
    )


def _lift_si(atoms, height_nm: float) -> tuple[float, float]:
    """Raise the Si atoms ``height_nm`` above the carbon plane; return the two slices (nm).

    A multislice applies each slice's projected potential at the slice's entrance and then
    propagates the wave by the slice's thickness. The carbon plane therefore goes into a first
    slice exactly ``height_nm`` thick, so the wave travels that far before it meets the Si in
    the second slice. The atoms are moved along z so that the carbon plane sits inside the
    first slice (the projected potentials do not depend on where in its slice an atom sits).
    """
    h = height_nm * 10  # Å, as ase and abTEM have it
    is_si = atoms.numbers == 14
    z_carbon = float(np.median(atoms.positions[~is_si, 2]))
    atoms.positions[:, 2] += h / 2 - z_carbon
    atoms.positions[is_si, 2] += h
    return (height_nm, atoms.cell[2, 2] / 10 - height_nm)


def _plan_honeycomb(recipe, material, defects, supercell, settings: Settings, seed) -> _Plan:
    """Plan of a honeycomb monolayer recipe (graphene, hBN)."""
    defects = _check_defects(defects, material)
    supercell = _whole_pair("supercell", supercell)
    scan = settings.scan
    extent = _pair("scan_extent_nm", scan.extent_nm, "Give the scan window size in nm, e.g. 1.")
    gpts = _whole_pair("scan_gpts", scan.gpts)
    centre = _centre(scan.center_nm)
    optics = _check_optics(settings, seed)
    params = dict(
        defects=list(defects), supercell=list(supercell), scan_center_nm=None if centre is None
        else list(centre), scan_extent_nm=list(extent), scan_gpts=list(gpts), **optics,
    )
    return _graphene_plan(recipe, params, optics, defects, supercell, centre, extent, gpts,
                          material=material)


def _plan_zincblende_110(material, thickness_nm, supercell, slice_thickness_nm,
                         frozen_phonons, phonon_sigma_nm, settings: Settings, seed) -> _Plan:
    if material not in ZINCBLENDE_LATTICE_NM:
        raise ValueError(
            f"Unknown zincblende material {material!r}: use one of "
            f"{sorted(ZINCBLENDE_LATTICE_NM)} (case-sensitive)."
        )
    thickness_nm = _number("thickness_nm", thickness_nm,
                           "Give the crystal thickness in nm, e.g. 2 (thin) or 5 (thick).")
    slice_thickness_nm = _number("slice_thickness_nm", slice_thickness_nm,
                                 "Give the multislice slice thickness in nm, e.g. 0.2.")
    repeat = ZINCBLENDE_LATTICE_NM[material] / math.sqrt(2)  # [110] period (nm)
    layers = round(thickness_nm / repeat)
    if layers < 1:
        raise ValueError(
            f"thickness_nm={thickness_nm:g} is below one [110] repeat of {material} "
            f"({repeat:.3f} nm). Use thickness_nm >= {repeat:.3f}."
        )
    frozen_phonons = _whole("frozen_phonons", frozen_phonons, 0,
                            "Give the number of frozen-phonon configurations, e.g. 8 (0: none).")
    phonon_sigma_nm = _number("phonon_sigma_nm", phonon_sigma_nm,
                              "Give the rms thermal displacement along each axis in nm, e.g. "
                              "0.0087 (ZnS at room temperature).", allow_zero=frozen_phonons == 0)
    supercell = _whole_pair("supercell", supercell)
    scan = settings.scan
    extent = _pair("scan_extent_nm", scan.extent_nm, "Give the scan window size in nm, e.g. 0.8.")
    gpts = _whole_pair("scan_gpts", scan.gpts)
    centre = _centre(scan.center_nm)
    optics = _check_optics(settings, seed)
    params = dict(
        material=material, thickness_nm=thickness_nm, supercell=list(supercell),
        scan_center_nm=None if centre is None else list(centre), scan_extent_nm=list(extent),
        scan_gpts=list(gpts), slice_thickness_nm=slice_thickness_nm,
        frozen_phonons=frozen_phonons, phonon_sigma_nm=phonon_sigma_nm, **optics,
    )
    atoms = _zincblende_structure(material, supercell, layers)
    cell_nm = (atoms.cell[1, 1] / 10, atoms.cell[0, 0] / 10)
    if centre is None:
        centre = (cell_nm[0] / 2, cell_nm[1] / 2)
    start, step = _scan_window(cell_nm, centre, extent, gpts)
    col_xy, col_z = _columns(atoms.positions[:, :2], atoms.numbers,
                             np.array([atoms.cell[0, 0], atoms.cell[1, 1]]))
    thickness = layers * repeat
    phonons = f", {frozen_phonons} frozen-phonon configurations" if frozen_phonons else ""
    return _Plan(
        recipe="zincblende_110", params=params, optics=optics, atoms=atoms,
        title=f"Simulated {material} [110], {thickness:.2f} nm, {optics['energy_kev']:g} keV"
              f"{phonons}",
        slice_thickness_nm=slice_thickness_nm, scan_start_nm=start, scan_step_nm=step,
        scan_gpts=gpts, extent_nm=extent, truth_xy=col_xy, truth_numbers=col_z,
        truth_defect=np.zeros(len(col_z), dtype=bool), vacancies_xy=np.zeros((0, 2)),
        elements=sorted(set(atoms.get_chemical_symbols())), thickness_nm=thickness,
        frozen_phonons=frozen_phonons, phonon_sigma_nm=phonon_sigma_nm,
    )


#: The experiment emulation's own knobs beyond Settings (name -> default: all off, an ideal
#: instrument); ``data/make_data.py`` sets the shipped values. Pairs are (y, x).
_EMULATION_KNOBS = {
    "scan_rotation_deg": 0.0, "defocus_nm": 0.0, "astigmatism_nm": 0.0,
    "astigmatism_angle_deg": 0.0, "coma_nm": 0.0, "coma_angle_deg": 0.0,
    "drift_nm": (0.0, 0.0), "drift_quadratic_nm": (0.0, 0.0), "camera_gain": 1.0,
    "camera_psf_px": 0.0, "camera_psf_tail": 0.0, "camera_psf_tail_px": 0.0,
    "read_noise": 0.0, "si_height_nm": 0.0, "haadf_inner_mrad": 0.0, "haadf_outer_mrad": 0.0,
}
#: The Si's height above the carbon plane is kept below this (nm): the monolayer's cell is 0.4 nm
#: high and the two slices of a buckled Si (see :func:`_graphene_plan`) must fit in it.
_MAX_SI_HEIGHT_NM = 0.25


def _check_emulation_knobs(knobs: dict) -> dict:
    """Check the emulation's knobs (:data:`_EMULATION_KNOBS`); returns clean Python numbers."""
    out = {}
    for name, value in knobs.items():
        if isinstance(_EMULATION_KNOBS[name], tuple):
            pair = _finite_pair(value)
            if not pair:
                raise ValueError(f"{name} must be a (y, x) pair of finite numbers in nm; got "
                                 f"{value!r}. E.g. {name}=(0.02, -0.03); (0, 0): none.")
            out[name] = list(pair)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number; got {value!r}.")
        out[name] = number
    if out["camera_gain"] <= 0:
        raise ValueError(f"camera_gain must be positive (detector units per electron); got "
                         f"{knobs['camera_gain']!r}. Use 1 for electron counts.")
    for name in ("camera_psf_px", "camera_psf_tail_px", "read_noise", "si_height_nm",
                 "haadf_inner_mrad", "haadf_outer_mrad"):
        if out[name] < 0:
            raise ValueError(f"{name} must be zero (off) or positive; got {knobs[name]!r}.")
    if not 0 <= out["camera_psf_tail"] < 1:
        raise ValueError("camera_psf_tail is the fraction of each electron's signal in the "
                         "exponential tail and must lie in [0, 1); got "
                         f"{knobs['camera_psf_tail']!r}.")
    if out["camera_psf_tail"] > 0 and out["camera_psf_tail_px"] <= 0:
        raise ValueError("camera_psf_tail > 0 needs camera_psf_tail_px > 0 (the tail's decay "
                         "length in camera pixels), e.g. 6.")
    if out["si_height_nm"] > _MAX_SI_HEIGHT_NM:
        raise ValueError(f"si_height_nm={knobs['si_height_nm']!r} is out of reach: the Si of a "
                         f"3-fold site sits about 0.1-0.2 nm above the carbon plane; the "
                         f"emulation allows up to {_MAX_SI_HEIGHT_NM} nm.")
    return out


def _check_haadf(extra: dict, optics: dict) -> None:
    """The HAADF annulus must lie outside the camera and inside what the wave carries."""
    inner, outer = extra["haadf_inner_mrad"], extra["haadf_outer_mrad"]
    if inner == outer == 0:
        return
    corner = optics["max_angle_mrad"] * math.sqrt(2)
    limit = _ANTIALIAS * _wavelength_nm(optics["energy_kev"]) / (2 * optics["sampling_nm"]) * 1e3
    if not corner < inner < outer:
        raise ValueError(
            f"The HAADF annulus ({inner:g} to {outer:g} mrad) must start outside the camera, "
            f"whose corners reach {corner:.1f} mrad, and end beyond its start: give "
            "haadf_inner_mrad < haadf_outer_mrad, e.g. 80 and 160 (both 0: no HAADF image)."
        )
    if outer > limit:
        raise ValueError(
            f"haadf_outer_mrad={outer:g} exceeds the largest angle that a wave sampled at "
            f"{optics['sampling_nm']:g} nm carries at {optics['energy_kev']:g} keV "
            f"({limit:.1f} mrad after anti-aliasing). Use a smaller haadf_outer_mrad or a finer "
            "sampling_nm."
        )


def _plan_emulate_graphene_experiment(defects, supercell, settings: Settings, seed,
                                      **knobs) -> _Plan:
    defects = _check_defects(defects)
    supercell = _whole_pair("supercell", supercell)
    scan_gpts = _whole("scan_gpts", settings.scan.gpts, 2)
    fov_nm = _number("fov_nm", settings.scan.extent_nm, "Give the field of view in nm, e.g. 1.")
    if settings.scan.center_nm is not None:
        raise ValueError(
            "emulate_graphene_experiment centres the scan on the defect(s): leave "
            "Scan.center_nm at None."
        )
    if settings.camera.electrons_per_pattern is None:
        raise ValueError(
            "emulate_graphene_experiment needs a finite dose: give electrons_per_pattern, e.g. "
            "5e4 (use graphene() for noise-free data)."
        )
    optics = _check_optics(
        settings, seed,
        names=dict(max_angle_mrad="camera_max_angle_mrad", detector_px="camera_px",
                   detector_binning="camera_binning"),
    )
    extra = _check_emulation_knobs(knobs)
    _check_haadf(extra, optics)
    if optics["detector_px"] is None and (extra["scan_rotation_deg"] or extra["camera_psf_px"]
                                          or extra["camera_psf_tail"]):
        raise ValueError("scan_rotation_deg and the camera PSF need camera_px (the camera's "
                         "pixels), e.g. camera_px=256.")
    params = dict(
        defects=list(defects), supercell=list(supercell), scan_gpts=scan_gpts, fov_nm=fov_nm,
        camera_px=optics["detector_px"], camera_max_angle_mrad=optics["max_angle_mrad"],
        camera_binning=optics["detector_binning"],
        electrons_per_pattern=optics["electrons_per_pattern"],
        source_size_nm=optics["source_size_nm"], jitter_nm=optics["jitter_nm"],
        energy_kev=optics["energy_kev"], convergence_mrad=optics["convergence_mrad"],
        sampling_nm=optics["sampling_nm"], seed=optics["seed"], **extra,
    )
    plan = _graphene_plan("emulate_graphene_experiment", params, optics, defects, supercell,
                          None, (fov_nm, fov_nm), (scan_gpts, scan_gpts),
                          si_height_nm=extra["si_height_nm"])
    plan.extra = extra
    return plan


class _Recipe:
    """A recipe's keyword interface, and the one place that turns a call into a :class:`_Plan`.

    The signature is built from the recipe's own parameters, the flat settings keywords (with
    the recipe's defaults, from :data:`RECIPE_DEFAULTS`) and the ``optics``, ``camera`` and
    ``scan`` objects. Flat keywords given in a call override the objects' fields.
    """

    def __init__(self, name, planner, own, keywords=None):
        self.name, self.planner, self.keywords = name, planner, keywords or _KEYWORDS
        defaults = RECIPE_DEFAULTS[name]
        P = inspect.Parameter
        params = [P(key, P.POSITIONAL_OR_KEYWORD if positional else P.KEYWORD_ONLY,
                    default=default) for key, default, positional in own]
        self.own = [p.name for p in params]
        params += [P(key, P.KEYWORD_ONLY, default=getattr(getattr(defaults, group), field))
                   for key, (group, field) in self.keywords.items()]
        params += [P(g, P.KEYWORD_ONLY, default=None) for g in ("optics", "camera", "scan")]
        params += [P("seed", P.KEYWORD_ONLY, default=0)]
        self.signature = inspect.Signature(params)
        self.public_signature = inspect.Signature(
            [*params, P("progress", P.KEYWORD_ONLY, default=True)],
            return_annotation="Simulation")

    def settings(self, arguments: dict, given: dict) -> Settings:
        """The recipe's defaults, replaced by the objects given, then by the flat keywords."""
        groups = {}
        for group, cls in (("optics", Optics), ("camera", Camera), ("scan", Scan)):
            value = arguments[group]
            if value is not None and not isinstance(value, cls):
                raise TypeError(f"{group} must be a rrvae_nb.simulate.{cls.__name__}; got "
                                f"{type(value).__name__}.")
            groups[group] = getattr(RECIPE_DEFAULTS[self.name], group) if value is None \
                else value
        for key, (group, field) in self.keywords.items():
            if key in given:
                groups[group] = replace(groups[group], **{field: given[key]})
        return Settings(**groups)

    def plan(self, *args, **kwargs) -> _Plan:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{self.name}(): {err}") from None
        given = dict(bound.arguments)
        bound.apply_defaults()
        a = bound.arguments
        return self.planner(**{k: a[k] for k in self.own},
                            settings=self.settings(a, given), seed=a["seed"])


_RECIPES = {
    "graphene": _Recipe(
        "graphene", partial(_plan_honeycomb, "graphene", "graphene"),
        [("defects", (), True), ("supercell", (4, 7), False)]),
    "hexagonal_bn": _Recipe(
        "hexagonal_bn", partial(_plan_honeycomb, "hexagonal_bn", "hBN"),
        [("defects", ("vacancy", "carbon"), True), ("supercell", (4, 7), False)]),
    "zincblende_110": _Recipe(
        "zincblende_110", _plan_zincblende_110,
        [("material", "ZnS", True), ("thickness_nm", 2.0, True), ("supercell", (3, 2), False),
         ("slice_thickness_nm", 0.2, False), ("frozen_phonons", 0, False),
         ("phonon_sigma_nm", 0.0087, False)]),
    "emulate_graphene_experiment": _Recipe(
        "emulate_graphene_experiment", _plan_emulate_graphene_experiment,
        [("defects", ("vacancy",), True), ("supercell", (8, 14), False),
         *((k, v, False) for k, v in _EMULATION_KNOBS.items())],
        keywords=_EXPERIMENT_KEYWORDS),
}
#: Names of the recipes (functions of this module) that the data manifest may refer to.
RECIPES = tuple(_RECIPES)


def _probe_grid(plan: _Plan, rng) -> tuple[np.ndarray, int]:
    """Probe positions (y, x) in nm, supercell frame, with a margin of ``pad`` positions.

    A finite source mixes neighbouring probe positions, so a margin of 4 sigma is simulated
    around the window and dropped after the blur. The jitter is the first draw from ``rng``.
    """
    o = plan.optics
    step, (ny, nx) = plan.scan_step_nm, plan.scan_gpts
    pad = math.ceil(4.0 * o["source_size_nm"] / step) if o["source_size_nm"] > 0 else 0
    iy = np.arange(-pad, ny + pad) * step + plan.scan_start_nm[0]
    ix = np.arange(-pad, nx + pad) * step + plan.scan_start_nm[1]
    grid = np.stack(np.meshgrid(iy, ix, indexing="ij"), axis=-1)
    if o["jitter_nm"] > 0:
        grid = grid + rng.normal(0.0, o["jitter_nm"], size=grid.shape)
    grid = grid + _drift(plan, pad)
    return grid, pad


def _drift(plan: _Plan, pad: int) -> np.ndarray | float:
    """Slow specimen drift: (scan y, scan x, 2) displacement (y, x) in nm of the probe positions.

    The frame is scanned row by row; with t = (row * nx + column) / (ny * nx) the time over the
    frame (0 at the first position, 1 after the last; the margin of ``pad`` positions continues
    the raster), the displacement is ``drift_nm * t + drift_quadratic_nm * t**2``. 0 when the
    plan has no drift.
    """
    lin = np.asarray(plan.extra.get("drift_nm", (0.0, 0.0)), dtype=float)
    quad = np.asarray(plan.extra.get("drift_quadratic_nm", (0.0, 0.0)), dtype=float)
    if not (lin.any() or quad.any()):
        return 0.0
    ny, nx = plan.scan_gpts
    rows = np.arange(-pad, ny + pad)[:, None]
    cols = np.arange(-pad, nx + pad)[None, :]
    t = ((rows * nx + cols) / (ny * nx))[..., None]
    return lin * t + quad * t**2


def _plan_truth(plan: _Plan, grid: np.ndarray, pad: int) -> GroundTruth:
    """The ground truth of a plan in the scan frame (origin at the first nominal position)."""
    atoms = plan.atoms
    cell_xy = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    start_xy = np.array(plan.scan_start_nm[::-1]) * 10
    extent_xy = np.array(plan.extent_nm[::-1]) * 10
    margin = GROUND_TRUTH_MARGIN_NM * 10
    rel, (z, d) = _in_window(plan.truth_xy, [plan.truth_numbers, plan.truth_defect], cell_xy,
                             start_xy, extent_xy, margin)
    vrel, _ = _in_window(plan.vacancies_xy, [], cell_xy, start_xy, extent_xy, margin)
    probe = None
    if plan.optics["jitter_nm"] > 0 or np.ndim(_drift(plan, pad)):
        ny, nx = plan.scan_gpts
        probe = grid[pad: pad + ny, pad: pad + nx] - np.asarray(plan.scan_start_nm)
    return GroundTruth(positions_nm=rel[:, ::-1] / 10, numbers=z, is_defect=d,
                       vacancies_nm=vrel[:, ::-1] / 10, probe_positions_nm=probe)


def ground_truth_from_recipe(recipe: str, params: dict | str) -> GroundTruth:
    """Rebuild the ground truth of a recipe run from its parameters, without simulating.

    Structures, scan windows and (seeded) probe-position errors are deterministic, so this gives
    the same :class:`GroundTruth` as the run itself. Use it for files that cannot store the
    ground truth (Nion ``.ndata1``); the data manifest records recipe and parameters.

    Parameters
    ----------
    recipe : str
        ``"graphene"``, ``"zincblende_110"`` or ``"emulate_graphene_experiment"``, optionally
        prefixed with ``"rrvae_nb.simulate."``.
    params : dict or str
        The recipe's keyword arguments (a dict, or its JSON text).

    Raises
    ------
    ValueError
        Unknown recipe or invalid parameters.
    """
    name = str(recipe).removeprefix("rrvae_nb.simulate.")
    if name not in _RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}: use one of {RECIPES}.")
    if isinstance(params, str):
        params = json.loads(params)
    params = dict(params or {})
    params.pop("progress", None)
    plan = _RECIPES[name].plan(**params)
    grid, pad = _probe_grid(plan, np.random.default_rng(plan.optics["seed"]))
    return _plan_truth(plan, grid, pad)


# --------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------


def _resample_patterns(patterns: np.ndarray, k_step: float, n_out: int, half_angle: float,
                       rotation_deg: float = 0.0):
    """Bilinear resampling of (N, H, H) patterns (odd H, zero angle at the centre pixel) onto
    an n_out x n_out camera spanning [-half_angle, half_angle] mrad edge to edge.

    Intensities are rescaled by the pixel-area ratio, so pattern sums (electrons) are kept.
    scipy's affine_transform does it in one vectorised pass; order 1 never mixes neighbouring
    patterns along the stack axis and cannot overshoot (no negative intensities at the disk
    edge), unlike a spline.

    ``rotation_deg``: the camera is turned against the scan, so a pattern lands on it turned
    clockwise on screen by this angle (its COM angle, :mod:`rrvae_nb.com`'s convention, falls by
    it); ``com.apply_rotation(com, rotation_deg)`` turns the COM back into the scan's frame, and
    ``com.find_rotation`` should find this angle. The patterns must then reach the camera's
    corners (half_angle x sqrt 2); beyond them the camera sees nothing (zero).
    """
    from scipy.ndimage import affine_transform

    out_step = 2.0 * half_angle / n_out
    scale = out_step / k_step
    c_in, c_out = (patterns.shape[-1] - 1) / 2, (n_out - 1) / 2
    t = math.radians(rotation_deg)
    c, s = math.cos(t), math.sin(t)
    # camera pixel (row, col) about its centre reads the pattern at R (row, col) about its
    # centre: turning by +t counter-clockwise on screen (y up = -row) is (c r - s q, s r + c q)
    turn = scale * np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    matrix[1:, 1:] = turn
    offset = np.r_[0.0, c_in - turn @ np.array([c_out, c_out])]
    if rotation_deg == 0:  # the diagonal form: scipy's cheaper path, same numbers as before
        matrix, offset = np.array([1.0, scale, scale]), offset
    out = affine_transform(
        patterns.astype(np.float32, copy=False), matrix, offset=offset,
        output_shape=(patterns.shape[0], n_out, n_out), order=1,
        mode="nearest" if rotation_deg == 0 else "constant", cval=0.0,
    )
    out *= np.float32(scale**2)
    return out, out_step


def _aberrations(extra: dict) -> dict:
    """abTEM's aberration coefficients (Å, rad) from the emulation's knobs (nm, degrees).

    ``defocus_nm`` is abTEM's defocus, minus C10 (the Scherzer sign: positive is underfocus);
    the 2-fold astigmatism is C12 and the axial coma C21, each with its angle from the x axis.
    """
    if not extra:
        return {}
    return {
        "C10": -10.0 * extra["defocus_nm"],
        "C12": 10.0 * extra["astigmatism_nm"],
        "phi12": math.radians(extra["astigmatism_angle_deg"]),
        "C21": 10.0 * extra["coma_nm"],
        "phi21": math.radians(extra["coma_angle_deg"]),
    }


def _camera_psf(extra: dict) -> np.ndarray | None:
    """The camera's point-spread function on its pixels (sums to 1), or None for none.

    A Gaussian core of sigma ``camera_psf_px`` plus a fraction ``camera_psf_tail`` of the signal
    in an exponential tail exp(-r / ``camera_psf_tail_px``), as a scintillator's light spreads.
    """
    sigma, tail = extra.get("camera_psf_px", 0.0), extra.get("camera_psf_tail", 0.0)
    length = extra.get("camera_psf_tail_px", 0.0)
    if sigma <= 0 and tail <= 0:
        return None
    half = int(math.ceil(max(4 * sigma, 6 * length if tail > 0 else 0.0, 1.0)))
    r = np.hypot(*np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1),
                              indexing="ij"))
    core = np.exp(-0.5 * (r / sigma) ** 2) if sigma > 0 else (r == 0).astype(float)
    kernel = (1 - tail) * core / core.sum()
    if tail > 0:
        wing = np.exp(-r / length)
        kernel = kernel + tail * wing / wing.sum()
    return kernel / kernel.sum()


def _simulate(plan: _Plan, progress: bool) -> Simulation:
    """Run abTEM multislice over the planned (possibly jittered) scan; build the result.

    The stages, in the order the random numbers are drawn (jitter, then the camera's noise):
    probe positions, multislice (:func:`_multislice`), the source's blur over the scan
    (:func:`_source_blur`), the camera (:func:`_camera`), the signal with its metadata.
    """
    o = plan.optics
    rng = np.random.default_rng(o["seed"])
    grid, pad = _probe_grid(plan, rng)
    ny, nx = plan.scan_gpts
    # a turned camera's corners see angles up to sqrt 2 x its half-width
    max_angle = o["max_angle_mrad"] * (
        math.sqrt(2) + 1e-3 if plan.extra.get("scan_rotation_deg", 0.0) else 1.0)
    array, k_step, potential, haadf = _multislice(plan, grid, max_angle, progress)
    array = array.reshape(ny + 2 * pad, nx + 2 * pad, *array.shape[-2:])
    array = _source_blur(array, plan, pad)
    out, step, digitise = _camera(array, plan, k_step, rng, progress)
    if haadf is not None:
        haadf = _haadf_image(haadf.reshape(ny + 2 * pad, nx + 2 * pad), plan, pad)
    # Zero angle lies on the camera's geometric centre (the centre pixel for odd sizes).
    k_offset = -(out.shape[-1] - 1) / 2 * step
    calibration = Calibration(
        scan_step_nm=plan.scan_step_nm, k_step_mrad=step, scan_offset_nm=(0.0, 0.0),
        k_offset_mrad=(k_offset, k_offset), energy_kev=o["energy_kev"],
        convergence_mrad=o["convergence_mrad"],
    )
    truth = _plan_truth(plan, grid, pad)
    signal = make_signal(out, calibration, title=plan.title)
    _describe(signal.metadata, plan, truth, digitise, k_step, potential)
    return Simulation(signal=signal, atoms=truth, haadf=haadf)


def _angstrom(nm):
    """A length, or a tuple of lengths, from nm to Å."""
    return tuple(v * 10 for v in nm) if isinstance(nm, tuple) else nm * 10


def _multislice(plan: _Plan, grid: np.ndarray, max_angle: float, progress: bool):
    """abTEM multislice at the probe positions ``grid`` (rows, cols, 2) in nm (y, x).

    Returns (patterns (positions, ky, kx) float32, square and odd-sized around zero angle;
    their angular step in mrad; the abTEM potential; the HAADF annulus's share of the beam at
    each position (positions,) float64, or None without a HAADF detector).
    """
    abtem, _ = _require_sim()
    import dask
    from tqdm.auto import tqdm
    from tqdm.dask import TqdmCallback

    o = plan.optics
    # abTEM wants (x, y) positions in Å; a CustomScan keeps our (scan y, scan x) C order.
    positions = (grid[..., ::-1] * 10.0).reshape(-1, 2)
    # FFTW's "measure" planning picks algorithms by timing them, so its round-off could differ
    # between runs; "estimate" planning is deterministic.
    with abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        # Frozen phonons: the patterns are averaged over randomly displaced copies of the atoms
        # (thermal diffuse scattering); abTEM takes the displacements' sigma in Å.
        atoms = plan.atoms if not plan.frozen_phonons else abtem.FrozenPhonons(
            plan.atoms, num_configs=plan.frozen_phonons, sigmas=plan.phonon_sigma_nm * 10,
            seed=o["seed"])
        potential = abtem.Potential(
            atoms, sampling=o["sampling_nm"] * 10,
            slice_thickness=_angstrom(plan.slice_thickness_nm), projection="infinite",
        )
        probe = abtem.Probe(energy=o["energy_kev"] * 1e3, semiangle_cutoff=o["convergence_mrad"],
                            aberrations=_aberrations(plan.extra))
        detector = abtem.PixelatedDetector(max_angle=max_angle, resample="uniform")
        inner, outer = (plan.extra.get(f"haadf_{k}_mrad", 0.0) for k in ("inner", "outer"))
        detectors = [detector] + ([abtem.AnnularDetector(inner, outer)] if outer else [])
        # one multislice feeds both detectors
        measurements = probe.scan(
            potential, scan=abtem.CustomScan(positions), detectors=detectors, lazy=True
        )
        if not isinstance(measurements, list):
            measurements = [measurements]
        with TqdmCallback(desc=plan.title, tqdm_class=tqdm, disable=not progress):
            computed = dask.compute(*(m.array for m in measurements), scheduler="threads")
    measurement, haadf = measurements[0], computed[1] if len(computed) > 1 else None
    k_steps = measurement.angular_sampling
    if not np.isclose(k_steps[0], k_steps[1], rtol=1e-6):  # pragma: no cover - abTEM invariant
        raise RuntimeError(f"abTEM returned non-square diffraction pixels {k_steps} mrad.")
    k_step = float(k_steps[0])
    array = np.asarray(computed[0], dtype=np.float32)  # (positions, kx, ky)
    # Square, odd-sized patterns centred on abTEM's zero-angle pixel (index n // 2).
    nkx, nky = array.shape[-2:]
    half = min(int(math.floor(max_angle / k_step + 1e-6)),
               nkx // 2, nky // 2, nkx - 1 - nkx // 2, nky - 1 - nky // 2)
    cx, cy = nkx // 2, nky // 2
    array = array[:, cx - half: cx + half + 1, cy - half: cy + half + 1].transpose(0, 2, 1)
    haadf = None if haadf is None else np.asarray(haadf, dtype=np.float64)
    return array, k_step, potential, haadf


def _source_blur(array: np.ndarray, plan: _Plan, pad: int) -> np.ndarray:
    """A finite source: blur the padded (rows, cols, ky, kx) scan window, crop the padding."""
    if pad:
        from scipy.ndimage import gaussian_filter

        ny, nx = plan.scan_gpts
        # abTEM's gaussian_source_size wraps around the scan periodically, which is right only
        # for a scan of exactly one period; here the padded window is blurred and cropped.
        sigma = plan.optics["source_size_nm"] / plan.scan_step_nm
        array = gaussian_filter(array, sigma=(sigma, sigma, 0, 0), mode="nearest")
        array = array[pad: pad + ny, pad: pad + nx]
    return np.ascontiguousarray(array, dtype=np.float32)


def _haadf_image(fraction: np.ndarray, plan: _Plan, pad: int):
    """The HAADF image: the source's blur, then the electrons counted by the annulus.

    ``fraction`` is the annulus's share of the beam at each padded probe position (rows, cols).
    An ideal detector counts every electron (Poisson); its random numbers come from a stream of
    their own, so switching the HAADF image on leaves the 4D data unchanged.
    """
    o, extra = plan.optics, plan.extra
    image = _source_blur(fraction[..., None, None], plan, pad)[..., 0, 0].astype(np.float64)
    if o["electrons_per_pattern"] is not None:
        rng = np.random.default_rng(np.random.SeedSequence(o["seed"]).spawn(1)[0])
        image = rng.poisson(np.clip(image, 0, None) * o["electrons_per_pattern"])
    hs = require_hyperspy()
    axes = [dict(name=n, size=size, scale=plan.scan_step_nm, offset=0.0, units="nm",
                 navigate=False) for n, size in zip("yx", image.shape, strict=True)]
    sig = hs.signals.Signal2D(np.asarray(image, dtype=np.float32), axes=axes)
    sig.metadata.General.title = f"{plan.title}, HAADF"
    sig.metadata.set_item("Signal.quantity", "Counts (electrons)" if o["electrons_per_pattern"]
                          is not None else "Intensity (fraction of incident beam)")
    sig.metadata.set_item("Detector.inner_mrad", extra["haadf_inner_mrad"])
    sig.metadata.set_item("Detector.outer_mrad", extra["haadf_outer_mrad"])
    sig.metadata.set_item("Simulation.recipe", f"rrvae_nb.simulate.{plan.recipe}")
    sig.metadata.set_item("Simulation.parameters_json", json.dumps(plan.params, sort_keys=True))
    return sig


def _camera(array: np.ndarray, plan: _Plan, k_step: float, rng, progress: bool):
    """The camera: resampling (and turning), dose, point-spread, gain, read-out, binning.

    A scan row at a time to bound memory. Returns (scan y, scan x, ky, kx) float32 patterns,
    their step in mrad and whether they were digitised into whole detector units.
    """
    from tqdm.auto import tqdm

    o, extra = plan.optics, plan.extra
    ny, nx = plan.scan_gpts
    n_cam = array.shape[-1] if o["detector_px"] is None else o["detector_px"]
    b = o["detector_binning"]
    out = np.empty((ny, nx, n_cam // b, n_cam // b), dtype=np.float32)
    cam_step = k_step
    camera_work = o["detector_px"] is not None or o["electrons_per_pattern"] is not None
    psf = _camera_psf(extra)
    gain, read_noise = extra.get("camera_gain", 1.0), extra.get("read_noise", 0.0)
    digitise = gain != 1.0 or read_noise > 0 or psf is not None
    for row in tqdm(range(ny), desc="camera", leave=False,
                    disable=not (progress and camera_work)):
        block = array[row]
        if o["detector_px"] is not None:
            block, cam_step = _resample_patterns(block, k_step, n_cam, o["max_angle_mrad"],
                                                 extra.get("scan_rotation_deg", 0.0))
        if o["electrons_per_pattern"] is not None:
            block = rng.poisson(block.astype(np.float64) * o["electrons_per_pattern"])
        if psf is not None:  # each electron's signal spreads over neighbouring camera pixels
            from scipy.signal import fftconvolve

            block = fftconvolve(block, psf[None], mode="same", axes=(1, 2))
        if gain != 1.0:
            block = block * gain
        if read_noise > 0:  # per camera pixel, every read-out
            block = block + rng.normal(0.0, read_noise, size=block.shape)
        if b > 1:
            block = block.reshape(nx, n_cam // b, b, n_cam // b, b).sum(axis=(2, 4))
        if digitise:  # whole detector units, as the camera's digitiser gives them
            block = np.rint(block)
        out[row] = block
    return out, cam_step * b, digitise


def _describe(md, plan: _Plan, truth, digitise: bool, k_step: float, potential) -> None:
    """Write what was simulated, how, and the ground truth into the signal's metadata ``md``."""
    abtem, _ = _require_sim()
    counts = plan.optics["electrons_per_pattern"] is not None
    md.set_item("Signal.quantity", "Intensity (fraction of incident beam)" if not counts
                else "Detector units (dark-subtracted)" if digitise else "Counts (electrons)")
    md.set_item("Sample.elements", plan.elements)
    if plan.thickness_nm is not None:
        md.set_item("Sample.thickness_nm", float(plan.thickness_nm))
    for key, value in truth.to_dict().items():
        md.set_item(f"Sample.ground_truth.{key}", value)
    md.set_item("Simulation.recipe", f"rrvae_nb.simulate.{plan.recipe}")
    md.set_item("Simulation.parameters_json", json.dumps(plan.params, sort_keys=True))
    md.set_item("Simulation.abtem_version", str(abtem.__version__))
    md.set_item("Simulation.num_slices", int(potential.num_slices))
    md.set_item("Simulation.simulated_k_step_mrad", k_step)
    md.set_item("Simulation.wave_gpts", [int(g) for g in potential.gpts])


def ground_truth_of(signal) -> GroundTruth:
    """The ground truth of a simulated signal.

    Read from ``metadata.Sample.ground_truth`` (recipes of this module store it there, and it
    survives ``.hspy``); otherwise rebuilt with :func:`ground_truth_from_recipe` from the recipe
    and parameters recorded in ``metadata.Simulation`` or, for shipped data loaded by
    :func:`rrvae_nb.datasets.load` (e.g. ``.ndata1`` files), ``metadata.General.rrvae_nb``.

    Raises
    ------
    ValueError
        If the signal carries neither a ground truth nor a recipe (e.g. experimental data).
    """
    md = signal.metadata
    node = md.get_item("Sample.ground_truth", default=None)
    if node is not None:
        def get(key):
            value = node.get_item(key, default=None)
            return None if value is None else np.asarray(value)

        vac = get("vacancies_nm")
        return GroundTruth(
            positions_nm=get("positions_nm"), numbers=get("numbers"), is_defect=get("is_defect"),
            vacancies_nm=np.zeros((0, 2)) if vac is None else vac,
            probe_positions_nm=get("probe_positions_nm"),
        )
    for recipe_key, params_key in (("Simulation.recipe", "Simulation.parameters_json"),
                                   ("General.rrvae_nb.recipe", "General.rrvae_nb.params")):
        recipe = md.get_item(recipe_key, default=None)
        params = md.get_item(params_key, default=None)
        if recipe and params is not None:
            return ground_truth_from_recipe(recipe, params)
    raise ValueError(
        "This signal carries no ground truth (metadata.Sample.ground_truth) and no simulation "
        "recipe to rebuild it from: only data simulated by rrvae_nb.simulate have one. "
        "Experimental data have none."
    )


# --------------------------------------------------------------------------------------------
# Recipes (public)
# --------------------------------------------------------------------------------------------


def graphene(*args, progress: bool = True, **kwargs) -> Simulation:
    """Simulate a 4D-STEM scan of monolayer graphene, pristine or with point defects.

    One slice (infinite projection) of an ideal, unrelaxed graphene supercell under an
    aberration-free convergent probe; square diffraction pixels (abTEM ``resample="uniform"``).

    Parameters
    ----------
    defects : sequence of {"vacancy", "si"}
        ``()`` (pristine), ``("vacancy",)``, ``("si",)`` (a substitutional, 3-fold coordinated
        Si) or combinations such as ``("vacancy", "si")``. The first defect replaces the atom at
        the supercell centre, defect k the atom k x 0.426 nm further along +y.
    supercell : int or (int, int)
        Rectangular graphene cells (0.426 nm x 0.246 nm) along (y, x); default (4, 7), about
        1.7 nm x 1.7 nm. The diffraction pixel is wavelength / cell size (2.86 mrad here).
    energy_kev : float
        Beam energy (keV).
    convergence_mrad : float
        Probe convergence semi-angle (mrad).
    scan_center_nm : (float, float), optional
        Centre (y, x) of the scan window in supercell coordinates (nm); default: the centroid of
        the defects (the centre atom for pristine graphene).
    scan_extent_nm : float or (float, float)
        Size (y, x) of the scan window (nm); the last position is one step short of it.
    scan_gpts : int or (int, int)
        Probe positions (y, x); extent / gpts must give square steps.
    max_angle_mrad : float
        Half-width of the recorded patterns (mrad); patterns are square and odd-sized with 0 mrad
        at the centre pixel.
    detector_px : int, optional
        Resample the patterns (bilinear, electrons conserved) onto a camera of this many pixels
        spanning +/- ``max_angle_mrad``, zero angle at its geometric centre; default: keep the
        simulation's own pixels.
    detector_binning : int
        Sum b x b camera pixels after the dose is applied (needs ``detector_px``).
    sampling_nm : float
        Real-space sampling of wave function and potential (nm).
    electrons_per_pattern : float, optional
        Finite dose: Poisson counts for this many incident electrons per probe position (the
        counts of a pattern add up to this times the fraction scattered inside the detector).
        None: noise-free intensities, a fraction of the incident beam per pixel.
    source_size_nm : float
        Standard deviation (nm) of the Gaussian image of the source at the sample (partial
        spatial coherence; FWHM = 2.355 x this); 0 for a point source.
    jitter_nm : float
        Standard deviation (nm) of a random error of each probe position (scan noise); the true
        positions are in the ground truth.
    seed : int, optional
        Seed of the random numbers (jitter, dose): same seed, same data.
    optics, camera, scan : Optics, Camera, Scan, optional
        The same settings grouped (see the module docstring); the flat keywords above, when
        given, override their fields. Default: ``RECIPE_DEFAULTS["graphene"]``.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    Simulation
        ``.signal`` (scan y, scan x | ky, kx) in nm and mrad; ``.atoms`` the ground truth.

    Raises
    ------
    ValueError
        Unknown defects, non-positive sizes/energies/angles, non-square scan steps, a scan
        window outside the supercell, or a detector beyond the sampled angles.
    """
    return _simulate(_RECIPES["graphene"].plan(*args, **kwargs), progress)


def zincblende_110(*args, progress: bool = True, **kwargs) -> Simulation:
    """Simulate a 4D-STEM scan of a zincblende crystal seen along [110] (multislice).

    Along [110] zincblende shows "dumbbells": a cation and an anion column a / 4 apart along
    [001] (y here). In a thin crystal (<= 2 nm) the COM follows the projected electric field;
    in a thick one (about 5 nm) channelling breaks that picture: compare the two.

    Parameters
    ----------
    material : {"ZnS", "GaAs"}
        Crystal (lattice constants 0.541 nm and 0.5653 nm).
    thickness_nm : float
        Crystal thickness (nm), rounded to whole [110] repeats (a / sqrt 2, 0.383 nm for ZnS);
        the thickness used is stored in ``metadata.Sample.thickness_nm``.
    supercell : int or (int, int)
        Repeats of the (a, sqrt(2) a) cell along (y, x); default about 1.6 nm x 1.5 nm.
    energy_kev, convergence_mrad : float
        Beam energy (keV) and probe semi-angle (mrad).
    scan_center_nm : (float, float), optional
        Centre (y, x) of the scan window in supercell coordinates (nm); default: the midpoint of
        the dumbbell at the supercell centre.
    scan_extent_nm, scan_gpts, max_angle_mrad, detector_px, detector_binning :
        As in :func:`graphene`.
    sampling_nm : float
        Real-space sampling (nm); 0.008 nm keeps 60 mrad at 200 keV.
    slice_thickness_nm : float
        Multislice slice thickness (nm); the number of slices is stored in
        ``metadata.Simulation.num_slices``.
    frozen_phonons : int
        Average the patterns over this many frozen-phonon configurations (abTEM
        ``FrozenPhonons``: every atom displaced at random), which adds thermal diffuse
        scattering, the source of the incoherent high-angle (HAADF) signal; 0 (default): one
        static crystal, coherent scattering only. The time grows in proportion.
    phonon_sigma_nm : float
        Standard deviation (nm) of the displacement of every atom along each of x, y and z
        (the Debye-Waller B = 8 pi^2 sigma^2); default 0.0087 nm, B about 0.6 Å^2, near
        ZnS at room temperature.
    electrons_per_pattern, source_size_nm, jitter_nm, seed, progress :
        As in :func:`graphene`.
    optics, camera, scan : Optics, Camera, Scan, optional
        The same settings grouped (see the module docstring); the flat keywords above, when
        given, override their fields. Default: ``RECIPE_DEFAULTS["zincblende_110"]``.

    Returns
    -------
    Simulation
        Ground truth per atomic column (positions projected along the beam).

    Raises
    ------
    ValueError
        Unknown material, non-positive thickness/sizes/energies, a thickness below one [110]
        repeat, non-square scan steps, or a scan window outside the supercell.
    """
    return _simulate(_RECIPES["zincblende_110"].plan(*args, **kwargs), progress)


def hexagonal_bn(*args, progress: bool = True, **kwargs) -> Simulation:
    """Simulate a 4D-STEM scan of monolayer hexagonal boron nitride (hBN) with point defects.

    A material the book's chapters do not use: the package's defaults are tested on it (the
    chapters' settings were chosen on graphene and ZnS). Two sublattices of different atoms
    (B, Z = 5; N, Z = 7), lattice constant 0.2504 nm, 80 keV and 25 mrad by default (not the
    graphene recipes' 60 keV and 30 mrad). One slice (infinite projection), as for graphene.

    Parameters
    ----------
    defects : sequence of {"vacancy", "carbon"}
        ``"vacancy"`` removes a boron atom (V_B); ``"carbon"`` puts a carbon atom on a boron
        site (C_B). The first defect takes the boron atom at the supercell centre, defect k the
        boron atom k x 0.434 nm further along +y. Default: a vacancy and, 0.434 nm from it, a
        carbon substitution.
    supercell, scan_center_nm, scan_extent_nm, scan_gpts, max_angle_mrad, detector_px,
    detector_binning, sampling_nm, electrons_per_pattern, source_size_nm, jitter_nm, seed,
    progress :
        As in :func:`graphene` (rectangular cells of 0.434 nm x 0.250 nm along (y, x)).
    energy_kev, convergence_mrad : float
        Beam energy (keV) and probe semi-angle (mrad).
    optics, camera, scan : Optics, Camera, Scan, optional
        The same settings grouped (see the module docstring); the flat keywords above, when
        given, override their fields. Default: ``RECIPE_DEFAULTS["hexagonal_bn"]``.

    Returns
    -------
    Simulation
        ``.atoms.is_defect`` marks the carbon substituents, ``.atoms.vacancies_nm`` the removed
        boron sites.
    """
    return _simulate(_RECIPES["hexagonal_bn"].plan(*args, **kwargs), progress)


def emulate_graphene_experiment(*args, progress: bool = True, **kwargs) -> Simulation:
    """Graphene 4D-STEM data shaped like the paper's Nion UltraSTEM experiment.

    A ``scan_gpts`` x ``scan_gpts`` scan over ``fov_nm`` (64 x 64 over 1 nm by default) centred
    on the defect(s), recorded on a ``camera_px`` x ``camera_px`` camera spanning +/-
    ``camera_max_angle_mrad`` so that the 30 mrad bright-field disk fills most of it, with shot
    noise (Poisson counts), a finite Gaussian source and a random error of each probe position.

    What else a measurement has can be switched on (all off by default; ``data/make_data.py``
    sets the shipped values): residual probe aberrations, a camera turned against the scan, slow
    drift, and a camera model. The order is physical: the probe (with its aberrations) scatters;
    the source blurs across probe positions; each pattern lands on the turned camera; electrons
    arrive (Poisson); the camera's point-spread function spreads each one's signal; the gain
    turns it into detector units; read-out noise is added per camera pixel; pixels are binned;
    the result is digitised to whole units (dark-subtracted, so it can dip below zero).

    The patterns are simulated at the supercell's own angular sampling (1.4 mrad for the default
    3.4 nm cell) and resampled bilinearly onto the camera (0.28 mrad pixels by default): the
    camera's finer pixels add no information beyond the simulation's, as in a real camera whose
    pixels oversample the optics' transfer.

    Parameters
    ----------
    defects : sequence of {"vacancy", "si"}
        As in :func:`graphene`; ``("si",)`` is a substitutional, 3-fold coordinated Si dopant.
    supercell : int or (int, int)
        Rectangular graphene cells along (y, x); a larger cell samples the patterns more finely.
    scan_gpts : int
        Probe positions per side.
    fov_nm : float
        Field of view per side (nm).
    camera_px : int
        Camera pixels per side, before binning.
    camera_max_angle_mrad : float
        Camera half-width, centre to edge (mrad).
    camera_binning : int
        Sum b x b camera pixels after counting (patterns then have camera_px / b pixels a side).
    electrons_per_pattern : float
        Incident electrons per probe position.
    source_size_nm : float
        Gaussian sigma (nm) of the source image (partial spatial coherence).
    jitter_nm : float
        Standard deviation (nm) of the random probe-position error; the true positions are in
        ``atoms.probe_positions_nm``.
    scan_rotation_deg : float
        The camera turned against the scan (degrees): each pattern lands on it turned clockwise
        on screen by this angle, so :func:`rrvae_nb.com.find_rotation` should find it and
        ``com.apply_rotation(com_maps, scan_rotation_deg)`` undoes it. Needs ``camera_px``.
    defocus_nm, astigmatism_nm, astigmatism_angle_deg, coma_nm, coma_angle_deg : float
        Residual probe aberrations: defocus (nm, abTEM's sign, minus C10), 2-fold astigmatism
        C12 (nm) and axial coma C21 (nm), with their angles (degrees from the x axis).
    drift_nm, drift_quadratic_nm : (float, float)
        Slow drift (y, x): the probe positions move by ``drift_nm * t + drift_quadratic_nm *
        t**2`` nm, with t from 0 to 1 over the frame scanned row by row; the true positions are
        in ``atoms.probe_positions_nm``.
    camera_gain : float
        Detector units per electron (1 with no read noise and no PSF: exact electron counts).
    camera_psf_px, camera_psf_tail, camera_psf_tail_px : float
        The camera's point-spread function, in camera pixels (before binning): a Gaussian core of
        sigma ``camera_psf_px`` plus a fraction ``camera_psf_tail`` of each electron's signal in
        an exponential tail exp(-r / ``camera_psf_tail_px``).
    read_noise : float
        Standard deviation of the Gaussian read-out noise, detector units per camera pixel
        (binning b x b multiplies it by b per stored pixel).
    si_height_nm : float
        Height (nm) of each Si dopant above the carbon plane (0: flat; at most 0.25). A 3-fold
        Si buckles out of the plane; the structure is then cut into two slices so that the wave
        propagates this far between the carbon plane and the Si. At 60 keV and 30 mrad the
        probe's depth of field is about 10 nm, so 0.1 nm changes a pattern by a few tenths of a
        percent, far below the shot noise.
    haadf_inner_mrad, haadf_outer_mrad : float
        A high-angle annular dark-field detector recorded in the same run (both 0: none): the
        annulus from inner to outer angle (mrad), outside the camera's corners and within the
        angles the wave's sampling carries (162 mrad at 0.01 nm and 60 keV). The image, in
        electrons counted by an ideal detector (Poisson, at ``electrons_per_pattern``, from a
        random stream of its own so that the 4D data do not change), is ``Simulation.haadf``.
    energy_kev, convergence_mrad, sampling_nm, seed, progress :
        As in :func:`graphene`.
    optics, camera, scan : Optics, Camera, Scan, optional
        The same settings grouped (see the module docstring); the flat keywords above, when
        given, override their fields. Default: ``RECIPE_DEFAULTS["emulate_graphene_experiment"]``.

    Returns
    -------
    Simulation
        Electron counts per camera pixel (float32) or, with a gain, a PSF or read-out noise,
        whole detector units (``metadata.Signal.quantity`` says which); ground truth as in
        :func:`graphene`.
        Unbinned, the default result holds 64 x 64 x 256 x 256 values (1.1 GB); it takes about
        a minute on two cores.
        ``haadf``: the HAADF image (hyperspy Signal2D, (scan y, scan x) in nm) when an annulus was
        given, else None.
    """
    return _simulate(_RECIPES["emulate_graphene_experiment"].plan(*args, **kwargs), progress)


for _recipe in (graphene, zincblende_110, hexagonal_bn, emulate_graphene_experiment):
    _recipe.__signature__ = _RECIPES[_recipe.__name__].public_signature
del _recipe
