"""CLIP weight files read as tensors only: nothing in them is executed.

Three formats, told apart by content:

- **safetensors** (open_clip's ``open_clip_model.safetensors``, or any ``state_dict`` saved so): read with
  ``safetensors``;
- **torch zip archives**: ``torch.save`` files (open_clip's ``.bin``/``.pt`` checkpoints, a ``state_dict`` at the
  top or under ``state_dict``, keys optionally prefixed ``module.``) and **TorchScript archives** (OpenAI's
  ``ViT-B-32.pt``). Both keep their object tree in ``<archive>/data.pkl`` and every tensor's bytes in
  ``<archive>/data/<key>``. The pickle is decoded by a restricted unpickler (styleforge's safe base,
  :mod:`styleforge.networks.official`): only tensor rebuilding, storages, ``OrderedDict`` and TorchScript's list
  helpers resolve; a TorchScript module (``__torch__.*`` class) becomes a plain record of its attributes, so its
  code (``<archive>/code/``) is never compiled or run, and ``torch.jit.load`` is never called. Any other global
  is refused by name. A tensor view that would reach outside its storage is refused too.

:func:`read_state_dict` returns ``{name: tensor}`` (float tensors as stored: OpenAI's file is partly float16) and
a short description of the format.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ...errors import NetworkFormatError, StyleforgeError, UnsafePickleError
from ...networks.official import _STORAGE_DTYPES, _SafeUnpicklerBase, one_line

__all__ = ["read_state_dict", "WeightsFormatError"]

MAX_DEPTH = 64


class WeightsFormatError(StyleforgeError):
    """A CLIP weights file that cannot be read (or is refused)."""


class _ScriptObject:
    """A TorchScript object (a module) as data: its class name and its attributes, nothing callable."""

    def __init__(self):
        self.class_name = ""
        self.attrs: Dict[str, Any] = {}


class _Storage:
    def __init__(self, data: torch.Tensor):
        self.data = data  # flat, typed


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise NetworkFormatError("a tensor record does not point at a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or len(size) > 8 or any(s < 0 for s in size + stride) or int(offset) < 0:
        raise NetworkFormatError("a tensor record has a bad shape or stride")
    numel = storage.data.numel()
    if all(size):
        last = int(offset) + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= numel:
            raise NetworkFormatError("a tensor record reaches past the end of its storage")
    return storage.data.as_strided(size, stride, int(offset)).clone()


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    if not isinstance(data, torch.Tensor):
        raise NetworkFormatError("a parameter record does not hold a tensor")
    return data


def _same(value, *rest):
    return value


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _same,
    ("torch.jit._pickle", "build_doublelist"): _same,
    ("torch.jit._pickle", "build_boollist"): _same,
    ("torch.jit._pickle", "build_tensorlist"): _same,
    ("torch.jit._pickle", "build_strlist"): _same,
    ("torch.jit._pickle", "restore_type_tag"): _same,
}


class _ArchiveUnpickler(_SafeUnpicklerBase):
    dispatch = dict(_SafeUnpicklerBase.dispatch)

    def __init__(self, f, zf: zipfile.ZipFile, prefix: str):
        super().__init__(f)
        self.zf, self.prefix = zf, prefix
        self.storages: Dict[str, _Storage] = {}

    def resolve(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return ("storage-type", name)
        if module.startswith("__torch__"):
            return _ScriptClass(f"{module}.{name}")
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise UnsafePickleError(f"refusing global {one_line(repr(module + '.' + name))} in a weights file "
                                    "(only tensors and module records are read)")
        return fn

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], tuple)
                and pid[1][0] == "storage-type"):
            raise NetworkFormatError("unexpected persistent id in a weights file")
        dtype = _STORAGE_DTYPES[pid[1][1]]
        key, numel = str(pid[2]), int(pid[4])
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                raw = bytearray(self.zf.read(name))
            except KeyError:
                raise NetworkFormatError(f"the archive has no tensor data {one_line(name)}") from None
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise NetworkFormatError(f"tensor data {one_line(name)} is truncated")
            data = torch.frombuffer(raw, dtype=dtype, count=numel) if numel else torch.zeros(0, dtype=dtype)
            self.storages[key] = _Storage(data)
        return self.storages[key]

    def load_build(self):
        state = self.stack[-1]
        inst = self.stack[-2] if len(self.stack) > 1 else None
        if isinstance(inst, _ScriptObject):
            self.stack.pop()
            if not isinstance(state, dict):
                raise NetworkFormatError(f"{one_line(inst.class_name)}: its state is not a dict of attributes")
            inst.attrs = dict(state)
            return
        if isinstance(inst, collections.OrderedDict) and isinstance(state, dict):
            self.stack.pop()  # a state_dict's ``_metadata`` (module versions): not needed, not set
            return
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_newobj(self):
        self.stack.pop()  # the constructor arguments (TorchScript passes none)
        cls = self.stack.pop()
        if not isinstance(cls, _ScriptClass):
            raise UnsafePickleError(f"refusing to construct a {one_line(type(cls).__name__)} object")
        obj = _ScriptObject()
        obj.class_name = cls.name
        self.append(obj)

    dispatch[pickle.NEWOBJ[0]] = load_newobj


class _ScriptClass:
    """Stand-in for a TorchScript class: NEWOBJ on it makes a :class:`_ScriptObject`; calling it is refused."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refusing to call {one_line(self.name)} in a weights file")


def _flatten(obj, prefix: str = "", depth: int = 0, out=None) -> Dict[str, torch.Tensor]:
    """Every tensor under ``obj`` (dicts and TorchScript module records) by dotted name."""
    out = {} if out is None else out
    if depth > MAX_DEPTH:
        raise NetworkFormatError("the weights are nested too deeply")
    items = obj.attrs.items() if isinstance(obj, _ScriptObject) else obj.items() if isinstance(obj, dict) else ()
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, (dict, _ScriptObject)):
            _flatten(v, name + ".", depth + 1, out)
    return out


def _read_zip(path: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise NetworkFormatError("a zip file, but not a torch archive (no <archive>/data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        scripted = any(n.startswith(prefix + "code/") for n in names)
        with zf.open(pkls[0]) as f:
            root = _ArchiveUnpickler(f, zf, prefix).load()
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]
    if not isinstance(root, (dict, _ScriptObject)):
        raise NetworkFormatError(f"the archive holds a {type(root).__name__}, not a state_dict or a module")
    tensors = _flatten(root)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, ("TorchScript archive (tensors read, code not run)" if scripted else "torch zip archive")


def read_state_dict(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], str]:
    """``({name: tensor}, format description)`` of a safetensors file or a torch zip / TorchScript archive, without
    executing anything in it. Raises :class:`WeightsFormatError` (one line, naming the file) otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:4] == b"PK\x03\x04":
            return _read_zip(path)
        if len(head) == 8 and int.from_bytes(head, "little") < (1 << 28):
            from safetensors.torch import load_file

            try:
                return dict(load_file(str(path))), "safetensors"
            except Exception as e:
                raise NetworkFormatError(f"not a readable safetensors file ({type(e).__name__})") from None
        if head[:1] == b"\x80":
            raise NetworkFormatError("a legacy (non-zip) torch.save file; re-save it with a current torch or as "
                                     "safetensors")
        raise NetworkFormatError("neither safetensors nor a torch archive")
    except (NetworkFormatError, UnsafePickleError) as e:
        raise WeightsFormatError(f"{path}: {e.detail}; {{clip_weights}} must be a CLIP weights file (open_clip "
                                 "safetensors/.bin or OpenAI's .pt)", also={"clip_weights": "the CLIP weights"}) from None
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as e:
        raise WeightsFormatError(f"{path}: unreadable ({type(e).__name__}: {one_line(str(e), 120)}); "
                                 "{clip_weights} must be a CLIP weights file",
                                 also={"clip_weights": "the CLIP weights"}) from None
