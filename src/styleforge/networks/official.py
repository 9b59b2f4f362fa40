"""Safe reader for official StyleGAN2-ADA network pickles (``network-snapshot-*.pkl``, ``ffhq.pkl``...).

Official pickles store every module as a call to ``torch_utils.persistence._reconstruct_persistent_obj``
with the *source code* of NVIDIA's ``networks.py`` embedded, which the official loader ``exec``s. This
reader never does: a restricted unpickler resolves only an allow-list of globals to harmless stand-ins,
turns each persistent module into a plain record (class name, constructor kwargs, tensors), and decodes the
tensors' legacy ``torch.save`` blobs itself. Any other global is refused with one line naming it.

The records are then translated into styleforge configs and state dicts (``official_to_networks``).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import NetworkFormatError, UnsafePickleError

# ----------------------------------------------------------------------------------------------------------
# Stand-ins for the globals an official pickle references.


@dataclass
class PersistentRecord:
    """What an official persistent object holds, minus the code: class name, kwargs, state."""

    class_name: str
    state: Dict[str, Any]
    version: Any = None

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        return _plain(self.state.get("_init_kwargs") or {})

    def named_tensors(self, prefix: str = "") -> Dict[str, torch.Tensor]:
        """Flatten parameters and buffers of this module and its children into dotted names."""
        out: Dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None:
                    if not isinstance(t, torch.Tensor):
                        raise NetworkFormatError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
                    out[prefix + name] = t
        for name, child in (self.state.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise NetworkFormatError(f"submodule {prefix}{name} is a {type(child).__name__}, not a module record")
            out.update(child.named_tensors(prefix + name + "."))
        return out


def _reconstruct_persistent_obj(meta):
    """Stand-in for the official reconstructor: keep class name and state, ignore ``module_src``."""
    if not isinstance(meta, dict) or "class_name" not in meta or "state" not in meta:
        raise NetworkFormatError("persistent object without class_name/state")
    state = meta["state"]
    if not isinstance(state, dict):
        raise NetworkFormatError("persistent object state is not a dict")
    return PersistentRecord(class_name=str(meta["class_name"]), state=state, version=meta.get("version"))


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise NetworkFormatError("tensor record does not point at a storage")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise NetworkFormatError("tensor record has negative size, stride or offset")
    extent = offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if extent > storage.numel():
        raise NetworkFormatError("tensor record reaches past the end of its storage (truncated file?)")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    if not isinstance(data, torch.Tensor):
        raise NetworkFormatError("parameter record does not hold a tensor")
    return data


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # handled through torch (numpy has no bfloat16)
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _BlobUnpickler(pickle.Unpickler):
    """Reads the small pickles inside one legacy ``torch.save`` storage blob."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing global {module}.{name} inside a tensor blob")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise NetworkFormatError("unexpected persistent id inside a tensor blob")
        return ("storage", pid[1].name, str(pid[2]), int(pid[4]))


def _load_from_bytes(b):
    """Decode one legacy (non-zip) ``torch.save`` stream holding a single storage, without torch.load."""
    if not isinstance(b, (bytes, bytearray)):
        raise NetworkFormatError("tensor blob is not bytes")
    f = io.BytesIO(b)
    try:
        magic = _BlobUnpickler(f).load()
        if magic != 0x1950A86A20F9469CFC6C:
            raise NetworkFormatError("tensor blob has a bad magic number")
        proto = _BlobUnpickler(f).load()
        if proto != 1001:
            raise NetworkFormatError(f"tensor blob has unsupported protocol {proto!r}")
        sys_info = _BlobUnpickler(f).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise NetworkFormatError("big-endian tensor blobs are not supported")
        obj = _BlobUnpickler(f).load()
        keys = _BlobUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, struct.error) as e:
        raise NetworkFormatError(f"corrupt tensor blob ({e})") from None
    if not (isinstance(obj, tuple) and obj and obj[0] == "storage"):
        raise NetworkFormatError("tensor blob does not hold a storage")
    if not isinstance(keys, list) or len(keys) != 1:
        raise NetworkFormatError("tensor blob must hold exactly one storage")
    _, type_name, _key, numel = obj
    head = f.read(8)
    if len(head) != 8:
        raise NetworkFormatError("tensor blob is truncated")
    (count,) = struct.unpack("<q", head)
    if count != numel or count < 0:
        raise NetworkFormatError("tensor blob element count does not match its header")
    if type_name == "BFloat16Storage":
        raw = f.read(count * 2)
        if len(raw) != count * 2:
            raise NetworkFormatError("tensor blob is truncated")
        return torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).clone() if count else torch.zeros(0, dtype=torch.bfloat16)
    dt = np.dtype(_STORAGE_DTYPES[type_name])
    nbytes = count * dt.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise NetworkFormatError("tensor blob is truncated")
    arr = np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt, copy=True)
    return torch.from_numpy(arr)


_NUMERIC_KINDS = set("biuf?c")


def _safe_dtype(spec, align=False, copy=False):
    dt = np.dtype(spec)
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise UnsafePickleError(f"refusing non-numeric numpy dtype {spec!r}")
    return dt


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise UnsafePickleError("refusing numpy scalar of a non-numeric dtype")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise NetworkFormatError("corrupt numpy scalar")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("refusing _codecs.encode with unexpected arguments")
    return obj.encode(encoding, errors)


# The complete allow-list: (module, name) -> stand-in. Nothing else is ever imported or called.
ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def find_class(self, module, name):
        fn = ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise UnsafePickleError(f"refusing global '{module}.{name}' (not on styleforge's allow-list)")
        return fn

    def persistent_load(self, pid):
        raise NetworkFormatError("unexpected persistent id in a network pickle")


def _plain(x):
    """Convert EasyDicts/OrderedDicts/numpy scalars/tuples into plain JSON-able Python values."""
    if isinstance(x, PersistentRecord):
        return {"class_name": x.class_name, "init_kwargs": x.init_kwargs}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (set, frozenset)):
        return sorted(_plain(v) for v in x)
    return x


# ----------------------------------------------------------------------------------------------------------
# Reading a whole file.


@dataclass
class OfficialPickle:
    """The decoded contents of an official network pickle."""

    modules: Dict[str, PersistentRecord] = field(default_factory=dict)  # 'G', 'D', 'G_ema', 'augment_pipe'
    training_set_kwargs: Optional[Dict[str, Any]] = None


def read_official_pickle(f, name: str = "network pickle") -> OfficialPickle:
    """Decode an official pickle from a binary file object. Raises NetworkFormatError/UnsafePickleError."""
    try:
        data = RestrictedUnpickler(f).load()
    except (NetworkFormatError, UnsafePickleError) as e:
        raise type(e)(f"{name}: {e}") from None
    except EOFError:
        raise NetworkFormatError(f"{name}: the file ends early (truncated download?); re-download it") from None
    except RecursionError:
        raise NetworkFormatError(f"{name}: pickle nesting is too deep; this is not a network pickle") from None
    except MemoryError:
        raise NetworkFormatError(f"{name}: pickle asks for more memory than available; the file is corrupt") from None
    except Exception as e:  # any other decoding failure of untrusted bytes is a format error, never a crash
        raise NetworkFormatError(f"{name}: not a readable network pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise NetworkFormatError(f"{name}: pickle holds a {type(data).__name__}, not a network dict (G, D, G_ema)")
    out = OfficialPickle()
    for key in ("G", "D", "G_ema", "augment_pipe"):
        v = data.get(key)
        if v is None:
            continue
        if not isinstance(v, PersistentRecord):
            raise NetworkFormatError(f"{name}: entry {key!r} is not a network module")
        out.modules[key] = v
    if "G_ema" not in out.modules and "G" not in out.modules:
        raise NetworkFormatError(f"{name}: pickle has no generator ('G_ema' or 'G'); is it a network snapshot?")
    tsk = data.get("training_set_kwargs")
    if tsk is not None and not isinstance(tsk, dict):
        raise NetworkFormatError(f"{name}: training_set_kwargs is not a dict")
    out.training_set_kwargs = _plain(tsk) if tsk is not None else None
    return out


# ----------------------------------------------------------------------------------------------------------
# Translating records into styleforge configs.

_G_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTH_KEYS = {
    "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter", "use_noise",
    "activation",
}
_IGNORED = {"fp16_channels_last", "channels_last"}  # memory layout hints, no effect on results


def _check_keys(where: str, d: Dict[str, Any], allowed) -> None:
    unknown = set(d) - set(allowed) - _IGNORED
    if unknown:
        raise NetworkFormatError(f"{where} has settings styleforge does not know: {sorted(unknown)}")


def generator_config_from_official(kw: Dict[str, Any]) -> Dict[str, Any]:
    """Official ``Generator`` init_kwargs -> styleforge GeneratorConfig dict."""
    _check_keys("Generator", kw, _G_KEYS)
    mk = dict(kw.get("mapping_kwargs") or {})
    sk = dict(kw.get("synthesis_kwargs") or {})
    _check_keys("Generator mapping_kwargs", mk, _MAPPING_KEYS)
    _check_keys("Generator synthesis_kwargs", sk, _SYNTH_KEYS)
    return {
        "z_dim": int(kw["z_dim"]),
        "c_dim": int(kw["c_dim"]),
        "w_dim": int(kw["w_dim"]),
        "img_resolution": int(kw["img_resolution"]),
        "img_channels": int(kw["img_channels"]),
        "mapping": {k: v for k, v in mk.items() if k in _MAPPING_KEYS},
        "synthesis": {k: v for k, v in sk.items() if k in _SYNTH_KEYS},
    }


_D_KEYS = {
    "c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
    "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs",
}


def discriminator_config_from_official(kw: Dict[str, Any]) -> Dict[str, Any]:
    """Official ``Discriminator`` init_kwargs -> styleforge DiscriminatorConfig dict."""
    _check_keys("Discriminator", kw, _D_KEYS)
    bk = dict(kw.get("block_kwargs") or {})
    mk = dict(kw.get("mapping_kwargs") or {})
    ek = dict(kw.get("epilogue_kwargs") or {})
    _check_keys("Discriminator block_kwargs", bk, {"activation", "resample_filter", "freeze_layers"})
    _check_keys("Discriminator mapping_kwargs", mk, _MAPPING_KEYS)
    _check_keys("Discriminator epilogue_kwargs", ek, {"mbstd_group_size", "mbstd_num_channels", "activation"})
    cfg: Dict[str, Any] = {k: kw[k] for k in _D_KEYS - {"block_kwargs", "mapping_kwargs", "epilogue_kwargs"} if k in kw}
    for k in ("activation", "resample_filter", "freeze_layers"):
        if k in bk:
            cfg[k] = bk[k]
    if "mbstd_group_size" in ek:
        cfg["mbstd_group_size"] = ek["mbstd_group_size"]
    if "mbstd_num_channels" in ek:
        cfg["mbstd_num_channels"] = ek["mbstd_num_channels"]
    if "activation" in ek:
        cfg["epilogue_activation"] = ek["activation"]
    mapping = {"w_avg_beta": None}
    mapping.update({k: v for k, v in mk.items() if k in _MAPPING_KEYS})
    cfg["mapping"] = mapping
    return cfg
