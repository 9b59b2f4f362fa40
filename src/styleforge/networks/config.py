"""Typed network configs and the registry that rebuilds any styleforge network from ``(arch, config)``.

Every network class registers under an ``arch`` name (``stylegan2.generator``, later ``segan.generator``,
``dcgan.generator``...). A checkpoint stores that name and the config as JSON next to the weights, so
``build_network(arch, config_dict)`` recreates the exact module without any code from the file.

Families living outside this package are made known with :func:`register_family` (the module that defines a
family's classes, imported the first time one of its archs is built); :mod:`styleforge.zoo` lists them all.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import typing
from typing import Any, Callable, Dict, Iterator, Sequence, Type

import torch
from torch import nn

_REGISTRY: Dict[str, Type[nn.Module]] = {}
_FAMILIES: Dict[str, Sequence[str]] = {}  # family (the arch's prefix before the dot) -> modules that define it
_SKIP_INIT = contextvars.ContextVar("styleforge_skip_init", default=False)


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Build networks with uninitialised weights (``torch.empty``): for loading, where every tensor is then
    replaced from the file. Saves drawing tens of millions of random numbers per network."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


def skipping_init() -> bool:
    """Whether networks are being built inside :func:`skip_init` (initial values will be replaced)."""
    return _SKIP_INIT.get()


def init_normal(shape: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """N(0, scale^2) initial values, or uninitialised memory inside :func:`skip_init`."""
    if _SKIP_INIT.get():
        return torch.empty(list(shape))
    t = torch.randn(list(shape))
    return t * scale if scale != 1 else t


def register_network(arch: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    """Class decorator: make ``cls`` loadable by :func:`build_network` under ``arch``."""

    def deco(cls):
        if arch in _REGISTRY and _REGISTRY[arch] is not cls:
            raise ValueError(f"network arch {arch!r} is already registered")
        cls.arch = arch
        _REGISTRY[arch] = cls
        return cls

    return deco


def register_family(family: str, modules: Sequence[str]) -> None:
    """Make the archs ``<family>.*`` loadable: ``modules`` (importable names) register them when imported,
    which happens the first time one of them is built."""
    _FAMILIES[family] = tuple(modules)


def registered_archs() -> Dict[str, Type[nn.Module]]:
    return dict(_REGISTRY)


def _import_family(arch: str) -> None:
    for module in _FAMILIES.get(arch.split(".", 1)[0], ()):
        importlib.import_module(module)


def build_network(arch: str, config: Dict[str, Any]) -> nn.Module:
    """Instantiate the registered network ``arch`` from a plain-dict config."""
    if arch not in _REGISTRY:
        _import_family(arch)
    if arch not in _REGISTRY:
        raise KeyError(f"unknown network arch {arch!r}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[arch]
    return cls(cls.config_class.from_dict(config))


def network_spec(net: nn.Module) -> Dict[str, Any]:
    """The ``{'arch': ..., 'config': {...}}`` record that rebuilds ``net``."""
    return {"arch": type(net).arch, "config": net.config.to_dict()}


class ConfigBase:
    """Mixin for config dataclasses: strict, nested conversion to and from plain JSON-able dicts."""

    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__} expects a dict, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown settings {sorted(unknown)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            t = hints[f.name]
            if isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(v, dict):
                v = t.from_dict(v) if hasattr(t, "from_dict") else t(**v)
            kwargs[f.name] = v
        obj = cls(**kwargs)
        if hasattr(obj, "validate"):
            obj.validate()
        return obj


def check_int(name: str, v, lo: int, hi: int, optional: bool = False) -> None:
    """Range check for an integer setting (configs come from untrusted files, so bound everything)."""
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


def check_float(name: str, v, lo: float, hi: float, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= float(v) <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")


def check_choice(name: str, v, choices) -> None:
    if v not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {v!r}")


def check_filter(name: str, f) -> None:
    if (not isinstance(f, (list, tuple)) or not 1 <= len(f) <= 16
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in f) or sum(f) == 0):
        raise ValueError(f"{name} must be a list of 1-16 numbers with a non-zero sum, got {f!r}")


def _to_plain(x):
    if dataclasses.is_dataclass(x):
        return {f.name: _to_plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    return x
