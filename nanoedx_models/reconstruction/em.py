"""Tomographic reconstruction of a tilt series: EM (MLEM, as in the paper) and SIRT.

Both use the same ASTRA strip-projector matrix as the generator (DESIGN.md's axis convention),
applied to all y-slices at once as one sparse x dense product: no GPU is needed, and ASTRA's
CUDA code, which kills the process on a machine without a GPU, is never entered.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.simulate.project import check_angles, forward_matrix, system_matrix

METHODS = ("em", "sirt")
# non-zeros per voxel and angle of the strip projector's matrix (about 2; measured <= 2.9)
NNZ_PER_VOXEL = 3
# y-slices per block of the SciPy path: blocks are shared among the threads in turn (at 128^3
# and 256^3, 32 to 128 slices per block time alike within this machine's noise, and batching
# many volumes' slices as columns gained nothing; the result does not depend on it)
BLOCK_SLICES = 64


def available_memory() -> int | None:
    """Bytes of memory this process can still use (within its cgroup's limit), or None."""
    found = []
    try:
        text = Path("/proc/meminfo").read_text()
        found += [int(line.split()[1]) * 1024 for line in text.splitlines()
                  if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except OSError:
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse work that needs more than the available memory, before it starts.

    Raises :class:`ConfigError` naming ``what``, the bytes needed and available, and ``fix``.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise ConfigError(f"{what} needs about {nbytes / 2**30:.3g} GiB of memory, but only "
                          f"{free / 2**30:.3g} GiB are available; {fix}")


def reconstruction_bytes(n_angles: int, rows: int, cols: int) -> float:
    """Estimated peak memory (bytes) of :func:`reconstruct` for (angle, row, col) data.

    The volume (``cols**2 * rows`` float32) is held about four times (the iterate, the back
    projection, a product, the data), and the system matrix and its transpose store about
    ``NNZ_PER_VOXEL`` entries (value and index) per voxel of a slice and angle.
    """
    volume = 4.0 * cols * cols * rows
    matrix = 2 * NNZ_PER_VOXEL * n_angles * cols * cols * (4 + 8)
    return 4 * volume + 3 * 4.0 * n_angles * rows * cols + matrix


def _divide(a, b):
    """``a / b`` where ``b > 0``, else 0 (``b`` broadcasts against ``a``); numpy or torch."""
    if isinstance(a, np.ndarray):
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    return (a / b).where(b > 0, 0.0)


def _to_torch(a, device):
    """A scipy CSR matrix or a numpy array as a torch tensor on ``device``."""
    import torch

    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                   torch.from_numpy(a.indices.astype(np.int64)),
                                   torch.from_numpy(a.data), size=a.shape, device=device)


@lru_cache(maxsize=16)  # the folds of an alignment or a 3D hold-out use a few angle sets
def _operators(n: int, angles: tuple[float, ...]):
    """The projector's operators for (size, angles), built once: the forward projector (float32
    CSR), the back projector normalized by each voxel's weight (``W^T`` with row ``j`` divided
    by ``sum_i W_ij``, zero where a voxel meets no ray), and the column and row sums."""
    w = system_matrix(n, angles).astype(np.float32)
    col = np.asarray(w.sum(axis=0)).ravel()
    inv = np.divide(1.0, col, out=np.zeros_like(col), where=col > 0).astype(np.float32)
    back = (scipy.sparse.diags(inv) @ w.T).tocsr()
    return w, back, col[:, None], np.asarray(w.sum(axis=1)).ravel()[:, None]


def reconstruct(series, angles, iterations: int = 15, method: str = "em",
                progress: bool = False, device: str | None = None,
                threads: int | None = None) -> np.ndarray:
    """Reconstruct a volume from a tilt series.

    Parameters
    ----------
    series : array-like, shape (angle, row, col)
        Projections (counts or line integrals), non-negative for EM; rows run along the tilt
        axis y, columns along x at 0 deg.
    angles : sequence of float
        Tilt angles in degrees, one per projection.
    iterations : int
        Iterations (15 in the paper).
    method : {"em", "sirt"}
        MLEM started from ones (multiplicative, keeps positivity), or SIRT started from zeros
        with negatives clipped after each step.
    progress : bool
        Show a progress bar.
    device : str, optional
        None: SciPy sparse products on the CPU. ``"cuda"`` (or ``"cpu"``): the same iterations
        with torch sparse CSR tensors on that device.
    threads : int, optional
        Threads of the SciPy path (blocks of y-slices in parallel; the result does not depend
        on it); default: the cores this process may use.

    Returns
    -------
    ndarray, shape (col, row, col), float32
        The volume (z, y, x) on the grid of DESIGN.md; its sum matches the mean projection sum.
    """
    b = np.asarray(series, dtype=np.float64)
    if b.ndim != 3:
        raise ConfigError(f"a tilt series must be (angle, row, col), got shape {b.shape}")
    ang = check_angles(angles)
    if len(ang) != b.shape[0]:
        raise ConfigError(f"{len(ang)} angles for {b.shape[0]} projections; give one angle per "
                          "projection")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    if not np.all(np.isfinite(b)):
        raise ConfigError("the tilt series holds NaN or infinite values")
    if method == "em" and np.any(b < 0):
        raise ConfigError("EM needs non-negative data (counts); use method='sirt' or clip")
    n_ang, n_y, n = b.shape
    if device is None or device == "cpu":
        check_memory(reconstruction_bytes(n_ang, n_y, n), f"reconstructing {n_ang} maps of "
                     f"{n_y} x {n} pixels as a {n} x {n_y} x {n} volume",
                     "bin the maps (e.g. 2 x 2) or crop them first")
    angles_key = tuple(float(a) for a in ang)
    ops = _operators(n, angles_key)
    data = b.transpose(0, 2, 1).reshape(n_ang * n, n_y).astype(np.float32)  # (angle * u, y)
    x = np.full((n * n, n_y), 1.0 if method == "em" else 0.0, np.float32)
    bar = tqdm(total=iterations, desc=f"{method} ", disable=not progress, leave=False)
    if device is not None:
        from ..device import pick_device

        dev = pick_device(device)
        x = _iterate(*(_to_torch(a, dev) for a in (*ops, data, x)), iterations, method,
                     bar.update).cpu().numpy()
    else:  # the y-slices are independent problems: threads take blocks of them in turn
        workers = max(1, min(threads or _threads(), n_y))
        blocks = np.array_split(np.arange(n_y), max(workers, -(-n_y // BLOCK_SLICES)))
        share = 1.0 / len(blocks)  # of an iteration, on the bar
        forward = forward_matrix(n, angles_key)
        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda k: _iterate(forward, *ops[1:],
                                               np.ascontiguousarray(data[:, k]),
                                               np.ascontiguousarray(x[:, k]), iterations,
                                               method, lambda _: bar.update(share)),
                            blocks)
            x = np.concatenate(list(done), axis=1)
    bar.close()
    return np.ascontiguousarray(x.reshape(n, n, n_y).transpose(0, 2, 1))


def _threads() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _iterate(w, back, col_sums, row_sums, data, x, iterations: int, method: str, tick=None):
    """EM or SIRT iterations on one block of y-slices (numpy or torch operands); ``back`` is
    the normalized back projector of :func:`_operators`."""
    in_place = isinstance(x, np.ndarray)
    for _ in range(iterations):
        if method == "em" and in_place:  # the same arithmetic, without temporaries
            p = w @ x
            np.divide(data, p, out=p, where=p > 0)  # p >= 0: where it is 0 it stays 0
            x *= back @ p
        elif method == "em":
            x = x * (back @ _divide(data, w @ x))
        else:
            x = (x + back @ _divide(data - w @ x, row_sums)).clip(0)
        if tick is not None:
            tick(1)
    return x


def reproject(volume, angles) -> np.ndarray:
    """Projections of a volume (z, y, x) with ``z`` and ``x`` of one size and any ``y``, on the
    grid of DESIGN.md (as :func:`reconstruct` models them): (angle, y, x), float32."""
    v = np.asarray(volume, np.float32)
    if v.ndim != 3 or v.shape[0] != v.shape[2]:
        raise ConfigError(f"a volume must be (z, y, x) with z and x of one size, got {v.shape}")
    n, n_y = v.shape[0], v.shape[1]
    ang = tuple(float(a) for a in check_angles(angles))
    w = _operators(n, ang)[0]
    sino = w @ v.transpose(0, 2, 1).reshape(n * n, n_y)  # (angle * u, y)
    return np.ascontiguousarray(sino.reshape(len(ang), n, n_y).transpose(0, 2, 1))
