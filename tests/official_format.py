"""Test utility: write styleforge networks as pickles in the exact layout of official StyleGAN2-ADA snapshots.

Nothing here imports or runs official code. The layout follows /work/shared/reference/official-format.md §1.1-1.3:
a plain top-level dict (``training_set_kwargs``, ``G``, ``D``, ``G_ema``, ``augment_pipe``); every module a REDUCE of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name,
state}``; tensors as ``torch._utils._rebuild_parameter(_rebuild_tensor_v2(torch.storage._load_from_bytes(blob), ...))``
where ``blob`` is a legacy (non-zip) ``torch.save`` stream of one storage; ``weight_gain``/``act_gain`` as numpy float64
scalars; nested constructor-kwarg groups as ``dnnlib.util.EasyDict``.

Globals that do not exist in this process (``torch_utils...``, ``dnnlib...``, the numpy 1.x scalar spelling) are
emitted by name through :class:`GlobalRef` markers, which a small subclass of the pure-Python pickler writes as
GLOBAL / STACK_GLOBAL opcodes. No fake modules are installed in ``sys.modules``.

Besides :func:`write_official_pickle` / :func:`official_pickle_bytes`, the building blocks (:class:`GlobalRef`,
:class:`Reduce`, :func:`legacy_storage_blob`) let safety tests and the fuzzer compose hostile pickles, and
:func:`tiny_networks` makes small randomly perturbed G/D/G_ema for fast round trips.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "GlobalRef", "Reduce", "RECONSTRUCT", "EASYDICT", "REBUILD_PARAMETER", "REBUILD_TENSOR_V2", "LOAD_FROM_BYTES",
    "NUMPY1_SCALAR", "NUMPY2_SCALAR", "OFFICIAL_CLASS_NAMES", "legacy_storage_blob", "module_state",
    "official_pickle_bytes", "write_official_pickle", "generator_init_kwargs", "discriminator_init_kwargs",
    "tiny_networks",
]

PERSISTENCE_VERSION = 6
TORCH_SAVE_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_SAVE_PROTOCOL = 1001

OFFICIAL_CLASS_NAMES = frozenset({
    "Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
    "ToRGBLayer", "Conv2dLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "MinibatchStdLayer",
})

# Hook containers a torch 2.13 Module carries in its __dict__, in that order (all written empty).
_HOOK_KEYS = (
    "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_NUMPY_GAINS = ("weight_gain", "act_gain")  # official modules hold these as numpy.float64

_STORAGE_NAMES = {
    torch.float32: "FloatStorage", torch.float64: "DoubleStorage", torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage", torch.int64: "LongStorage", torch.int32: "IntStorage",
    torch.int16: "ShortStorage", torch.int8: "CharStorage", torch.uint8: "ByteStorage", torch.bool: "BoolStorage",
}


class GlobalRef:
    """A global referenced only by name: pickled as ``GLOBAL module name`` (STACK_GLOBAL from protocol 4)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def __repr__(self) -> str:
        return f"GlobalRef({self.module}.{self.name})"

    def __call__(self, *args, **kwargs):  # the pickler insists that a REDUCE callable is callable
        raise TypeError(f"{self.module}.{self.name} is only a name; it cannot be called here")


class Reduce:
    """Pickled as ``func args REDUCE`` (``func`` is usually a :class:`GlobalRef`)."""

    __slots__ = ("func", "args")

    def __init__(self, func: Any, args: tuple):
        self.func = func
        self.args = tuple(args)


class _EasyDictOut(dict):
    """A dict pickled like ``dnnlib.util.EasyDict``: the default dict-subclass reduction (NEWOBJ of the class,
    then SETITEMS), with the class itself written under the official global name."""


# One marker object per global, so the pickle memo refers back to it (BINGET) as the official writer's does.
RECONSTRUCT = GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = GlobalRef("dnnlib.util", "EasyDict")
REBUILD_PARAMETER = GlobalRef("torch._utils", "_rebuild_parameter")
REBUILD_TENSOR_V2 = GlobalRef("torch._utils", "_rebuild_tensor_v2")
LOAD_FROM_BYTES = GlobalRef("torch.storage", "_load_from_bytes")
NUMPY1_SCALAR = GlobalRef("numpy.core.multiarray", "scalar")
NUMPY2_SCALAR = GlobalRef("numpy._core.multiarray", "scalar")
_STORAGE_GLOBALS = {dt: GlobalRef("torch", name) for dt, name in _STORAGE_NAMES.items()}


class _Storage:
    """One tensor's storage, pickled as ``torch.storage._load_from_bytes(<legacy torch.save blob>)``."""

    __slots__ = ("tensor", "key")

    def __init__(self, tensor: torch.Tensor, key: str):
        self.tensor = tensor
        self.key = key


class _NamedGlobalPickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    """Pickler that writes :class:`GlobalRef` markers as GLOBAL / STACK_GLOBAL opcodes, memoized like real globals."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _write_global(self, module: str, name: str, memo_key: Any) -> None:
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("utf-8"))
        self.memoize(memo_key)

    def _save_global_ref(self, obj: GlobalRef) -> None:
        self._write_global(obj.module, obj.name, obj)

    dispatch[GlobalRef] = _save_global_ref


class _OfficialPickler(_NamedGlobalPickler):
    """Pickler that writes modules, tensors, numpy scalars and EasyDicts the way official snapshots hold them."""

    def __init__(self, file, protocol: int, module_src: str, numpy2_names: bool, storage_global: Optional[GlobalRef],
                 state_hook: Optional[Callable[[nn.Module, Dict[str, Any]], None]] = None):
        super().__init__(file, protocol=protocol)
        self.module_src = module_src  # one str object: written once, then referenced through the memo
        self.scalar_ref = NUMPY2_SCALAR if numpy2_names else NUMPY1_SCALAR
        self.storage_global = storage_global
        self.state_hook = state_hook
        self._next_key = 0

    def save_global(self, obj, name=None):
        if obj is _EasyDictOut:
            self._write_global(EASYDICT.module, EASYDICT.name, obj)
        else:
            super().save_global(obj, name)

    def _storage_key(self) -> str:
        self._next_key += 1
        return str(140_000_000_000_000 + 64 * self._next_key)  # looks like the addresses torch.save writes

    def reducer_override(self, obj):
        if isinstance(obj, Reduce):
            return obj.func, obj.args
        if isinstance(obj, nn.Module):
            return RECONSTRUCT, (self._persistent_meta(obj),)
        if isinstance(obj, nn.Parameter):
            return REBUILD_PARAMETER, (obj.detach(), False, collections.OrderedDict())
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous()
            return REBUILD_TENSOR_V2, (
                _Storage(t, self._storage_key()), 0, tuple(t.shape), tuple(t.stride()), False,
                collections.OrderedDict(),
            )
        if isinstance(obj, _Storage):
            return LOAD_FROM_BYTES, (legacy_storage_blob(obj.tensor, key=obj.key, storage_global=self.storage_global),)
        if isinstance(obj, np.generic):
            return self.scalar_ref, (obj.dtype, obj.tobytes())
        return NotImplemented

    def _persistent_meta(self, m: nn.Module) -> Dict[str, Any]:
        class_name = type(m).__name__
        if class_name not in OFFICIAL_CLASS_NAMES:
            raise ValueError(f"{class_name} has no counterpart in the official networks.py")
        state = module_state(m)
        if self.state_hook is not None:
            self.state_hook(m, state)
        return {
            "type": "class",
            "version": PERSISTENCE_VERSION,
            "module_src": self.module_src,
            "class_name": class_name,
            "state": state,
        }


def _plain_attr(value) -> bool:
    if isinstance(value, (Reduce, GlobalRef)):  # injected by safety tests
        return True
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value)


def module_state(m: nn.Module) -> Dict[str, Any]:
    """The module ``__dict__`` as an official snapshot stores it (eval mode, empty hooks, kwargs last)."""
    state: Dict[str, Any] = {
        "training": False,
        "_parameters": dict(m._parameters),
        "_buffers": dict(m._buffers),
        "_non_persistent_buffers_set": set(),
    }
    for key in _HOOK_KEYS:
        state[key] = None if key == "_is_full_backward_hook" else collections.OrderedDict()
    state["_modules"] = dict(m._modules)
    for key, value in vars(m).items():
        if key.startswith("_") or key in state or key == "config" or not _plain_attr(value):
            continue
        state[key] = np.float64(value) if key in _NUMPY_GAINS else value
    state["_init_args"] = ()
    if type(m).__name__ == "Generator" and hasattr(m, "config"):
        state["_init_kwargs"] = generator_init_kwargs(m.config.to_dict())
    elif type(m).__name__ == "Discriminator" and hasattr(m, "config"):
        state["_init_kwargs"] = discriminator_init_kwargs(m.config.to_dict())
    else:
        state["_init_kwargs"] = {}
    return state


def generator_init_kwargs(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """styleforge GeneratorConfig dict -> official ``Generator`` constructor kwargs (train.py key order)."""
    return {
        "z_dim": cfg["z_dim"],
        "w_dim": cfg["w_dim"],
        "mapping_kwargs": _EasyDictOut(cfg["mapping"]),
        "synthesis_kwargs": _EasyDictOut(cfg["synthesis"]),
        "c_dim": cfg["c_dim"],
        "img_resolution": cfg["img_resolution"],
        "img_channels": cfg["img_channels"],
    }


def discriminator_init_kwargs(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """styleforge DiscriminatorConfig dict -> official ``Discriminator`` constructor kwargs (train.py key order)."""
    mapping = dict(cfg["mapping"])
    if mapping.get("w_avg_beta") is None:  # the official D passes w_avg_beta=None itself
        mapping.pop("w_avg_beta", None)
    block = {k: cfg[k] for k in ("activation", "resample_filter", "freeze_layers") if k in cfg}
    epilogue = {k: cfg[k] for k in ("mbstd_group_size", "mbstd_num_channels") if k in cfg}
    if "epilogue_activation" in cfg:
        epilogue["activation"] = cfg["epilogue_activation"]
    out: Dict[str, Any] = {
        "block_kwargs": _EasyDictOut(block),
        "mapping_kwargs": _EasyDictOut(mapping),
        "epilogue_kwargs": _EasyDictOut(epilogue),
    }
    for key in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "cmap_dim"):
        if key in cfg:
            out[key] = cfg[key]
    for key in ("c_dim", "img_resolution", "img_channels"):
        out[key] = cfg[key]
    return out


def legacy_storage_blob(tensor: torch.Tensor, key: str = "140000000000000",
                        storage_global: Optional[GlobalRef] = None) -> bytes:
    """A legacy (non-zip) ``torch.save`` stream holding the storage of a contiguous ``tensor`` (format §1.2).

    Five protocol-2 pickles (magic, protocol 1001, sys_info, a BINPERSID of ``('storage', <torch.XStorage>, key,
    'cpu', numel, None)``, the key list), then the int64 element count and the raw little-endian bytes.
    ``storage_global`` replaces the storage-type global (for hostile-input tests).
    """
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype not in _STORAGE_GLOBALS:
        raise ValueError(f"no legacy storage type for {t.dtype}")
    sys_info = {"protocol_version": TORCH_SAVE_PROTOCOL, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    record = ("storage", storage_global or _STORAGE_GLOBALS[t.dtype], key, "cpu", t.numel(), None)
    f = io.BytesIO()
    for obj in (TORCH_SAVE_MAGIC, TORCH_SAVE_PROTOCOL, sys_info):
        pickle.dump(obj, f, protocol=2)
    _PersistentIdPickler(f, record).dump(object())
    pickle.dump([key], f, protocol=2)
    f.write(struct.pack("<q", t.numel()))
    f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f.getvalue()


class _PersistentIdPickler(_NamedGlobalPickler):
    """Writes one object as a BINPERSID of ``record`` (which may name globals through GlobalRef)."""

    def __init__(self, file, record: tuple):
        super().__init__(file, protocol=2)
        self.record = record

    def persistent_id(self, obj):
        return self.record if type(obj) is object else None


def official_pickle_bytes(obj: Any, protocol: int = 3, module_src: str = "# module source stripped",
                          numpy2_names: bool = False, storage_global: Optional[GlobalRef] = None,
                          state_hook: Optional[Callable[[nn.Module, Dict[str, Any]], None]] = None) -> bytes:
    """Pickle any object tree (usually the top-level dict) with the official reductions applied.

    ``storage_global`` replaces the storage-type global inside every tensor blob and ``state_hook(module, state)``
    may edit each module's state dict before it is written (both for hostile-input tests).
    """
    f = io.BytesIO()
    _OfficialPickler(f, protocol, module_src, numpy2_names, storage_global, state_hook).dump(obj)
    return f.getvalue()


def write_official_pickle(path, G: Optional[nn.Module] = None, D: Optional[nn.Module] = None,
                          G_ema: Optional[nn.Module] = None, training_set_kwargs: Optional[Dict[str, Any]] = None,
                          module_src: str = "# module source stripped", protocol: int = 3,
                          numpy2_names: bool = False, **extra_entries):
    """Write a network snapshot in the official layout; returns ``path``.

    The modules must be styleforge ``Generator``/``Discriminator`` instances (their tensor names equal the official
    ones). Keys are written in the training-snapshot order; absent networks are written as None.
    ``extra_entries`` are appended to the top-level dict as-is (e.g. hostile entries for safety tests).
    """
    data: Dict[str, Any] = {
        "training_set_kwargs": dict(training_set_kwargs) if training_set_kwargs is not None else None,
        "G": G, "D": D, "G_ema": G_ema, "augment_pipe": None,
    }
    data.update(extra_entries)
    blob = official_pickle_bytes(data, protocol=protocol, module_src=module_src, numpy2_names=numpy2_names)
    with open(path, "wb") as f:
        f.write(blob)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Tiny networks for fast round trips.

TINY_G = dict(z_dim=32, w_dim=32, img_resolution=16, img_channels=3,
              mapping=dict(num_layers=2), synthesis=dict(channel_base=256, channel_max=32))
TINY_D = dict(img_resolution=16, img_channels=3, channel_base=256, channel_max=32, mbstd_group_size=2)


def _perturb(net: nn.Module, gen: torch.Generator) -> nn.Module:
    """Make every tensor matter: nonzero biases, noise strengths and w_avg, shifted weights."""
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point() and t.numel():
                t.add_(0.1 * torch.randn(t.shape, generator=gen))
    return net.eval().requires_grad_(False)


def tiny_networks(seed: int = 0, g_overrides: Optional[Dict[str, Any]] = None,
                  d_overrides: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, nn.Module, nn.Module]:
    """(G, D, G_ema): small styleforge networks with random, perturbed weights (G and G_ema differ)."""
    from styleforge.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    g_cfg = {**TINY_G, **(g_overrides or {})}
    d_cfg = {**TINY_D, **(d_overrides or {})}
    if "c_dim" in g_cfg:
        d_cfg.setdefault("c_dim", g_cfg["c_dim"])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    G = _perturb(Generator(GeneratorConfig.from_dict(g_cfg)), gen)
    D = _perturb(Discriminator(DiscriminatorConfig.from_dict(d_cfg)), gen)
    G_ema = _perturb(Generator(GeneratorConfig.from_dict(g_cfg)), gen)
    return G, D, G_ema


if __name__ == "__main__":  # manual check: python tests/official_format.py out.pkl
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "tiny_official.pkl"
    G, D, G_ema = tiny_networks()
    write_official_pickle(out, G=G, D=D, G_ema=G_ema)
    print(out, os.path.getsize(out), "bytes")
