"""One loader for every network: a path, a bundled or known name, a URL, or nothing (the bundled default model)
in; modules out, read once.

Accepted ``spec`` values (see :func:`resolve`): an official ``.pkl`` or a styleforge ``.safetensors`` path (told
apart by content), the name of a model that ships with the package (``faces32``), a known published name
(``ffhq``, ``cifar10``...; fetched into the cache only when downloads are allowed), a URL, or None.

Every network family is listed in :data:`FAMILIES` and registered here, so a checkpoint of any family loads
through the same call: ``stylegan2``, SEGAN and the baselines list their modules in the table (an entry
added at run time counts from the next load). The modules are imported only when a checkpoint of that family is
read.

    from styleforge import zoo
    G, path = zoo.load_generator("ffhq.pkl", device="cpu")
    nets = zoo.load_networks("snapshot.safetensors", roles=("G", "D"))   # one read for both
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from .networks.checkpoint import NetworkBundle, load_networks as _load_file
from .networks.config import register_family
from .utils.progress import Callback

Spec = Optional[Union[str, os.PathLike]]

FAMILIES: Dict[str, Tuple[str, ...]] = {
    "stylegan2": ("styleforge.networks.generator", "styleforge.networks.discriminator"),
    "baselines": ("styleforge.baselines.nets",),
    "segan": ("styleforge.segan.networks",),
}
"""Network family -> the modules that define (and register) its archs."""


def _register_families() -> None:
    for family, modules in FAMILIES.items():
        register_family(family, modules)


_register_families()

ROLES: Dict[str, Tuple[str, ...]] = {
    "G": ("G_ema", "G"),  # the generator to sample from: the EMA weights when the file has them
    "G_train": ("G",),
    "D": ("D",),
}
"""What a tool asks for -> the network names that serve it, in order of preference."""


def resolve(spec: Spec = None, allow_download: Optional[bool] = None, callback: Optional[Callback] = None) -> Path:
    """A local file for ``spec`` (None: the bundled default model). Names and URLs come from the cache, and
    are downloaded only when allowed (``allow_download`` or ``STYLEFORGE_ALLOW_DOWNLOAD=1``), reporting the
    download to ``callback``."""
    from .assets import default_network_path
    from .utils.cache import resolve_file

    if spec is None:
        return default_network_path(callback)
    return resolve_file(str(spec), allow_download, what="network file", callback=callback)


def load_networks(spec: Spec = None, roles: Optional[Sequence[str]] = ("G",), device=None,
                  allow_download: Optional[bool] = None, callback: Optional[Callback] = None) -> NetworkBundle:
    """Read the networks that serve ``roles`` (``G``: G_ema else G; ``D``; ``G_train``: G; or any network name)
    from ``spec`` in one read, in eval mode, on ``device``. ``bundle.networks`` is keyed by role (``roles=None``:
    every network of the file, by its own name); ``bundle.path`` is the file. A download is reported to
    ``callback``."""
    path = resolve(spec, allow_download, callback)
    _register_families()
    if roles is None:
        bundle = _load_file(path)
        if device is not None:
            bundle.networks = {k: net.to(device) for k, net in bundle.networks.items()}
        return bundle
    groups = [ROLES.get(r, (r,)) for r in roles]
    bundle = _load_file(path, which=groups)
    by_role = {}
    for role, group in zip(roles, groups):
        net = next(bundle.networks[k] for k in group if k in bundle.networks)
        by_role[role] = net.to(device) if device is not None else net
    bundle.networks = by_role
    return bundle


def load_generator(spec: Spec = None, device=None, allow_download: Optional[bool] = None,
                   callback: Optional[Callback] = None) -> Tuple[torch.nn.Module, Path]:
    """The generator of ``spec`` (G_ema, else G), frozen (eval, no gradients), on ``device``; and its file."""
    bundle = load_networks(spec, ("G",), device, allow_download, callback)
    return bundle.networks["G"].eval().requires_grad_(False), bundle.path
