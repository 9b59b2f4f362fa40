"""Network files in and out: official pickles (read safely) and styleforge's safetensors + JSON checkpoints.

``load_network(path)`` accepts either format and decides by the file's content, not its name.
Our format is one ``.safetensors`` file holding every network of a snapshot under ``<name>.<param>`` keys
(``G_ema.synthesis.b4.const``...), with a JSON record in the metadata that names each network's ``arch`` and
config, so the modules rebuild without executing anything from the file.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import MissingNetworkError, NetworkFormatError
from ..utils.fileio import atomic_path
from .config import build_network, network_spec, skip_init
from .official import (
    discriminator_config_from_official,
    generator_config_from_official,
    read_official_pickle,
)

FORMAT_NAME = "styleforge"
FORMAT_VERSION = 1
NETWORK_KEYS = ("G", "D", "G_ema")

PathLike = Union[str, os.PathLike]


@dataclass
class NetworkBundle:
    """All networks of one file plus plain-data extras (training_set_kwargs, augment_pipe settings...)."""

    networks: Dict[str, nn.Module] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    tensors_extra: Dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. augment_pipe.p
    source_format: str = ""
    path: Optional[Path] = None  # the file it was read from


def sniff_format(path: PathLike) -> str:
    """'safetensors', 'pickle', 'zip' (a torch.save file), 'empty' or 'unknown', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:2] == b"PK":
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _load_into(net: nn.Module, tensors: Dict[str, torch.Tensor], where: str, copy: bool = False) -> None:
    """Check ``tensors`` against ``net``'s parameters and buffers and make them the module's own (float32).
    ``copy``: the tensors are views of a mapped file (official pickles' blobs), so each is copied."""
    own = dict(net.named_parameters())
    own.update(dict(net.named_buffers()))
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        raise NetworkFormatError(f"{where}: tensors do not match the network config ({'; '.join(parts)})")
    for name, t in list(tensors.items()):
        if tuple(own[name].shape) != tuple(t.shape):
            raise NetworkFormatError(
                f"{where}: {name} has shape {list(t.shape)}, the config expects {list(own[name].shape)}"
            )
        if not t.is_floating_point():
            raise NetworkFormatError(f"{where}: {name} holds {t.dtype} values, expected floating point")
        if t.dtype != torch.float32:
            tensors[name] = t.to(torch.float32)
        elif copy:
            tensors[name] = t.clone()
    net.load_state_dict(tensors, strict=True, assign=True)


def _build(arch: str, config: Dict[str, Any], tensors: Dict[str, torch.Tensor], where: str,
           copy: bool = False) -> nn.Module:
    try:
        with skip_init():
            net = build_network(arch, config)
    except Exception as e:  # an untrusted config: whatever goes wrong is a format problem of the file
        raise NetworkFormatError(f"{where}: cannot build network from its config ({type(e).__name__}: {e})") from None
    _load_into(net, tensors, where, copy=copy)
    # assign=True keeps the loaded tensors themselves; make the parameters look like freshly built ones
    for p in net.parameters():
        p.requires_grad_(True)
    return net.eval()


Which = Union[str, Sequence[str], Sequence[Sequence[str]], None]


def _select(which: Which, available: List[str], name: str) -> List[str]:
    """The networks to build: all (``None``); the first present of a name or a sequence of alternative names
    (``("G_ema", "G")``); or one network per group of a sequence of such groups (``[("G_ema", "G"), "D"]``).
    A group none of whose names is present is a MissingNetworkError."""
    if which is None:
        return list(available)
    if isinstance(which, str) or all(isinstance(k, str) for k in which):
        groups = [which]
    else:
        groups = list(which)
    out: List[str] = []
    for group in groups:
        prefs = [group] if isinstance(group, str) else list(group)
        key = next((k for k in prefs if k in available), None)
        if key is None:
            wanted = " or ".join(repr(k) for k in prefs)
            raise MissingNetworkError(f"{name}: has no network {wanted} (it has {sorted(available)})")
        if key not in out:
            out.append(key)
    return out


def _official_to_bundle(path: PathLike, which: Which) -> NetworkBundle:
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = read_official_pickle(f, name=name)
    bundle = NetworkBundle(source_format="official-pickle")
    for key in _select(which, [k for k in NETWORK_KEYS if k in data.modules], name):
        rec = data.modules[key]
        where = f"{name} [{key}]"
        try:
            if rec.class_name == "Generator":
                cfg = generator_config_from_official(rec.init_kwargs)
                arch = "stylegan2.generator"
            elif rec.class_name == "Discriminator":
                cfg = discriminator_config_from_official(rec.init_kwargs)
                arch = "stylegan2.discriminator"
            else:
                raise NetworkFormatError(f"unexpected module class {rec.class_name!r}")
        except NetworkFormatError as e:
            raise NetworkFormatError(f"{where}: {e}") from None
        except Exception as e:
            raise NetworkFormatError(f"{where}: malformed constructor settings ({type(e).__name__}: {e})") from None
        try:
            tensors = rec.named_tensors()
        except NetworkFormatError as e:
            raise NetworkFormatError(f"{where}: {e}") from None
        bundle.networks[key] = _build(arch, cfg, tensors, where, copy=True)  # tensors view the file's bytes
    bundle.extra["training_set_kwargs"] = data.training_set_kwargs
    aug = data.modules.get("augment_pipe")
    if aug is not None:
        try:
            bundle.extra["augment_pipe"] = {"class_name": aug.class_name, "init_kwargs": aug.init_kwargs}
            for k, t in aug.named_tensors().items():
                bundle.tensors_extra["augment_pipe." + k] = t.clone()
        except NetworkFormatError as e:
            raise NetworkFormatError(f"{name} [augment_pipe]: {e}") from None
    return bundle


def _safetensors_to_bundle(path: PathLike, which: Which) -> NetworkBundle:
    from safetensors import SafetensorError, safe_open

    name = os.fspath(path)
    try:
        with safe_open(name, framework="pt") as f:
            meta = f.metadata() or {}
            if FORMAT_NAME not in meta:
                raise NetworkFormatError(f"{name}: a safetensors file, but not a styleforge checkpoint (no metadata)")
            info = json.loads(meta[FORMAT_NAME])
            nets = info.get("networks") or {}
            keys = list(f.keys())
            bundle = NetworkBundle(source_format="styleforge-safetensors", extra=info.get("extra") or {})
            for key in _select(which, list(nets), name):
                prefix = key + "."
                tensors = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
                spec = nets[key]
                bundle.networks[key] = _build(spec["arch"], spec["config"], tensors, f"{name} [{key}]")
            for k in keys:
                if k.split(".", 1)[0] not in nets:
                    bundle.tensors_extra[k] = f.get_tensor(k)
    except SafetensorError as e:
        raise NetworkFormatError(f"{name}: corrupt or truncated safetensors file ({e}); re-create it") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise NetworkFormatError(f"{name}: corrupt styleforge metadata ({e})") from None
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise NetworkFormatError(f"{name}: written by a newer styleforge (format {info['format_version']}); upgrade")
    return bundle


def load_networks(path: PathLike, which: Which = None) -> NetworkBundle:
    """Load every network from an official pickle or a styleforge checkpoint, or only ``which`` (see
    :func:`_select`: a name, alternatives such as ``("G_ema", "G")``, or a list of such groups), reading the file
    once. The networks' families must be registered (:mod:`styleforge.zoo` does it for every family)."""
    path = Path(path)
    if not path.exists():
        raise NetworkFormatError(f"{path}: no such file; check the path or pass a network name")
    if path.is_dir():
        raise NetworkFormatError(f"{path}: is a directory, expected a network file (.pkl or .safetensors)")
    kind = sniff_format(path)
    bundle = _read(path, kind, which)
    bundle.path = path
    return bundle


def _read(path: Path, kind: str, which: Which) -> NetworkBundle:
    if kind == "empty":
        raise NetworkFormatError(f"{path}: the file is empty (interrupted download?); re-download it")
    if kind == "pickle":
        return _official_to_bundle(path, which)
    if kind == "safetensors":
        return _safetensors_to_bundle(path, which)
    if kind == "zip":
        raise NetworkFormatError(
            f"{path}: a torch.save zip archive (a state dict?); styleforge reads official network pickles and its "
            "own .safetensors checkpoints: build the network (e.g. styleforge.networks.Generator), load the state "
            "dict into it and write it with styleforge.networks.save_networks(path, {'G_ema': G})"
        )
    raise NetworkFormatError(f"{path}: not a network file (neither an official .pkl nor a styleforge .safetensors)")


def load_network(path: PathLike, which: Optional[str] = None, device: Union[str, torch.device, None] = None) -> nn.Module:
    """Load one network, by default the generator (``G_ema``, else ``G``), in eval mode on ``device``."""
    bundle = load_networks(path, which=which or ("G_ema", "G"))
    net = next(iter(bundle.networks.values()))
    if device is not None:
        net = net.to(device)
    return net


def save_networks(
    path: PathLike,
    networks: Dict[str, nn.Module],
    extra: Optional[Dict[str, Any]] = None,
    tensors_extra: Optional[Dict[str, torch.Tensor]] = None,
) -> Path:
    """Write ``networks`` (name -> module) to one safetensors checkpoint, atomically."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    specs = {}
    for key, net in networks.items():
        if "." in key:
            raise ValueError(f"network name {key!r} must not contain a dot")
        specs[key] = network_spec(net)
        for n, t in list(net.named_parameters()) + list(net.named_buffers()):
            tensors[f"{key}.{n}"] = t.detach().to("cpu").contiguous().clone()
    for k, t in (tensors_extra or {}).items():
        tensors[k] = t.detach().to("cpu").contiguous().clone()
    meta = {
        FORMAT_NAME: json.dumps(
            {"format_version": FORMAT_VERSION, "networks": specs, "extra": extra or {}}, sort_keys=True
        )
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # its I/O errors are not OSErrors: recover the errno, atomic_path reports it
            raise _safetensors_os_error(e, tmp) from None
    return path


def _safetensors_os_error(e: Exception, tmp: Path) -> OSError:
    """safetensors (Rust) reports a failed write as ``SafetensorError('... No space left on device (os error
    28)')``; turn it into the OSError it stands for, naming the file being written."""
    m = re.search(r"os error (\d+)", str(e))
    if m:
        code = int(m.group(1))
        return OSError(code, os.strerror(code), str(tmp))
    return OSError(None, f"safetensors: {' '.join(str(e).split())}", str(tmp))


def convert_network(src: PathLike, dst: PathLike, only: Optional[Sequence[str]] = None) -> NetworkBundle:
    """Read any supported network file and write every network in it (or only the ones named in ``only``) to a
    styleforge checkpoint."""
    bundle = load_networks(src)
    nets = bundle.networks
    if only:
        missing = [n for n in only if n not in nets]
        if missing:
            raise MissingNetworkError(f"{src}: holds {', '.join(nets)}, not {', '.join(missing)}")
        nets = {n: nets[n] for n in only}
        bundle = NetworkBundle(networks=nets, source_format=bundle.source_format, extra=bundle.extra,
                               tensors_extra=bundle.tensors_extra)
    save_networks(dst, nets, extra=bundle.extra, tensors_extra=bundle.tensors_extra)
    return bundle
