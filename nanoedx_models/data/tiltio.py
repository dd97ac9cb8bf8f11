"""Read and write a user's tilt series and volumes: TIFF, NPY, HDF5 and HyperSpy files.

A tilt series is held as a :class:`Series`: counts of shape (element, angle, row, col), the
element names, the tilt angles when the file has them, and the file's metadata. Rows run along
the tilt axis (y), columns along x at 0 deg (DESIGN.md). Formats, chosen by the file extension:

* ``.tif``/``.tiff`` -- a multi-page TIFF (tifffile); angles and element names travel in the
  JSON image description that tifffile writes and reads back;
* ``.npy`` -- a plain array (no metadata);
* ``.h5``/``.hdf5``/``.nc`` with an optional dataset path, ``file.h5:/group/data`` -- attributes
  ``angles``, ``elements`` and ``metadata`` (JSON) next to the data;
* ``.hspy``, ``.emd`` (Velox), ``.bcf`` (Bruker) -- read through RosettaSciIO (the ``hyperspy``
  extra): maps stacked along a tilt axis, one signal per element (its title), or one signal
  with an ``element`` navigation axis (as written here), with the tilt angles from the
  navigation axis in degrees and the pixel size from the signal axes.

Writers cover the first three and ``.hspy`` (through HyperSpy, the ``hyperspy`` extra): a
``Signal2D`` whose navigation axes are the tilt angles (in degrees; a non-uniform axis when the
steps differ) and, for several elements, an ``element`` axis (names in
``metadata.Sample.elements``), and whose signal axes carry the pixel size and units of the
input when it had them (``metadata["pixel_size"]``); a volume (z, y, x) is a ``Signal2D``
navigated along z. HyperSpy, tomviz and napari users open them directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nanoedx_dataset.generation.config import parse_angles
from nanoedx_dataset.errors import ConfigError, MissingExtraError, NanoEDXError
from nanoedx_dataset.store.files import atomic_output

TIFF = (".tif", ".tiff")
HDF5 = (".h5", ".hdf5", ".nc")
NPY = (".npy",)
HYPERSPY = {".hspy": "hspy", ".emd": "emd", ".bcf": "bruker"}
HSPY = (".hspy",)  # the HyperSpy format that is written too
WRITABLE = TIFF + HDF5 + NPY + HSPY
ELEMENT_AXIS = "element"
DEFAULT_DATASET = "/data"


@dataclass
class Series:
    """Count maps of one or more elements: ``data`` (element, angle, row, col)."""

    data: np.ndarray
    elements: list[str]
    angles: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    format: str = "npy"

    def __post_init__(self):
        if self.data.ndim != 4:
            raise ConfigError(f"internal: Series data must be 4-D, got {self.data.shape}")
        if len(self.elements) != self.data.shape[0]:
            raise ConfigError(f"{len(self.elements)} element names for {self.data.shape[0]} "
                              "elements")
        if self.angles is not None and len(self.angles) != self.data.shape[1]:
            raise ConfigError(f"{len(self.angles)} angles for {self.data.shape[1]} maps: give "
                              "one angle per map (--angles)")


def split_path(text) -> tuple[Path, str | None]:
    """``file.h5:/group/data`` -> (Path("file.h5"), "/group/data"); no dataset -> None."""
    text = str(text)
    head, sep, tail = text.rpartition(":")
    if sep and tail.startswith("/") and Path(head).suffix.lower() in HDF5:
        return Path(head), tail
    return Path(text), None


def file_format(path: Path) -> str:
    """The format family of a path by its extension; an unknown one is an error."""
    suffix = path.suffix.lower()
    for name, suffixes in (("tiff", TIFF), ("hdf5", HDF5), ("npy", NPY)):
        if suffix in suffixes:
            return name
    if suffix in HYPERSPY:
        return "hyperspy"
    raise ConfigError(f"unknown file format {path.name!r}: use .tif/.tiff, .npy, .h5/.hdf5 "
                      f"(file.h5:/path/to/data) or a HyperSpy file ({', '.join(HYPERSPY)})")


def _as_stack(data: np.ndarray, where: str) -> np.ndarray:
    """(angle, row, col) -> (1, angle, row, col); 4-D passes; any other rank is an error."""
    data = np.asarray(data)
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        return data
    raise ConfigError(f"{where}: a tilt series must be (angle, row, col) or (element, angle, "
                      f"row, col); got shape {data.shape}. A single map needs a leading axis "
                      "of length 1")


def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
    meta.pop("shape", None)
    return data, meta


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, dict]:
    import h5py

    with h5py.File(path, "r") as f:
        if dataset is None:
            found = []
            f.visititems(lambda name, obj: found.append(name)
                         if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) else None)
            if len(found) != 1:
                raise ConfigError(f"{path.name} holds {len(found)} datasets of rank 3 or 4 "
                                  f"({', '.join(found) or 'none'}): name one as "
                                  f"{path.name}:/path/to/data")
            dataset = found[0]
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise ConfigError(f"{path.name} has no dataset {dataset!r}")
        d = f[dataset]
        meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.attrs.items()}
        data = d[()]
    if isinstance(meta.get("metadata"), (str, bytes)):
        meta["metadata"] = json.loads(meta["metadata"])
    if not isinstance(meta.get("metadata", {}), dict):
        meta["metadata"] = {"metadata": meta["metadata"]}
    return data, meta


def hyperspy_import(module: str, what: str):
    """Import ``module`` of the ``hyperspy`` extra (HyperSpy, exspy, RosettaSciIO), or raise
    :class:`MissingExtraError`: ``what`` needs it, and the install that gives it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = {"hyperspy": "HyperSpy", "exspy": "exspy",
                   "rsciio": "RosettaSciIO"}[module.partition(".")[0]]
        raise MissingExtraError(f"{what} needs {package}: "
                                'pip install "nanoedx[hyperspy]"') from err


def _hyperspy_signals(path: Path) -> list[dict]:
    plugin = hyperspy_import(f"rsciio.{HYPERSPY[path.suffix.lower()]}", f"reading {path.name}")
    return plugin.file_reader(str(path))


def _axis_values(axis: dict) -> np.ndarray:
    if "axis" in axis:
        return np.asarray(axis["axis"], float)
    return axis.get("offset", 0.0) + axis.get("scale", 1.0) * np.arange(axis["size"])


def _named_elements(signal: dict) -> tuple[int, list[str]] | None:
    """The index of an ``element`` navigation axis and its names (metadata.Sample.elements)."""
    names = signal["metadata"].get("Sample", {}).get("elements")
    for k, a in enumerate(signal["axes"]):
        if (a.get("name") == ELEMENT_AXIS and a.get("navigate", False)
                and isinstance(names, list) and len(names) == np.shape(signal["data"])[k]):
            return k, [str(n) for n in names]
    return None


def _read_hyperspy(path: Path, element: str | None) -> tuple[np.ndarray, dict]:
    """Maps (angle, row, col), or (element, angle, row, col) from a signal with an ``element``
    axis, of a HyperSpy file: the signal titled ``element``, or holding it on that axis."""
    signals = [s for s in _hyperspy_signals(path)
               if not any(str(a.get("units", "")).lower() in ("kev", "ev")
                          for a in s["axes"] if not a.get("navigate", True))]
    titles = [str(s["metadata"].get("General", {}).get("title", "")) for s in signals]
    if element is not None:
        keep = [t == element or element in (_named_elements(s) or (0, []))[1]
                for s, t in zip(signals, titles)]
        signals = [s for s, k in zip(signals, keep) if k]
    if len(signals) != 1:
        raise ConfigError(f"{path.name}: {len(signals)} stacks of maps match "
                          f"{'element ' + repr(element) if element else 'the file'} (maps in "
                          f"the file: {', '.join(titles) or 'none'}); choose one with --element. "
                          "Spectrum images need elemental maps first: nanoedx maps")
    s = signals[0]
    data = np.asarray(s["data"])
    axes = list(s["axes"])
    meta = {"title": str(s["metadata"].get("General", {}).get("title", "")),
            "metadata": json.loads(json.dumps(s["metadata"], default=str))}
    own = meta["metadata"].get("nanoedx", {}).get("metadata")
    if isinstance(own, str):  # written here: the series' own metadata, as it was
        meta["metadata"] = json.loads(own)
    found = _named_elements(s)
    if found is not None:
        k, names = found
        data, axes = np.moveaxis(data, k, 0), [axes[k]] + axes[:k] + axes[k + 1:]
        if element is not None and element != meta["title"]:
            data, names = data[names.index(element)], [element]
        meta["elements"], meta["title"] = names, None
    elif element is not None:
        meta["title"] = element
    nav = [a for a in axes if a.get("navigate", False) and a.get("name") != ELEMENT_AXIS]
    if len(nav) == 1 and str(nav[0].get("units", "")).lower() in ("deg", "degree", "degrees",
                                                                   "°"):
        meta["angles"] = _axis_values(nav[0]).tolist()
    pixel = [a for a in axes if not a.get("navigate", True)]
    if len(pixel) == 2 and str(pixel[0].get("units", "")) not in ("", "<undefined>"):
        meta["metadata"]["pixel_size"] = {"scale": float(pixel[0].get("scale", 1.0)),
                                          "units": str(pixel[0]["units"])}
    return data, meta


def read_array(text, element: str | None = None) -> tuple[np.ndarray, dict]:
    """The array and attributes of one file (any supported format), e.g. a written volume.

    A file that cannot be read as its extension says (damaged, truncated, another format,
    pickled objects in a ``.npy``) raises :class:`ConfigError` naming it.
    """
    path, dataset = split_path(text)
    fmt = file_format(path)
    if not path.is_file():
        raise ConfigError(f"no input file {path}")
    try:
        if fmt == "tiff":
            return _read_tiff(path)
        if fmt == "hdf5":
            return _read_hdf5(path, dataset)
        if fmt == "npy":
            return np.load(path, allow_pickle=False), {}
        return _read_hyperspy(path, element)
    except NanoEDXError:
        raise
    except (OSError, ValueError, KeyError, EOFError, TypeError, IndexError) as err:
        raise ConfigError(f"cannot read {path.name} as {fmt.upper()} ({type(err).__name__}: "
                          f"{_first_line(err)}): the file is damaged or not a {fmt.upper()} "
                          "file; export it again") from err


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _numbers(values, what: str) -> np.ndarray:
    """``values`` as a 1-D float array of finite numbers; ``what`` names them in the error."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} are not numbers ({_first_line(err)}); give the tilt angles "
                          "in degrees with --angles") from err
    if out.ndim != 1 or not np.all(np.isfinite(out)):
        raise ConfigError(f"{what} must be a list of finite numbers, got "
                          f"{np.array2string(out, threshold=6)}; give them with --angles")
    return out


def read_one(text, element: str | None = None) -> Series:
    """Read one file (any supported format) as a :class:`Series`."""
    path, _ = split_path(text)
    fmt = file_format(path)
    data, meta = read_array(text, element)
    stack = _as_stack(data, path.name)
    if stack.dtype.kind not in "uif":
        raise ConfigError(f"{path.name} holds {stack.dtype} values, not real numbers: give "
                          "count maps (integers or floats)")
    names = meta.get("elements") or ([meta["title"]] if meta.get("title") else None)
    if not isinstance(names, (list, tuple)) or len(names) != stack.shape[0]:
        names = [path.stem] if stack.shape[0] == 1 else [str(i) for i in range(stack.shape[0])]
    angles = meta.get("angles")
    series = Series(stack, [str(n) for n in names],
                    None if angles is None else _numbers(angles, f"the angles in {path.name}"),
                    meta.get("metadata") or {}, "hdf5" if fmt == "hyperspy" else fmt)
    if element is not None and fmt != "hyperspy" and len(names) == 1:
        series.elements = [element]
    elif element is not None and fmt != "hyperspy":
        if element not in series.elements:
            raise ConfigError(f"{path.name} has elements {', '.join(series.elements)}; "
                              f"no {element!r}")
        k = series.elements.index(element)
        series = Series(stack[k : k + 1], [element], series.angles, series.metadata, fmt)
    return series


def read_series(inputs, elements=None, angles=None) -> Series:
    """Read one file, or one file per element, into a single :class:`Series`.

    Parameters
    ----------
    inputs : path or list of paths
        One file (one element, or an element axis first), or one file per element.
    elements : list of str, optional
        Element names: one per input file (names the files' maps), or one name that selects
        an element (or a HyperSpy signal) of a single input.
    angles : str, path or sequence of float, optional
        ``START:STOP:STEP``, a text/NPY file of angles, or the angles; overrides the file's.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise ConfigError("no input file given")
    if elements is not None and len(inputs) > 1 and len(elements) != len(inputs):
        raise ConfigError(f"{len(elements)} element names for {len(inputs)} input files: give "
                          "one name per file (--element Au,Ag)")
    one_file_per_name = (len(inputs) == 1 and elements is not None and len(elements) > 1
                         and file_format(split_path(inputs[0])[0]) == "hyperspy")
    if one_file_per_name:  # several maps of one HyperSpy file, chosen by title
        inputs = inputs * len(elements)
    if len(inputs) == 1:
        series = read_one(inputs[0], elements[0] if elements and len(elements) == 1 else None)
        if elements is not None and len(elements) > 1:
            if len(elements) != len(series.elements):
                raise ConfigError(f"{len(elements)} element names for the "
                                  f"{len(series.elements)} elements of {inputs[0]}")
            series.elements = list(elements)
    else:
        parts = [read_one(p, elements[i] if elements else None) for i, p in enumerate(inputs)]
        shapes = {p.data.shape[1:] for p in parts}
        if any(p.data.shape[0] != 1 for p in parts) or len(shapes) != 1:
            raise ConfigError("one file per element: each must hold one (angle, row, col) "
                              f"series of the same shape; got {[p.data.shape for p in parts]}")
        found = [p.angles for p in parts if p.angles is not None]
        if any(not np.allclose(a, found[0]) for a in found):
            raise ConfigError("the input files disagree on the tilt angles")
        series = Series(np.concatenate([p.data for p in parts]),
                        elements or [p.elements[0] for p in parts],
                        found[0] if found else None, parts[0].metadata, parts[0].format)
    if angles is not None:  # checked against the maps by Series
        series = replace(series, angles=read_angles(angles))
    return series


def read_angles(spec) -> np.ndarray:
    """Angles from ``START:STOP:STEP``, ``a,b,c``, a text or ``.npy`` file, or a sequence."""
    if not isinstance(spec, (str, Path)):
        return _numbers(spec, "the angles")
    path = Path(spec)
    if path.is_file():
        try:
            values = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                      else path.read_text().replace(",", " ").split())
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(f"cannot read the angles file {path.name} ({_first_line(err)}): "
                              "give a text file of numbers or a .npy array") from err
        values = _numbers(np.ravel(values) if path.suffix == ".npy" else values,
                          f"the angles in {path.name}")
        return np.asarray(parse_angles(",".join(repr(float(v)) for v in values)))
    return np.asarray(parse_angles(str(spec)))


def check_output(text) -> str:
    """The format of an output path, checked before any work: writable kind, folder exists."""
    path, _ = split_path(text)
    fmt = file_format(path)
    if fmt == "hyperspy" and path.suffix.lower() not in HSPY:
        raise ConfigError(f"cannot write {path.name}: write .hspy, .tif, .npy or .h5")
    if fmt == "hyperspy":
        hyperspy_import("hyperspy.api", f"writing {path.name}")  # before any work
    if not path.parent.is_dir():
        raise ConfigError(f"no folder {path.parent} for the output {path.name}")
    return fmt


def write_array(text, data: np.ndarray, attrs: dict | None = None) -> Path:
    """Write an array by the extension of ``text`` (atomically), with attributes if possible.

    ``attrs`` (angles, elements, dims, metadata) go into the TIFF description or HDF5
    attributes; a ``.npy`` keeps only the array.
    """
    path, dataset = split_path(text)
    fmt = check_output(text)
    attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
    with atomic_output(path) as tmp:
        if fmt == "hyperspy":
            _write_hspy(tmp, data, attrs, path)
        elif fmt == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data)
        elif fmt == "tiff":
            import tifffile

            tifffile.imwrite(tmp, data, metadata=_jsonable(attrs))
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                d = f.create_dataset(dataset or DEFAULT_DATASET, data=data, compression="gzip")
                for k, v in _jsonable(attrs).items():
                    d.attrs[k] = json.dumps(v) if isinstance(v, dict) else v
    return path


def _hspy_axes(data: np.ndarray, attrs: dict) -> list[dict]:
    """HyperSpy axes of an array by its ``dims``: the last two are the signal (pixels)."""
    dims = str(attrs.get("dims") or "").split(",")
    if len(dims) != data.ndim:
        dims = [f"axis{k}" for k in range(data.ndim - 2)] + ["y", "x"]
    meta = attrs.get("metadata") if isinstance(attrs.get("metadata"), dict) else {}
    pixel = meta.get("pixel_size") or {}
    scale, units = float(pixel.get("scale", 1.0)), str(pixel.get("units", "px"))
    angles = attrs.get("angles", attrs.get("tilt_angles"))
    axes = []
    for k, (name, n) in enumerate(zip(dims, data.shape)):
        if k >= data.ndim - 2 or name == "z":  # pixels, or voxels along z
            axes.append({"name": {"row": "y", "col": "x"}.get(name, name), "size": n,
                         "offset": 0.0, "scale": scale, "units": units,
                         "navigate": k < data.ndim - 2})
        elif name == "angle" and angles is not None and len(angles) == n:
            a = np.asarray(angles, float)
            steps = np.diff(a)
            uniform = n > 1 and np.allclose(steps, steps[0])
            axes.append({"name": "tilt", "units": "deg", "navigate": True, "size": n,
                         "offset": float(a[0]), "scale": float(steps[0])} if uniform else
                        {"name": "tilt", "units": "deg", "navigate": True, "axis": a})
        else:
            axes.append({"name": ELEMENT_AXIS if name == "element" else name, "size": n,
                         "offset": 0.0, "scale": 1.0, "units": "", "navigate": True})
    return axes


def _write_hspy(tmp: Path, data: np.ndarray, attrs: dict, path: Path) -> None:
    """A HyperSpy Signal2D of ``data`` (module docstring), written to ``tmp``."""
    hs = hyperspy_import("hyperspy.api", f"writing {path.name}")
    elements = list(attrs.get("elements") or [])
    extra = {k: v for k, v in attrs.items() if k not in ("elements", "metadata")}
    metadata = {"General": {"title": ",".join(elements) or path.stem},
                "nanoedx": _jsonable(extra)}
    if elements:
        metadata["Sample"] = {"elements": elements}
    if isinstance(attrs.get("metadata"), dict):
        metadata["nanoedx"]["metadata"] = json.dumps(_jsonable(attrs["metadata"]))
    signal = hs.signals.Signal2D(np.asarray(data), axes=_hspy_axes(np.asarray(data), attrs),
                                 metadata=metadata)
    signal.save(tmp, file_format="HSPY", overwrite=True)


def _jsonable(attrs: dict) -> dict:
    return json.loads(json.dumps(attrs, default=lambda o: np.asarray(o).tolist()))


def write_series(text, series: Series, squeeze: bool = True) -> Path:
    """Write a series; one element is written as (angle, row, col) when ``squeeze``."""
    data = series.data[0] if squeeze and series.data.shape[0] == 1 else series.data
    return write_array(text, data, {"elements": series.elements, "angles": series.angles,
                                    "dims": _axes(data.ndim, "angle,row,col"),
                                    "metadata": series.metadata or None})


def _axes(ndim: int, names: str) -> str:
    return names if ndim == 3 else "element," + names
