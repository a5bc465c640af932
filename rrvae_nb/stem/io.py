"""Reading and writing 4D-STEM files: ``.hspy``, Nion Swift ``.ndata1`` and anything hyperspy reads.

hyperspy and its file library rosettasciio read most microscope formats (``.hspy``, Merlin
``.mib``, dm3/dm4, EMD, ...). They have no reader for **Nion Swift** data, the format of the
experimental files of Oxley et al. (2021), so this module adds one, and a writer so that an
emulated experiment can be shipped in the same format as the real files.

Nion Swift formats
------------------
``.ndata1`` (Nion's export format) and ``.ndata`` (a file inside a Nion Swift library) are zip
archives holding two members:

``data.npy``
    The array, in NumPy's ``.npy`` format, axis order (scan y, scan x, ky, kx) for 4D-STEM and
    (y, x) for an image. Nion writes it uncompressed (zip "stored"), so it can be memory-mapped
    at its offset inside the zip: that is how ``lazy=True`` opens a 1 GB file without loading
    it (after one pass that checks its CRC-32, about 1 s per GB; ``verify_crc=False`` skips it).
``metadata.json``
    ``spatial_calibrations`` (export) or ``dimensional_calibrations`` (library): one
    ``{"offset", "scale", "units"}`` per array axis, with calibrated value
    ``offset + index * scale``; ``collection_dimension_count`` (scan axes) and
    ``datum_dimension_count`` (pattern axes); ``is_sequence``; ``intensity_calibration``;
    ``title``; ``datetime_modified`` / ``datetime_original`` (``local_datetime``, ``tz``,
    ``dst``); ``uuid``; and the free-form ``metadata`` tree (``metadata.instrument.high_tension``
    is the beam energy in volts; ``properties`` repeats ``metadata.hardware_source``).

Nion Swift's "Export raw NumPy" writes the same two things as ``name.npy`` + ``name.json``;
:func:`read_nion_npy` reads that pair.

Units: scan axes in nm (Å, pm, µm, m accepted), diffraction axes in mrad (rad, µrad, deg
accepted; 1/nm and 1/Å are converted to mrad with the electron wavelength when the beam energy is
known). An axis without units is uncalibrated: the readers then raise a ValueError that says
which keyword (``scan_step_nm`` or ``k_step_mrad``) supplies the missing calibration. There is no
silent default.
"""

from __future__ import annotations

import errno
import io as _stdio
import json
import math
import struct
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import core
from ._atomic import replace_atomically
from .signals import (
    HOW_TO_GET_A_SIGNAL,
    Calibration,
    _step_pair,
    calibration_of,
    make_signal,
    require_hyperspy,
)
from .units import (
    ANGLE_TO_MRAD,
    LENGTH_TO_NM,
    RECIPROCAL_TO_INV_NM,
    electron_wavelength_nm,
)

__all__ = [
    "load",
    "save",
    "write_hspy",
    "read_ndata1",
    "read_nion_npy",
    "write_ndata1",
    "ndata1_info",
    "NdataInfo",
    "electron_wavelength_nm",
]

#: Target size of one dask chunk when reading lazily, in bytes: the core's one budget.
LAZY_CHUNK_BYTES = core.BLOCK_BYTES

_NION_SUFFIXES = (".ndata1", ".ndata")

# Unit tables (one set for the package, in rrvae_nb.units).
_TO_NM = LENGTH_TO_NM
_TO_MRAD = ANGLE_TO_MRAD
_TO_INV_NM = RECIPROCAL_TO_INV_NM


# --------------------------------------------------------------------------------------------
# Generic entry points
# --------------------------------------------------------------------------------------------


def load(path, lazy: bool = False, **kwargs):
    """Load a 4D-STEM (or image) file, choosing the reader from the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        ``.ndata1`` / ``.ndata`` (Nion Swift, :func:`read_ndata1`); ``.npy`` with a Nion ``.json``
        sidecar (:func:`read_nion_npy`); anything else hyperspy/rosettasciio reads (``.hspy``,
        ``.mib``, ``.dm4``, ``.emd``, ``.npy`` without sidecar, ...).
    lazy : bool
        Return a dask-backed lazy signal instead of reading the data into memory.
    **kwargs
        Passed to the chosen reader (e.g. ``k_step_mrad=`` for Nion files without a diffraction
        calibration, or ``hyperspy.api.load`` keywords).

    Returns
    -------
    hyperspy signal
        For 4D-STEM: a ``Signal2D`` with axes (scan y, scan x | ky, kx). hyperspy may return a
        list for files that hold several signals.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    PermissionError
        If the file cannot be read (the message names the file; the operating system's error
        is kept as ``__cause__``).
    ValueError
        If no reader handles the suffix.
    OSError
        If the file is truncated or corrupt.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _NION_SUFFIXES:
            return read_ndata1(path, lazy=lazy, **kwargs)
        if suffix == ".npy" and path.with_suffix(".json").is_file():
            return read_nion_npy(path, lazy=lazy, **kwargs)
    except OSError as err:
        if err.errno is None:  # one of ours: it already says what to do
            raise
        raise _os_error(path, err) from err
    hs = require_hyperspy()
    from rsciio import IO_PLUGINS

    known = {ext.lower() for plugin in IO_PLUGINS for ext in plugin["file_extensions"]}
    if suffix.lstrip(".") not in known:
        raise ValueError(
            f"Cannot read {path.name}: no reader for the suffix {suffix!r}. Supported: Nion "
            "Swift .ndata1/.ndata/.npy+.json and the hyperspy/rosettasciio formats "
            f"({', '.join(sorted(known))}). Convert the file or rename it with its real suffix."
        )
    try:
        return hs.load(path, lazy=lazy, **kwargs)
    except OSError as err:
        if err.errno is not None and err.errno in _OS_ADVICE:  # permission, missing, ...
            raise _os_error(path, err) from err
        raise OSError(
            f"hyperspy could not read {path}: {err}. The file may be truncated or corrupt "
            "(an interrupted download or copy?); download or export it again."
        ) from err
    except Exception as err:
        raise OSError(
            f"hyperspy could not read {path}: {err}. The file may be truncated or corrupt "
            "(an interrupted download or copy?); download or export it again."
        ) from err


def save(path, signal, **kwargs) -> Path:
    """Write a signal, choosing the writer from the suffix (``.hspy`` or ``.ndata1``).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; ``.hspy`` uses :func:`write_hspy`, ``.ndata1`` uses :func:`write_ndata1`.
    signal : hyperspy signal
        The signal to write (eager or lazy).
    **kwargs
        Passed to the writer (e.g. ``compress=True`` for ``.ndata1``).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".hspy":
        return write_hspy(path, signal, **kwargs)
    if suffix == ".ndata1":
        return write_ndata1(path, signal, **kwargs)
    raise ValueError(
        f"save() writes .hspy and .ndata1; got {suffix!r}. Use signal.save() from hyperspy "
        "for other formats."
    )


def write_hspy(path, signal, **kwargs) -> Path:
    """Write a signal to ``.hspy`` (HDF5) atomically.

    The file is first written to a temporary name in the same folder and then renamed, so an
    interrupted write never leaves a half-written ``path`` behind (an existing file stays intact).

    Parameters
    ----------
    path : str or os.PathLike
        Destination ending in ``.hspy``.
    signal : hyperspy signal
        Eager or lazy; a lazy signal is written chunk by chunk.
    **kwargs
        Passed to ``signal.save`` (e.g. ``compression=None``).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    if path.suffix.lower() != ".hspy":
        raise ValueError(f"write_hspy writes .hspy files; got {path.name!r}. Use a .hspy name.")
    kwargs.setdefault("overwrite", True)
    return replace_atomically(path, lambda tmp: signal.save(tmp, **kwargs))


# --------------------------------------------------------------------------------------------
# Nion Swift: reading
# --------------------------------------------------------------------------------------------


class NdataInfo(NamedTuple):
    """What :func:`ndata1_info` finds in a Nion ``.ndata1`` / ``.ndata`` file.

    Attributes
    ----------
    metadata : dict
        The parsed ``metadata.json``.
    shape : tuple of int
        Shape of the array in ``data.npy``.
    dtype : numpy.dtype
        Its data type.
    fortran_order : bool
        Whether the array is stored column-major.
    compressed : bool
        True if ``data.npy`` is deflated (then it cannot be memory-mapped).
    data_offset : int
        Byte offset of the first array element in the file (meaningful when not compressed).
    """

    metadata: dict
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    compressed: bool
    data_offset: int


def _corrupt(path, what: str) -> OSError:
    return OSError(
        f"{path} is not a valid Nion Swift file: {what}. The file is truncated or corrupt (an "
        "interrupted download or copy?); download or export it again."
    )


def _read_npy_header(fp) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy version {version}")


def _decode_json(raw: bytes, path, member: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # Nion Swift has written its JSON as ISO-8859-1
        text = raw.decode("latin-1")
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise _corrupt(path, f"{member} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise _corrupt(path, f"{member} holds a {type(meta).__name__}, not a JSON object")
    return meta


def _check_file(path: Path) -> None:
    """Refuse a missing path or a folder with a message that says what to do."""
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in
                       (*_NION_SUFFIXES, ".hspy", ".npy") and p.is_file())[:3]
        hint = f" (it holds e.g. {', '.join(found)})" if found else ""
        raise IsADirectoryError(
            f"{path} is a folder, not a file: pass the path of one data file in it{hint}, "
            "e.g. rrvae_nb.io.load(folder / 'name.ndata1')."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"No such file: {path}. Check the spelling and the folder; a relative path is "
            f"resolved from the working folder {Path.cwd()}."
        )


_OS_ADVICE = {
    errno.EACCES: "You may not read it: check its permissions (e.g. `ls -l`, `chmod u+r`) or "
                  "copy it to a folder of yours.",
    errno.EPERM: "You may not read it: check its permissions (e.g. `ls -l`, `chmod u+r`) or "
                 "copy it to a folder of yours.",
    errno.ENOENT: "Check the spelling and the folder.",
    errno.EISDIR: "Pass the path of one data file, not a folder.",
    errno.EIO: "The disk or network share failed while reading: check it and try again.",
}


def _os_error(path, err: OSError) -> OSError:
    """``err`` (same type) with a message naming ``path`` and what to do; chain it with from."""
    advice = _OS_ADVICE.get(err.errno, "Check that the file is readable (disk, network share) "
                                       "and try again.")
    where = err.filename if err.filename not in (None, str(path)) else None
    what = err.strerror or str(err)
    return type(err)(f"Cannot read {path}{f' ({where})' if where else ''}: {what}. {advice}")


def _open_ndata(path) -> zipfile.ZipFile:
    path = Path(path)
    _check_file(path)
    try:
        zf = zipfile.ZipFile(path)
    except OSError as err:
        if err.errno in _OS_ADVICE:  # permission denied, vanished, ...
            raise _os_error(path, err) from err
        raise _corrupt(path, f"it is not a readable zip archive ({err})") from err
    except zipfile.BadZipFile as err:
        raise _corrupt(path, f"it is not a readable zip archive ({err})") from err
    names = zf.namelist()
    for member in ("metadata.json", "data.npy"):
        if member not in names:
            zf.close()
            raise _corrupt(
                path, f"the member {member!r} is missing (the archive holds {sorted(names)})"
            )
    return zf


def _verify_crc(path) -> None:
    """Read ``data.npy`` once through zipfile, which checks its CRC-32 at the end."""
    with _open_ndata(path) as zf, zf.open("data.npy") as member:
        try:
            while member.read(16 * 2**20):
                pass
        except (zipfile.BadZipFile, EOFError) as err:
            raise _corrupt(path, f"data.npy fails its check ({err})") from err


def ndata1_info(path) -> NdataInfo:
    """Read the metadata and the array header of a Nion ``.ndata1`` / ``.ndata`` file.

    Cheap (reads a few kB whatever the file size): use it to look inside a 1 GB file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    NdataInfo

    Raises
    ------
    OSError
        If the file is not a zip, a member is missing, or the members are inconsistent
        (truncated ``data.npy``, invalid JSON).
    """
    with _open_ndata(path) as zf:
        try:
            meta = _decode_json(zf.read("metadata.json"), path, "metadata.json")
        except zipfile.BadZipFile as err:
            raise _corrupt(path, f"metadata.json is damaged ({err})") from err
        info = zf.getinfo("data.npy")
        compressed = info.compress_type != zipfile.ZIP_STORED
        try:
            with zf.open(info) as member:
                shape, fortran_order, dtype = _read_npy_header(member)
                header_len = member.tell() if not compressed else None
        except (ValueError, zipfile.BadZipFile, EOFError) as err:
            raise _corrupt(
                path, f"data.npy does not start with a valid .npy header ({err})"
            ) from err
    data_offset = -1
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not compressed:
        # Locate the member's bytes: local header (30 bytes + name + extra) at header_offset.
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise _corrupt(path, "the local header of data.npy is damaged")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
        data_offset = info.header_offset + 30 + name_len + extra_len + header_len
        if info.file_size != header_len + expected_bytes:
            raise _corrupt(
                path,
                f"data.npy holds {info.file_size - header_len} bytes of data but its header "
                f"declares shape {shape} of {dtype} ({expected_bytes} bytes)",
            )
    return NdataInfo(meta, tuple(int(n) for n in shape), dtype, bool(fortran_order), compressed,
                     data_offset)


def read_ndata1(
    path,
    lazy: bool = False,
    *,
    scan_step_nm: float | tuple[float, float] | None = None,
    k_step_mrad: float | tuple[float, float] | None = None,
    energy_kev: float | None = None,
    convergence_mrad: float | None = None,
    verify_crc: bool = True,
):
    """Read a Nion Swift ``.ndata1`` (export) or ``.ndata`` (library) file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    lazy : bool
        If True, memory-map ``data.npy`` inside the zip and return a dask-backed lazy signal.
        Needs an uncompressed ("stored") member, which is what Nion Swift writes; a deflated
        member raises a ValueError that says how to proceed.
    scan_step_nm : float or (float, float), optional
        Probe step in nm, one number (square scan pixels) or a (y, x) pair; overrides the file's
        scan steps (needed when it has none). The file's scan offsets are kept, converted to the
        new step (offset in pixels x new step); an axis without a usable offset (uncalibrated,
        offset 0) starts at 0 nm.
    k_step_mrad : float or (float, float), optional
        Diffraction pixel size in mrad, one number or a (ky, kx) pair; overrides the file's
        diffraction steps (needed when the file has none, e.g. units "" or pixels). The file's
        offsets are kept in pixels, so k = 0 stays on the same camera pixel (offset in pixels x
        new step); an axis without a usable offset (uncalibrated, offset 0) gets k = 0 at the
        pattern centre, pixel (n - 1) / 2, so that ``centre="calibration"`` and
        ``origin="axes"`` measure from the middle of the camera, not from its corner.
    energy_kev : float, optional
        Beam energy in keV; overrides ``metadata.instrument.high_tension`` (volts).
    convergence_mrad : float, optional
        Probe convergence semi-angle in mrad (Nion files have no standard field for it; files
        written by :func:`write_ndata1` keep it in
        ``metadata.instrument.convergence_semiangle_mrad``).
    verify_crc : bool
        Check the zip CRC-32 of ``data.npy``. An eager read always checks it (it reads every byte
        anyway). A lazy read checks it once, at open, by reading the whole member: one
        sequential pass over the file, about 1 s per GB from a local SSD (longer from a network
        share or a hard disk), after which the file sits in the page cache and the first
        computation is faster. ``verify_crc=False`` makes a lazy open instant, but damaged bytes
        then go unnoticed.

    Returns
    -------
    hyperspy Signal2D (or LazySignal2D)
        4D-STEM data (``collection_dimension_count`` 2, ``datum_dimension_count`` 2) as
        (scan y, scan x | ky, kx) with scan axes in nm and diffraction axes in mrad, built by
        :func:`rrvae_nb.signals.make_signal`, with one step per axis as the file records them
        (rectangular pixels are read as they are); an image (0 + 2) as (| y, x) in nm. The full
        Nion metadata is kept in ``signal.original_metadata`` (and written back by
        :func:`write_ndata1`).

    Raises
    ------
    OSError
        Missing, unreadable or truncated file, missing member, CRC error.
    ValueError
        Unsupported dimension counts (sequences, line scans, spectra), calibrations
        inconsistent with the array shape, missing or unusable calibration (a zero, negative
        or non-finite step), lazy read of a compressed member.
    """
    path = Path(path)
    info = ndata1_info(path)
    meta = info.metadata
    _check_layout(path, meta, info.shape)
    if lazy:
        if info.compressed:
            gib = np.prod(info.shape, dtype=np.int64) * info.dtype.itemsize / 2**30
            raise ValueError(
                f"data.npy in {path.name} is compressed (deflated) and cannot be memory-mapped, "
                f"so lazy=True is impossible. Load it with lazy=False (needs {gib:.2f} GiB of "
                "memory), or re-save it uncompressed with write_ndata1(..., compress=False)."
            )
        if verify_crc:
            _verify_crc(path)
        mm = np.memmap(path, dtype=info.dtype, mode="r", offset=info.data_offset,
                       shape=info.shape, order="F" if info.fortran_order else "C")
        data = _as_dask(mm)
    else:
        with _open_ndata(path) as zf, zf.open("data.npy") as member:
            try:
                data = np.lib.format.read_array(member, allow_pickle=False)
            except (zipfile.BadZipFile, ValueError, EOFError) as err:
                raise _corrupt(path, f"data.npy cannot be read ({err})") from err
    return _signal_from_nion(path, data, meta, scan_step_nm=scan_step_nm,
                             k_step_mrad=k_step_mrad, energy_kev=energy_kev,
                             convergence_mrad=convergence_mrad)


def read_nion_npy(
    path,
    lazy: bool = False,
    *,
    scan_step_nm: float | tuple[float, float] | None = None,
    k_step_mrad: float | tuple[float, float] | None = None,
    energy_kev: float | None = None,
    convergence_mrad: float | None = None,
):
    """Read Nion Swift's raw NumPy export: ``name.npy`` with its ``name.json`` sidecar.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file; the metadata must sit next to it as ``.json`` (same stem).
    lazy : bool
        Memory-map the ``.npy`` and return a dask-backed lazy signal.
    scan_step_nm, k_step_mrad : float or (float, float), optional
        As in :func:`read_ndata1` (the file's offsets are kept, converted to the new steps).
    energy_kev, convergence_mrad : float, optional
        As in :func:`read_ndata1`.

    Returns
    -------
    hyperspy Signal2D (or LazySignal2D)
        As in :func:`read_ndata1`.
    """
    path = Path(path)
    _check_file(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise OSError(
            f"{path.name} has no metadata sidecar {sidecar.name} next to it, so its calibration "
            "is unknown. Copy the .json that Nion Swift exported with it into the same folder, "
            "or load the bare array with numpy.load and build the signal with "
            "rrvae_nb.signals.make_signal."
        )
    try:
        meta = _decode_json(sidecar.read_bytes(), sidecar, sidecar.name)
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as err:
        if err.errno is None:
            raise
        raise _os_error(err.filename or path, err) from err
    except ValueError as err:
        raise _corrupt(path, f"it is not a readable .npy array ({err})") from err
    _check_layout(path, meta, arr.shape)
    data = _as_dask(arr) if lazy else np.array(arr)
    return _signal_from_nion(path, data, meta, scan_step_nm=scan_step_nm,
                             k_step_mrad=k_step_mrad, energy_kev=energy_kev,
                             convergence_mrad=convergence_mrad)


def _as_dask(arr):
    """Wrap a (memory-mapped) array in dask, chunked along scan y with whole patterns."""
    import dask.array as da

    rows = core.block_rows(arr.shape, arr.dtype.itemsize, LAZY_CHUNK_BYTES)
    chunks = (rows,) + tuple(arr.shape[1:])
    return da.from_array(arr, chunks=chunks, name=False, asarray=False)


def _dimension_counts(meta: dict, ndim: int) -> tuple[int, int]:
    # Nion's own default when the counts are absent: 2 collection axes for 3D/4D data.
    collection = meta.get("collection_dimension_count")
    if collection is None:
        collection = 2 if ndim in (3, 4) else 0
    datum = meta.get("datum_dimension_count")
    if datum is None:
        datum = ndim - collection
    return int(collection), int(datum)


def _calibration_list(meta: dict):
    cals = meta.get("spatial_calibrations")
    if cals is None:
        cals = meta.get("dimensional_calibrations")
    return cals


def _check_layout(path, meta: dict, shape: tuple) -> None:
    """Check that the metadata describe an array of ``shape`` we can represent."""
    ndim = len(shape)
    if meta.get("is_sequence"):
        raise ValueError(
            f"{Path(path).name} holds a sequence (is_sequence=true, first axis = time); this "
            "reader handles single 4D-STEM datasets and images. Load the array with "
            "numpy and pick one frame, then build a signal with rrvae_nb.signals.make_signal."
        )
    collection, datum = _dimension_counts(meta, ndim)
    if (collection, datum) not in ((2, 2), (0, 2)) or collection + datum != ndim:
        raise ValueError(
            f"{Path(path).name} has collection_dimension_count={collection} and "
            f"datum_dimension_count={datum} for an array of shape {tuple(shape)}; this reader "
            "handles 4D-STEM (2 scan + 2 pattern axes) and images (0 + 2). A line scan "
            "(1 + 2) or spectrum image (2 + 1) needs reshaping first."
        )
    data_shape = meta.get("data_shape")
    if data_shape is not None and tuple(int(n) for n in data_shape) != tuple(shape):
        raise ValueError(
            f"{Path(path).name}: metadata.json says data_shape={list(data_shape)} but data.npy "
            f"has shape {tuple(shape)}; the metadata belong to another array. Re-export the file."
        )
    cals = _calibration_list(meta)
    if cals is not None and len(cals) != ndim:
        raise ValueError(
            f"{Path(path).name}: metadata.json lists {len(cals)} axis calibrations but data.npy "
            f"has {ndim} axes (shape {tuple(shape)}); the file is inconsistent. Re-export it, or "
            "pass scan_step_nm= and k_step_mrad= to calibrate it yourself."
        )


def _axis(cal) -> tuple[float, float, str]:
    """(offset, scale, units) of one Nion calibration dict; units '' when uncalibrated."""
    if not isinstance(cal, dict):
        return 0.0, 1.0, ""
    offset = float(cal.get("offset", 0.0) or 0.0)
    scale = float(cal.get("scale", 1.0) if cal.get("scale") is not None else 1.0)
    units = cal.get("units") or ""
    return offset, scale, str(units).strip()


def _beam_energy_kev(meta: dict) -> float | None:
    md = meta.get("metadata") or {}
    candidates = [
        (md.get("instrument") or {}).get("high_tension"),
        ((md.get("hardware_source") or {}).get("autostem") or {}).get("high_tension"),
        ((meta.get("properties") or {}).get("autostem") or {}).get("high_tension"),
    ]
    for volts in candidates:
        if isinstance(volts, (int, float)) and volts > 0:
            return float(volts) / 1e3
    return None


def _convergence_mrad(meta: dict) -> float | None:
    md = meta.get("metadata") or {}
    value = (md.get("instrument") or {}).get("convergence_semiangle_mrad")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


_UNCALIBRATED_UNITS = ("", "px", "pixel", "pixels")


def _file_step(path, kind: str, name: str, scale: float, units: str, keyword: str) -> None:
    """Refuse a zero, negative or non-finite step read from a file, naming the axis and fix."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"{Path(path).name}: the {kind} axis {name} has scale {scale!r} {units}, not a "
            f"positive step, so the file's calibration is unusable. Pass {keyword}= to "
            f"rrvae_nb.io.load (e.g. load(path, {keyword}=...)) to calibrate it yourself."
        )


def _pixel_offset(cal) -> float | None:
    """The file's offset of an axis in pixels (offset / scale), or None when it has none.

    An uncalibrated axis (no units, or pixels) with offset 0 has no usable offset.
    """
    if not isinstance(cal, dict):
        return None
    offset, scale, units = _axis(cal)
    if not (math.isfinite(offset) and math.isfinite(scale) and scale != 0):
        return None
    if units in _UNCALIBRATED_UNITS and offset == 0:
        return None
    return offset / scale


def _overridden(path, cals, override, keyword, axes, unit, shape, centre):
    """Steps from ``override`` and the file's offsets converted to them (see read_ndata1)."""
    steps = _step_pair(keyword, override, axes, unit,
                       f"Pass the step in {unit} (one number, or a ({axes[0]}, {axes[1]}) pair).")
    offsets = []
    for cal, step, n in zip(cals if cals else (None, None), steps, shape, strict=True):
        px = _pixel_offset(cal)
        if px is None:
            px = -(n - 1) / 2 if centre else 0.0
        offsets.append(px * step)
    return steps, tuple(offsets)


def _scan_axes_nm(path, cals, step_override, shape):
    """Scan steps and offsets in nm, (y, x)."""
    if step_override is not None:
        return _overridden(path, cals[:2] if cals else None, step_override, "scan_step_nm",
                           ("scan y", "scan x"), "nm", shape, centre=False)
    steps, offsets = [], []
    for name, cal in zip(("y", "x"), cals[:2] if cals else (None, None), strict=True):
        offset, scale, units = _axis(cal)
        if units not in _TO_NM:
            found = "no units" if not units else f"units {units!r}"
            raise ValueError(
                f"{Path(path).name}: the scan axis {name} has {found}, so the probe step is "
                "unknown. Pass scan_step_nm= (field of view in nm / number of scan positions), "
                "e.g. read_ndata1(path, scan_step_nm=1.0 / 64)."
            )
        _file_step(path, "scan", name, scale, units, "scan_step_nm")
        steps.append(scale * _TO_NM[units])
        offsets.append(offset * _TO_NM[units])
    return tuple(steps), tuple(offsets)


def _diffraction_axes_mrad(path, cals, step_override, energy_kev, shape):
    """Diffraction steps and offsets in mrad, (ky, kx)."""
    if step_override is not None:
        return _overridden(path, cals[2:4] if cals else None, step_override, "k_step_mrad",
                           ("ky", "kx"), "mrad", shape, centre=True)
    steps, offsets = [], []
    for name, cal in zip(("ky", "kx"), cals[2:4] if cals else (None, None), strict=True):
        offset, scale, units = _axis(cal)
        if units in _TO_MRAD:
            factor = _TO_MRAD[units]
        elif units in _TO_INV_NM:
            if energy_kev is None:
                raise ValueError(
                    f"{Path(path).name}: the diffraction axes are in {units}; converting them to "
                    "mrad needs the beam energy, which the file does not record. Pass "
                    "energy_kev= (e.g. 60) or k_step_mrad=."
                )
            # Small angles: theta [mrad] = wavelength [nm] * k [1/nm] * 1000.
            factor = _TO_INV_NM[units] * electron_wavelength_nm(energy_kev) * 1e3
        else:
            found = "no units" if not units else f"units {units!r}"
            raise ValueError(
                f"{Path(path).name}: the diffraction axis {name} has {found}, so the pixel size "
                "is unknown. Pass k_step_mrad= (the camera's angular pixel size in mrad, e.g. "
                "from a known convergence angle: semi-angle / bright-field disk radius in px)."
            )
        _file_step(path, "diffraction", name, scale, units, "k_step_mrad")
        steps.append(scale * factor)
        offsets.append(offset * factor)
    return tuple(steps), tuple(offsets)


def _signal_from_nion(path, data, meta, *, scan_step_nm, k_step_mrad, energy_kev,
                      convergence_mrad):
    path = Path(path)
    cals = _calibration_list(meta)
    collection, _ = _dimension_counts(meta, data.ndim)
    energy = energy_kev if energy_kev is not None else _beam_energy_kev(meta)
    conv = convergence_mrad if convergence_mrad is not None else _convergence_mrad(meta)
    title = str(meta.get("title") or path.stem)
    if collection == 2:
        scan_steps, scan_offsets = _scan_axes_nm(path, cals, scan_step_nm, data.shape[:2])
        k_steps, k_offsets = _diffraction_axes_mrad(path, cals, k_step_mrad, energy,
                                                    data.shape[2:])
        cal = Calibration(
            scan_steps_nm=scan_steps,
            k_steps_mrad=k_steps,
            scan_offset_nm=scan_offsets,
            k_offset_mrad=k_offsets,
            energy_kev=energy,
            convergence_mrad=conv,
        )
        sig = make_signal(data, cal, title=title)
    else:
        sig = _image_signal(path, data, cals, scan_step_nm, title, energy)
    sig.metadata.set_item("General.original_filename", path.name)
    sig.original_metadata.add_dictionary(meta)
    return sig


def _image_signal(path, data, cals, step_override, title, energy_kev):
    """A calibrated 2D image (y, x) in nm, e.g. the HAADF image recorded with a 4D dataset.

    signals.make_signal builds 4D-STEM signals only; an image needs just two nm axes.
    """
    hs = require_hyperspy()
    steps, offsets = _scan_axes_nm(path, cals, step_override, data.shape)
    axes = [
        dict(name=n, size=size, scale=step, offset=off, units="nm", navigate=False)
        for n, size, step, off in zip(("y", "x"), data.shape, steps, offsets, strict=True)
    ]
    sig = hs.signals.Signal2D(data, axes=axes)
    if not isinstance(data, np.ndarray):
        sig = sig.as_lazy()
    sig.metadata.General.title = title
    if energy_kev is not None:
        sig.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(energy_kev))
    return sig


# --------------------------------------------------------------------------------------------
# Nion Swift: writing
# --------------------------------------------------------------------------------------------


def _npy_header(shape: tuple, dtype: np.dtype) -> bytes:
    buf = _stdio.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": tuple(int(n) for n in shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # header too long for version 1.0
        buf = _stdio.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _nion_calibrations(signal) -> tuple[list[dict], int, float | None, float | None]:
    """Nion calibrations (array order), collection count, energy (keV), convergence (mrad)."""
    am = signal.axes_manager
    if am.signal_dimension != 2 or am.navigation_dimension not in (0, 2):
        raise ValueError(
            "write_ndata1 writes 4D-STEM signals (2 navigation + 2 signal axes) and images "
            f"(0 + 2); got {am.navigation_dimension} navigation and {am.signal_dimension} signal "
            f"axes. {HOW_TO_GET_A_SIGNAL}"
        )
    if am.navigation_dimension == 2:
        cal = calibration_of(signal)  # checks units and steps; one step per axis
        cals = [
            {"offset": cal.scan_offset_nm[0], "scale": cal.scan_steps_nm[0], "units": "nm"},
            {"offset": cal.scan_offset_nm[1], "scale": cal.scan_steps_nm[1], "units": "nm"},
            {"offset": cal.k_offset_mrad[0], "scale": cal.k_steps_mrad[0], "units": "mrad"},
            {"offset": cal.k_offset_mrad[1], "scale": cal.k_steps_mrad[1], "units": "mrad"},
        ]
        return cals, 2, cal.energy_kev, cal.convergence_mrad
    sig_x, sig_y = am.signal_axes  # hyperspy lists x first
    cals = []
    for ax in (sig_y, sig_x):
        units = str(ax.units).strip() if ax.units else ""
        if units not in _TO_NM:
            raise ValueError(
                f"Image axis {ax.name!r} has units {units!r}; write_ndata1 needs length units "
                "(nm, Å, pm, µm). Set signal.axes_manager[...].units and .scale first."
            )
        f = _TO_NM[units]
        cals.append({"offset": float(ax.offset) * f, "scale": float(ax.scale) * f, "units": "nm"})
    tem = signal.metadata.get_item("Acquisition_instrument.TEM", default=None)
    energy = None if tem is None else tem.get_item("beam_energy", default=None)
    return cals, 0, energy, None


def _json_safe(value):
    """A copy of ``value`` that json can write (numpy scalars and arrays become Python ones)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _nion_original(signal) -> dict:
    """The Nion ``metadata.json`` a signal was read from (its ``original_metadata``), or {}.

    :func:`read_ndata1` keeps the whole file metadata there; a signal from another reader (no
    Nion calibration list in it) gives {}.
    """
    om = getattr(signal, "original_metadata", None)
    if om is None:
        return {}
    d = om.as_dictionary()
    if not isinstance(d, dict) or not (
        "spatial_calibrations" in d or "dimensional_calibrations" in d
    ):
        return {}
    return _json_safe(d)


def _nion_datetime(ts: datetime) -> dict:
    ts = ts.astimezone(timezone.utc) if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return {"local_datetime": ts.replace(tzinfo=None).isoformat(timespec="microseconds"),
            "tz": "+0000", "dst": "+00"}


def write_ndata1(path, signal, compress: bool = False, *, timestamp: datetime | None = None
                 ) -> Path:
    """Write a 4D-STEM signal (or an image) as a Nion Swift ``.ndata1`` file.

    The layout follows Nion Swift's own export: a zip with ``metadata.json`` (calibrations in
    array order, one per axis, dimension counts, title, timestamps, uuid,
    ``metadata.instrument.high_tension`` in volts) and ``data.npy``. A signal read from a Nion
    file (:func:`read_ndata1`, which keeps the file's metadata in ``original_metadata``) keeps
    its metadata tree (``metadata``: instrument, hardware source, exposure, defocus, ...),
    ``properties``, ``intensity_calibration`` (e.g. units "counts") and, unless ``timestamp``
    is given, ``datetime_original``; the calibrations, shape, title, beam energy and
    convergence angle are always those of the signal.

    The file is written to a temporary name in the same folder and renamed when complete, so
    no half-written file is ever left behind. A lazy signal is streamed chunk by chunk (memory
    stays at one chunk).

    Parameters
    ----------
    path : str or os.PathLike
        Destination, usually ending in ``.ndata1``.
    signal : hyperspy Signal2D
        4D-STEM (scan y, scan x | ky, kx) with nm / mrad axes (checked with
        :func:`rrvae_nb.signals.calibration_of`; each axis keeps its own step), or a 2D image
        with length units. Eager or lazy.
    compress : bool
        Deflate ``data.npy``. Smaller for sparse/simulated data, but a compressed member cannot
        be memory-mapped (no ``lazy=True``), and Nion Swift's library loader expects stored
        members; keep the default (False) for files meant to behave like the real ones.
    timestamp : datetime, optional
        Acquisition/creation time written to ``datetime_original``/``datetime_modified`` and to
        the zip entries; default: now (and the source file's ``datetime_original`` for a signal
        read from a Nion file). Pass a fixed value for byte-identical reruns.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If the signal's dimensionality or units are unsupported, or a step is not positive.
    """
    path = Path(path)
    data = signal.data
    shape = tuple(int(n) for n in data.shape)
    dtype = np.dtype(data.dtype)
    if dtype.hasobject:
        raise ValueError("Cannot write an object array to .ndata1; convert to a numeric dtype.")
    ts = timestamp or datetime.now(timezone.utc)
    meta = _ndata1_metadata(signal, path.stem, shape, dtype, ts,
                            keep_original_time=timestamp is None)
    date_time = ts.astimezone(timezone.utc).timetuple()[:6] if ts.tzinfo else ts.timetuple()[:6]
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    return replace_atomically(
        path, lambda tmp: _write_ndata1_zip(tmp, meta, data, dtype, date_time, method, path.name))


def _ndata1_metadata(signal, default_title: str, shape, dtype, ts: datetime, *,
                     keep_original_time: bool) -> dict:
    """Nion Swift's ``metadata.json`` for ``signal`` (see :func:`write_ndata1`)."""
    cals, collection, energy_kev, conv_mrad = _nion_calibrations(signal)
    title = str(signal.metadata.get_item("General.title", default="") or default_title)
    original = _nion_original(signal)
    tree = original.get("metadata") if isinstance(original.get("metadata"), dict) else {}
    tree = dict(tree)
    instrument: dict[str, Any] = dict(tree.get("instrument") or {})
    if energy_kev is not None:
        instrument["high_tension"] = float(energy_kev) * 1e3  # volts, as Nion Swift records it
    if conv_mrad is not None:
        instrument["convergence_semiangle_mrad"] = float(conv_mrad)  # not a Nion field
    tree["instrument"] = instrument
    tree.setdefault("hardware_source", {})
    intensity = {"offset": 0.0, "scale": 1.0, "units": ""}
    if isinstance(original.get("intensity_calibration"), dict):
        intensity.update(original["intensity_calibration"])
    when = _nion_datetime(ts)
    first = when
    if keep_original_time and isinstance(original.get("datetime_original"), dict):
        first = original["datetime_original"]  # the acquisition time of the source file
    return {
        "version": 1,
        "reader_version": 1,
        "title": title,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL,
                               f"rrvae-nb:{title}:{when['local_datetime']}:{shape}")),
        "data_shape": list(shape),
        "data_dtype": dtype.str,
        "is_sequence": False,
        "collection_dimension_count": collection,
        "datum_dimension_count": 2,
        "spatial_calibrations": cals,
        "intensity_calibration": intensity,
        "metadata": tree,
        "properties": dict(original.get("properties") or {}),
        "datetime_modified": when,
        "datetime_original": dict(first),
        "writer": "rrvae_nb.io.write_ndata1",
    }


def _write_ndata1_zip(tmp: Path, meta: dict, data, dtype, date_time, method, name: str) -> None:
    """The zip itself: metadata.json, then data.npy streamed block by block (Nion's order)."""
    from tqdm.auto import tqdm

    shape = tuple(int(n) for n in data.shape)
    header = _npy_header(shape, dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    lazy = not isinstance(data, np.ndarray)
    rows = core.block_rows(shape, dtype.itemsize, LAZY_CHUNK_BYTES)
    with zipfile.ZipFile(tmp, "w") as zf:
        mi = zipfile.ZipInfo("metadata.json", date_time=date_time)
        mi.compress_type = method
        zf.writestr(mi, json.dumps(meta, indent=1).encode("utf-8"))
        di = zipfile.ZipInfo("data.npy", date_time=date_time)
        di.compress_type = method
        di.file_size = len(header) + nbytes  # lets zipfile decide on ZIP64 up front
        with zf.open(di, "w") as fp:
            fp.write(header)
            with tqdm(total=nbytes, unit="B", unit_scale=True, disable=nbytes < 2**27,
                      desc=f"writing {name}") as bar:
                for start in range(0, shape[0], rows):
                    block = data[start:start + rows]
                    block = np.ascontiguousarray(block.compute() if lazy else block, dtype=dtype)
                    fp.write(memoryview(block).cast("B"))
                    bar.update(block.nbytes)
