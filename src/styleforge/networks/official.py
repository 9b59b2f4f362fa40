"""Safe reader for official StyleGAN2-ADA network pickles (``network-snapshot-*.pkl``, ``ffhq.pkl``...).

Official pickles store every module as a call to ``torch_utils.persistence._reconstruct_persistent_obj``
with the *source code* of NVIDIA's ``networks.py`` embedded, which the official loader ``exec``s. This
reader never does: a restricted unpickler resolves only an allow-list of globals to harmless stand-ins,
turns each persistent module into a plain record (class name, constructor kwargs, tensors), and decodes the
tensors' legacy ``torch.save`` blobs itself. Any other global is refused with one line naming it.

The records are then translated into styleforge configs and state dicts (``official_to_networks``).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import mmap
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import NetworkFormatError, UnsafePickleError

# Caps on what an untrusted file may ask for (far above any real network; they bound time and memory).
MAX_NESTING = 64  # depth of plain containers in kwargs
MAX_TENSOR_RANK = 8


def one_line(text: str, limit: int = 300) -> str:
    """Untrusted text made safe for a one-line message: control characters escaped, length capped."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------------------------
# Stand-ins for the globals an official pickle references. None of them can be modified by the file: the
# unpickler refuses BUILD (attribute setting) on everything except freshly made numpy dtypes.


@dataclass
class PersistentRecord:
    """What an official persistent object holds, minus the code: class name, kwargs, state."""

    class_name: str
    state: Dict[str, Any]
    version: Any = None

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        kw = self.state.get("_init_kwargs")
        if kw is None:
            return {}
        if not isinstance(kw, dict):
            raise NetworkFormatError(f"{self.class_name}: constructor kwargs are a {type(kw).__name__}, not a dict")
        return _plain(kw)

    def named_tensors(self, prefix: str = "", depth: int = 0) -> Dict[str, torch.Tensor]:
        """Flatten parameters and buffers of this module and its children into dotted names."""
        if depth > MAX_NESTING:
            raise NetworkFormatError("modules are nested too deeply")
        out: Dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, t in self.state.get(group, {}).items():
                if t is not None:
                    if not isinstance(t, torch.Tensor):
                        raise NetworkFormatError(f"{one_line(prefix + name)} is a {type(t).__name__}, not a tensor")
                    out[prefix + name] = t
        for name, child in self.state.get("_modules", {}).items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise NetworkFormatError(
                    f"submodule {one_line(prefix + name)} is a {type(child).__name__}, not a module record")
            out.update(child.named_tensors(prefix + name + ".", depth + 1))
        return out


def _reconstruct_persistent_obj(meta):
    """Stand-in for the official reconstructor: keep class name and state, ignore ``module_src``."""
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str) or "state" not in meta:
        raise NetworkFormatError("persistent object without a class name and state")
    state = meta["state"]
    if not isinstance(state, dict):
        raise NetworkFormatError("persistent object state is not a dict")
    for group in ("_parameters", "_buffers", "_modules"):
        g = state.get(group, {})
        if g is None:
            state[group] = g = {}
        if not isinstance(g, dict) or not all(isinstance(k, str) for k in g):
            raise NetworkFormatError(f"{one_line(meta['class_name'])}.{group} is not a dict of names")
    return PersistentRecord(class_name=meta["class_name"], state=state, version=meta.get("version"))


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""


def _ordered_dict(items=()):
    if not isinstance(items, (list, tuple)):
        raise NetworkFormatError("OrderedDict built from a non-list")
    return collections.OrderedDict(items)


def _set(items=()):
    if not isinstance(items, (list, tuple)):
        raise NetworkFormatError("set built from a non-list")
    return set(items)


def _frozenset(items=()):
    if not isinstance(items, (list, tuple)):
        raise NetworkFormatError("frozenset built from a non-list")
    return frozenset(items)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1 or not storage.is_contiguous():
        raise NetworkFormatError("tensor record does not point at a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride) or len(size) > MAX_TENSOR_RANK:
        raise NetworkFormatError("tensor record has a malformed size/stride")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in size + stride + (storage_offset,)):
        raise NetworkFormatError("tensor record has non-integer size, stride or offset")
    if any(v < 0 for v in size + stride) or storage_offset < 0:
        raise NetworkFormatError("tensor record has negative size, stride or offset")
    numel = 1
    for n in size:
        numel *= n
    if numel > storage.numel():  # official tensors are dense: no tensor is larger than its storage
        raise NetworkFormatError("tensor record is larger than its storage (truncated or corrupt file?)")
    extent = storage_offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0)
    if extent > storage.numel():
        raise NetworkFormatError("tensor record reaches past the end of its storage (truncated file?)")
    return storage.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    if not isinstance(data, torch.Tensor):
        raise NetworkFormatError("parameter record does not hold a tensor")
    return data


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _SafeUnpicklerBase(pickle._Unpickler):
    """The pure-Python unpickler with BUILD restricted: its memo is a dict (a huge memo index in a hostile file
    costs nothing), and BUILD may only restore numpy dtype state, never set attributes on other objects."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            _restore_dtype_state(inst, state)
        elif isinstance(inst, (dict, collections.OrderedDict)) and not state:
            pass  # dict subclasses may carry an empty instance dict
        else:
            raise UnsafePickleError(f"refusing to set state on a {one_line(type(inst).__name__)} object")

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module, name):
        if self.proto < 3 and (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif self.proto < 3 and module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return self.resolve(module, name)

    def resolve(self, module, name):  # pragma: no cover - overridden
        raise NotImplementedError


class _BlobUnpickler(_SafeUnpicklerBase):
    """Reads the small pickles inside one legacy ``torch.save`` storage blob."""

    def resolve(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing global {one_line(repr(module + '.' + name))} inside a tensor blob")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[4], int)):
            raise NetworkFormatError("unexpected persistent id inside a tensor blob")
        return ("storage", pid[1].name, str(pid[2]), pid[4])


_BLOB_MAGIC = 0x1950A86A20F9469CFC6C


def _read_blob_header(f: io.BytesIO):
    if _BlobUnpickler(f).load() != _BLOB_MAGIC:
        raise NetworkFormatError("tensor blob has a bad magic number")
    if _BlobUnpickler(f).load() != 1001:
        raise NetworkFormatError("tensor blob has an unsupported protocol")
    sys_info = _BlobUnpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise NetworkFormatError("big-endian tensor blobs are not supported")
    return _BlobUnpickler(f).load(), _BlobUnpickler(f).load()


# A blob's header (five small pickles, ~200 bytes in real files) must fit in this many of its first bytes.
_BLOB_HEADER_MAX = 4096


def _load_from_bytes(b):
    """Decode one legacy (non-zip) ``torch.save`` stream holding a single storage, without torch.load.

    ``b`` is the blob: bytes (small blobs; the storage gets its own copy), or for large blobs a copy-on-write
    view of the memory-mapped file, which the storage returned views without copying (see :class:`_FileBuffer`)."""
    if not isinstance(b, (bytes, memoryview)):
        raise NetworkFormatError("tensor blob is not bytes")
    try:
        f = io.BytesIO(b if isinstance(b, bytes) else bytes(b[:_BLOB_HEADER_MAX]))
        obj, keys = _read_blob_header(f)
    except (NetworkFormatError, UnsafePickleError):
        raise
    except Exception as e:
        raise NetworkFormatError(f"corrupt tensor blob ({type(e).__name__})") from None
    if not (isinstance(obj, tuple) and len(obj) == 4 and obj[0] == "storage"):
        raise NetworkFormatError("tensor blob does not hold a storage")
    if not isinstance(keys, list) or len(keys) != 1:
        raise NetworkFormatError("tensor blob must hold exactly one storage")
    _, type_name, _key, numel = obj
    start = f.tell() + 8
    if start > len(b):
        raise NetworkFormatError("tensor blob is truncated")
    (count,) = struct.unpack("<q", b[start - 8: start])
    if count != numel or count < 0:
        raise NetworkFormatError("tensor blob element count does not match its header")
    dtype = _STORAGE_DTYPES[type_name]
    nbytes = count * torch.empty(0, dtype=dtype).element_size()
    if nbytes > len(b) - start:
        raise NetworkFormatError("tensor blob is truncated")
    if not count:
        return torch.zeros(0, dtype=dtype)
    if isinstance(b, bytes):  # a small blob, read as bytes: its own writable copy
        return torch.frombuffer(bytearray(b[start: start + nbytes]), dtype=dtype)
    return torch.frombuffer(b, dtype=dtype, count=count, offset=start)  # a view, alive as long as the tensor


_NUMERIC_KINDS = set("biuf?c")


def _check_numeric_dtype(dt: np.dtype) -> np.dtype:
    if dt.kind not in _NUMERIC_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise UnsafePickleError(f"refusing non-numeric numpy dtype {one_line(str(dt))}")
    return dt


def _safe_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str) or len(spec) > 8:
        raise UnsafePickleError("refusing a numpy dtype that is not a short type code")
    # copy=True always: a BUILD on the returned dtype must never touch numpy's shared builtin descriptors
    return _check_numeric_dtype(np.dtype(spec, bool(align), True))


def _restore_dtype_state(dt: np.dtype, state) -> None:
    if not (isinstance(state, tuple) and 8 <= len(state) <= 9 and state[2] is None and state[3] is None
            and state[4] is None and all(isinstance(v, int) for v in state[5:8])):
        raise UnsafePickleError("refusing unusual numpy dtype state")
    dt.__setstate__(state)
    _check_numeric_dtype(dt)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError("refusing numpy scalar without a dtype")
    dt = _check_numeric_dtype(np.dtype(dtype.str))  # a fresh dtype from the type code alone
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise NetworkFormatError("corrupt numpy scalar")
    return np.frombuffer(bytes(data), dtype=dt)[0]


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") or errors != "strict":
        raise UnsafePickleError("refusing _codecs.encode with unexpected arguments")
    return obj.encode(encoding, errors)


# The complete allow-list: (module, name) -> stand-in. Nothing else is ever imported or called.
ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _FileBuffer:
    """The file's bytes for the unpickler.

    A real file is memory-mapped copy-on-write: large tensor blobs become views of the page cache, read only
    where a kept tensor is copied out (the unused networks of a snapshot cost nothing), and writing to such a
    tensor changes private pages, never the file. Other file objects are read whole into a bytearray (so that
    their tensors are writable too). Reads go through C methods (``mmap.read`` / ``BytesIO.read``) and never
    return more than the file holds, so a hostile length field cannot make the unpickler allocate more than
    the file's size. (A file truncated in place by another process *while* it is mapped makes the kernel
    raise SIGBUS on the missing pages; replacing it by rename, as every styleforge writer does, is safe.)"""

    def __init__(self, f):
        self._mm = None
        try:
            fd = f.fileno()
            if os.fstat(fd).st_size > 0:
                self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
                self._mm.seek(f.tell())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self.close()
        if self._mm is not None:
            data, src = self._mm, self._mm
        else:
            raw = f.read()
            if not isinstance(raw, (bytes, bytearray)):
                raise NetworkFormatError("network pickles must be opened in binary mode")
            data = bytearray(raw)
            src = io.BytesIO(raw)
        self.view = memoryview(data)
        self.read, self.tell, self.seek, self._readline = src.read, src.tell, src.seek, src.readline

    def readline(self):
        line = self._readline()
        if not line.endswith(b"\n"):  # text opcodes always end in a newline: this is a truncated file
            raise EOFError("truncated text opcode")
        return line

    def take_view(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer at the end of the file) as a view, advancing past them."""
        pos = self.tell()
        view = self.view[pos: pos + n]
        self.seek(pos + len(view))
        return view

    def close(self) -> None:
        """Unmap the file now if nothing views it any more (else it goes when the last view does)."""
        view, self.view = getattr(self, "view", None), None
        if view is not None:
            try:
                view.release()
            except BufferError:  # (slices of it are still alive)
                pass
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            else:
                self._mm = None


# BINBYTES payloads at least this long (tensor blobs) are handed on as views of the file, not copies.
VIEW_MIN_BYTES = 1 << 16


class RestrictedUnpickler(_SafeUnpicklerBase):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    dispatch = dict(_SafeUnpicklerBase.dispatch)

    def __init__(self, f):
        self._buffer = _FileBuffer(f)
        super().__init__(self._buffer)

    def resolve(self, module, name):
        fn = ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise UnsafePickleError(
                f"refusing global {one_line(repr(str(module) + '.' + str(name)))} (not on styleforge's allow-list)")
        return fn

    def persistent_load(self, pid):
        raise NetworkFormatError("unexpected persistent id in a network pickle")

    def release(self) -> None:
        """Drop everything the parse made so far and unmap the file (after a failed load)."""
        for stack in [getattr(self, "stack", [])] + list(getattr(self, "metastack", [])):
            stack.clear()  # (in place: the unpickler's bound ``append`` still holds the current stack)
        getattr(self, "metastack", []).clear()
        self.memo.clear()
        self._buffer.close()

    def _bytes_payload(self, n: int) -> None:
        if n >= VIEW_MIN_BYTES and not self._unframer.current_frame:
            self.append(self._buffer.take_view(n))
        else:
            self.append(self.read(n))

    def load_binbytes(self):
        (n,) = struct.unpack("<I", self.read(4))
        self._bytes_payload(n)

    def load_binbytes8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        self._bytes_payload(n)

    dispatch[pickle.BINBYTES[0]] = load_binbytes
    dispatch[pickle.BINBYTES8[0]] = load_binbytes8


def _plain(x, depth: int = 0, seen=None):
    """Convert EasyDicts/OrderedDicts/numpy scalars/tuples into plain JSON-able Python values."""
    if depth > MAX_NESTING:
        raise NetworkFormatError("settings are nested too deeply")
    if isinstance(x, (dict, list, tuple, set, frozenset)):
        seen = seen or set()
        if id(x) in seen:
            raise NetworkFormatError("settings contain a reference cycle")
        seen = seen | {id(x)}
    if isinstance(x, PersistentRecord):
        return {"class_name": x.class_name, "init_kwargs": x.init_kwargs}
    if isinstance(x, dict):
        return {str(k): _plain(v, depth + 1, seen) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, depth + 1, seen) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, memoryview):  # a bytes value of >= VIEW_MIN_BYTES: no network setting is one
        raise NetworkFormatError(f"settings hold a {x.nbytes}-byte binary value; this is not a network pickle")
    if isinstance(x, (set, frozenset)):
        return sorted((_plain(v, depth + 1, seen) for v in x), key=repr)
    if isinstance(x, torch.Tensor):
        return x.tolist() if x.numel() <= 16 else f"<tensor {list(x.shape)}>"
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
    unpickler = RestrictedUnpickler(f)
    error: Optional[Exception] = None
    try:
        data = unpickler.load()
    except (NetworkFormatError, UnsafePickleError) as e:
        error = type(e)(f"{name}: {e}")
    except EOFError:
        error = NetworkFormatError(f"{name}: the file ends early (truncated download?); re-download it")
    except RecursionError:
        error = NetworkFormatError(f"{name}: pickle nesting is too deep; this is not a network pickle")
    except MemoryError:
        error = NetworkFormatError(f"{name}: pickle asks for more memory than available; the file is corrupt")
    except Exception as e:  # any other decoding failure of untrusted bytes is a format error, never a crash
        error = NetworkFormatError(f"{name}: not a readable network pickle ({type(e).__name__}: {one_line(e, 120)})")
    if error is not None:
        # raised here, outside the except blocks: the failed parse (its traceback, frames and views of the
        # file) is not chained to the error, so it is freed now and the file unmapped (Windows could not
        # replace a mapped file, e.g. with a fresh download)
        unpickler.release()
        raise error
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
    try:
        out.training_set_kwargs = _plain(tsk) if tsk is not None else None
    except NetworkFormatError as e:
        raise NetworkFormatError(f"{name}: training_set_kwargs: {e}") from None
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
