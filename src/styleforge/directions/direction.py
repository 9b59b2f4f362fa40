"""The :class:`Direction` type: a latent direction in W (one vector) or W+ (one vector per layer), the layers it
applies to, where it came from and what is known about it; read from the ``.npy`` files people share, written as
``.npz`` with JSON metadata; applied to latents, swept over strengths, and conditioned on other directions.

File formats:

- ``.npy`` (read only): [w_dim] or [1, w_dim] (an InterFaceGAN boundary), [num_ws, w_dim] or [1, num_ws, w_dim]
  (e.g. the age/gender/smile files of the StyleGAN encoder notebooks, [18, 512], identical rows). One direction.
- ``.npz`` (read and written): ``vectors`` [K, w_dim] or [K, num_ws, w_dim] float32, and ``meta``, a JSON string:
  ``{"format": "styleforge.directions", "version": 1, "directions": [{"name", "origin", "layers", "scale", ...}],
  ...}``. One or more directions (SeFa and GANSpace write one per factor). Nothing in either file is executed:
  both are read with ``allow_pickle=False``.

A direction moves a latent by ``strength * scale * vector`` in the layers it applies to (``scale`` is 1 for unit
normals, a component's standard deviation for GANSpace, so its strengths count standard deviations). Offsets
are relative: strength 0 is the input itself.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..utils.fileio import atomic_path
from ..utils.runtime import parse_int_list

PathLike = Union[str, os.PathLike]
FORMAT = "styleforge.directions"
VERSION = 1
Layers = Optional[Tuple[int, ...]]


@dataclass
class Direction:
    """A direction in W (``vector`` [w_dim]) or W+ (``vector`` [num_ws, w_dim]).

    ``layers``: the latent layers (ws indices) it applies to by default (None: all); ``origin``: how it was made
    (``file``, ``svm``, ``sefa``, ``ganspace``, ``conditional``); ``scale``: the length of one unit of strength;
    ``meta``: anything else worth keeping (accuracies, eigenvalue, standard deviation, the network...), JSON."""

    vector: np.ndarray
    layers: Layers = None
    name: str = ""
    origin: str = "file"
    scale: float = 1.0
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        v = np.asarray(self.vector, dtype=np.float32)
        if v.ndim not in (1, 2) or v.size == 0:
            raise StyleforgeError(f"direction {self.name!r}: shape {list(v.shape)}; expected [w_dim] or "
                                  "[num_ws, w_dim]", param="direction")
        if not np.isfinite(v).all():
            raise StyleforgeError(f"direction {self.name!r} holds NaN or infinite values; re-create it",
                                  param="direction")
        if not np.any(v):
            raise StyleforgeError(f"direction {self.name!r} is all zeros", param="direction")
        self.vector = v
        if self.layers is not None:
            self.layers = tuple(int(i) for i in self.layers)

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def per_layer(self) -> bool:
        """Whether it holds one vector per layer (W+)."""
        return self.vector.ndim == 2

    def unit(self) -> "Direction":
        """The same direction with unit L2 norm (over all its values)."""
        return replace(self, vector=self.vector / np.linalg.norm(self.vector.astype(np.float64)))

    def for_network(self, num_ws: int, w_dim: int, source: str = "") -> np.ndarray:
        """The direction as [num_ws, w_dim] for a network, with a one-line error when it does not fit (another
        network's direction). A per-layer direction with identical rows fits any number of layers."""
        where = f"{source}: " if source else ""
        if self.w_dim != w_dim:
            raise StyleforgeError(f"{where}the direction is {self.w_dim} wide, this network's w_dim is {w_dim}: "
                                  "it was made for another network", param="direction")
        v = self.vector
        if v.ndim == 1:
            return np.broadcast_to(v, (num_ws, w_dim)).copy()
        if v.shape[0] == num_ws:
            return v.copy()
        if np.array_equal(v, np.broadcast_to(v[:1], v.shape)):  # the same w in every layer: any depth fits
            return np.broadcast_to(v[0], (num_ws, w_dim)).copy()
        raise StyleforgeError(f"{where}the direction has {v.shape[0]} layers that differ, this network has "
                              f"{num_ws}: it was made for another network", param="direction")

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "layers": None if self.layers is None else list(self.layers),
                "scale": float(self.scale), **self.meta}


def parse_layers(spec: Union[None, str, Sequence[int]], num_ws: int, param: str = "layers") -> Tuple[int, ...]:
    """Latent layers (ws indices) from ``all``/None, ``a-b`` (inclusive), ``a,b,c`` or a mix (``0-1,6``), checked
    against the network's ``num_ws``."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return tuple(range(num_ws))
    if isinstance(spec, str):
        idx = list(parse_int_list(spec, what=param))
    else:
        idx = [int(i) for i in spec]
    if not idx:
        raise StyleforgeError("no layers given; use all, a-b or a,b,c", param=param)
    bad = [i for i in idx if not 0 <= i < num_ws]
    if bad:
        shown = spec if isinstance(spec, str) else ",".join(map(str, idx))
        raise StyleforgeError(f"layer {bad[0]} is outside this network's layers 0-{num_ws - 1} (num_ws {num_ws}); "
                              f"use all or a range within 0-{num_ws - 1}", param=param, value=shown)
    return tuple(sorted(set(idx)))


def layers_text(layers: Layers, num_ws: Optional[int] = None) -> str:
    """``(0, 1, 2, 5)`` -> ``0-2,5``; None or every layer -> ``all``."""
    if layers is None or (num_ws is not None and tuple(layers) == tuple(range(num_ws))):
        return "all"
    out, run = [], []
    for i in sorted(layers):
        if run and i != run[-1] + 1:
            out.append(run)
            run = []
        run.append(i)
    out.append(run)
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in out)


# ---------------------------------------------------------------------------------------------------------------------
# Files

def save_directions(path: PathLike, directions: Sequence[Direction], **info: Any) -> Path:
    """Write one or more directions of the same shape to an ``.npz`` (``vectors`` + JSON ``meta``), atomically.
    ``info``: file-level metadata (the network, the method's settings)."""
    directions = list(directions)
    if not directions:
        raise ValueError("no directions to save")
    shapes = {d.vector.shape for d in directions}
    if len(shapes) != 1:
        raise ValueError(f"directions of different shapes cannot share a file: {sorted(shapes)}")
    meta = {"format": FORMAT, "version": VERSION, **info, "directions": [d.to_json() for d in directions]}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, vectors=np.stack([d.vector for d in directions]).astype(np.float32),
                     meta=np.array(json.dumps(meta)))
    return path


def _read_array(path: Path) -> Tuple[np.ndarray, Optional[dict]]:
    if not path.is_file():
        raise StyleforgeError(f"{path}: no such direction file (.npy or .npz)", param="direction")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as data:
            if "vectors" not in data or "meta" not in data:
                raise StyleforgeError(f"{path}: not a direction file (it holds {sorted(data.keys())}; expected "
                                      "'vectors' and 'meta' as written by styleforge, or a .npy array)",
                                      param="direction")
            return np.asarray(data["vectors"]), json.loads(str(data["meta"]))
    except StyleforgeError:
        raise
    except Exception as e:  # ValueError (a pickled object array), OSError, zipfile errors, bad JSON
        raise StyleforgeError(f"{path}: not a readable direction file ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})", param="direction") from None


def load_directions(path: PathLike) -> List[Direction]:
    """Every direction in ``path`` (an ``.npy``: one; a styleforge ``.npz``: one or more)."""
    path = Path(path)
    arr, meta = _read_array(path)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise StyleforgeError(f"{path}: holds {arr.dtype} values, not numbers", param="direction")
    if meta is None:  # .npy
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        elif arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim not in (1, 2):
            raise StyleforgeError(f"{path}: shape {list(arr.shape)}; a direction is [w_dim] or [num_ws, w_dim]",
                                  param="direction")
        return [Direction(arr, name=path.stem, origin="file", meta={"source": str(path)})]
    if meta.get("format") != FORMAT:
        raise StyleforgeError(f"{path}: its metadata is not styleforge's direction format", param="direction")
    entries = meta.get("directions") or []
    if arr.ndim not in (2, 3) or len(entries) != len(arr):
        raise StyleforgeError(f"{path}: {len(arr)} vectors but {len(entries)} metadata entries; re-create it",
                              param="direction")
    out = []
    for vec, e in zip(arr, entries):
        e = dict(e)
        layers = e.pop("layers", None)
        out.append(Direction(vec, layers=None if layers is None else tuple(layers), name=e.pop("name", ""),
                             origin=e.pop("origin", "file"), scale=float(e.pop("scale", 1.0)), meta=e))
    return out


_PICK = re.compile(r"^(.*\.np[yz]):([^:/\\]+)$", re.IGNORECASE)


def load_direction(spec: PathLike) -> Direction:
    """One direction from ``FILE`` or ``FILE:K`` / ``FILE:name`` (a file holding several: the K-th, from 0, or the
    one of that name; without a pick the first, with a warning)."""
    spec = os.fspath(spec)
    pick = None
    m = _PICK.match(spec)
    if m and not Path(spec).exists():
        spec, pick = m.group(1), m.group(2)
    dirs = load_directions(spec)
    if pick is None:
        if len(dirs) > 1:
            warnings.warn(f"{spec} holds {len(dirs)} directions; using the first ({dirs[0].name}); pick another "
                          f"with {spec}:K")
        return dirs[0]
    names = [d.name for d in dirs]
    if pick in names:
        return dirs[names.index(pick)]
    if pick.isdigit() and int(pick) < len(dirs):
        return dirs[int(pick)]
    raise StyleforgeError(f"{spec} has no direction {pick!r}: it holds {len(dirs)} (0-{len(dirs) - 1}: "
                          f"{', '.join(names[:8])}{'...' if len(names) > 8 else ''})", param="direction")


# ---------------------------------------------------------------------------------------------------------------------
# Applying

ArrayLike = Union[np.ndarray, torch.Tensor]


def _offset(direction: Direction, num_ws: int, w_dim: int, layers: Union[None, str, Sequence[int]]) -> np.ndarray:
    """[num_ws, w_dim]: ``scale * vector`` in the chosen layers (given, else the direction's own, else all), 0
    elsewhere."""
    vec = direction.for_network(num_ws, w_dim)
    chosen = parse_layers(layers if layers is not None else direction.layers, num_ws)
    mask = np.zeros((num_ws, 1), dtype=np.float32)
    mask[list(chosen)] = 1
    return (vec * mask * np.float32(direction.scale)).astype(np.float32)


def _check_ws(ws: ArrayLike) -> Tuple[int, int]:
    if ws.ndim != 3:
        raise StyleforgeError(f"latents have shape {list(ws.shape)}; expected [N, num_ws, w_dim]")
    return int(ws.shape[1]), int(ws.shape[2])


def apply(ws: ArrayLike, direction: Direction, strength: float, layers: Union[None, str, Sequence[int]] = None
          ) -> ArrayLike:
    """``ws`` [N, num_ws, w_dim] (numpy or torch) moved by ``strength`` along ``direction`` in ``layers`` (default:
    the direction's layers, else all); the same type back."""
    return sweep(ws, direction, [strength], layers)[:, 0]


def sweep(ws: ArrayLike, direction: Direction, strengths: Sequence[float],
          layers: Union[None, str, Sequence[int]] = None) -> ArrayLike:
    """[N, S, num_ws, w_dim]: every latent of ``ws`` at every strength (see :func:`apply`)."""
    num_ws, w_dim = _check_ws(ws)
    off = _offset(direction, num_ws, w_dim, layers)
    s = np.asarray(list(strengths), dtype=np.float32)
    if not np.isfinite(s).all():
        raise StyleforgeError("strengths must be finite numbers", param="strengths", value=list(strengths))
    if isinstance(ws, torch.Tensor):
        off_t = torch.from_numpy(off).to(ws)
        s_t = torch.from_numpy(s).to(ws)
        return ws[:, None] + s_t[None, :, None, None] * off_t[None, None]
    ws = np.asarray(ws, dtype=np.float32)
    return ws[:, None] + s[None, :, None, None] * off[None, None]


def score(ws: ArrayLike, direction: Direction) -> np.ndarray:
    """Signed distance of each latent along the (unit) direction: ``w . n`` averaged over the layers for a W
    direction (for a W latent, its w), ``sum_l w_l . n_l`` for a W+ one."""
    num_ws, w_dim = _check_ws(ws)
    w = (ws.detach().cpu().numpy() if isinstance(ws, torch.Tensor) else np.asarray(ws)).astype(np.float64)
    n = direction.unit()
    if not n.per_layer:
        return w.mean(axis=1) @ n.vector.astype(np.float64)
    return np.einsum("nld,ld->n", w, n.for_network(num_ws, w_dim).astype(np.float64))


def condition(primal: Direction, conditions: Sequence[Direction]) -> Direction:
    """InterFaceGAN's conditional manipulation: ``primal`` with its components along ``conditions`` removed, unit
    length, so that moving along it leaves every condition's score unchanged ("age, gender fixed"). Closed form
    for one or two conditions, a linear solve for more. A W direction and a W+ one combine per layer."""
    conditions = list(conditions)
    if not conditions:
        return primal
    layers = next((d.vector.shape[0] for d in [primal] + conditions if d.per_layer), None)

    def flat(d: Direction) -> np.ndarray:
        v = d.vector.astype(np.float64)
        if layers is not None:
            v = d.for_network(layers, primal.w_dim, source=d.name or "condition")
        return v.reshape(-1) / np.linalg.norm(v)

    for c in conditions:
        if c.w_dim != primal.w_dim:
            raise StyleforgeError(f"condition {c.name!r} is {c.w_dim} wide, the direction {primal.w_dim}",
                                  param="conditions")
    p = flat(primal)
    C = np.stack([flat(c) for c in conditions])  # [K, D], unit rows
    if len(C) == 1:
        q = p - (p @ C[0]) * C[0]
    elif len(C) == 2:
        c12 = C[0] @ C[1]
        p1, p2 = p @ C[0], p @ C[1]
        den = 1 - c12 ** 2 + 1e-8
        q = p - (p1 - c12 * p2) / den * C[0] - (p2 - c12 * p1) / den * C[1]
    else:
        coef = np.linalg.lstsq(C @ C.T, C @ p, rcond=None)[0]
        q = p - coef @ C
    norm = np.linalg.norm(q)
    if norm < 1e-6:
        raise StyleforgeError(f"the direction {primal.name!r} lies in the span of its conditions: nothing is left "
                              "after projecting them out", param="conditions")
    shape = (layers, primal.w_dim) if layers is not None else (primal.w_dim,)
    names = [c.name for c in conditions]
    return Direction((q / norm).reshape(shape), layers=primal.layers, name=f"{primal.name}|{','.join(names)}",
                     origin="conditional", scale=primal.scale,
                     meta={**primal.meta, "primal": primal.name, "conditions": names})
