"""``convert`` (any network file -> styleforge .safetensors) and ``info`` (what a network file holds)."""

from __future__ import annotations

import json

import click

from .options import command, user_errors
from .progress import cli_callback


@command()
@click.argument("src", metavar="SRC")
@click.argument("dst", type=click.Path(dir_okay=False), metavar="DST.safetensors")
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading SRC if it is a name or URL.")
@click.option("--only", metavar="NAMES", default=None,
              help="Write only these networks, comma-separated (e.g. G_ema: a generator-only file for sharing).")
@user_errors
def convert_cmd(src, dst, allow_download, only):
    """Convert an official network pickle (or any network file) to a styleforge checkpoint.

    The pickle is read safely: its embedded code is never executed. Every network in it (G, D, G_ema) is
    written, bit-identical, with its config as JSON metadata.

    \b
    Examples:
      styleforge convert ffhq.pkl ffhq.safetensors
      styleforge convert runs/00000-x/network-snapshot-000200.safetensors x-G_ema.safetensors --only G_ema
    """
    from ..networks.checkpoint import convert_network
    from ..utils.fileio import cleanup_on_signals
    from ..zoo import resolve

    path = resolve(src, allow_download, cli_callback())
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    with cleanup_on_signals(f"nothing was written to {dst}"):
        bundle = convert_network(path, dst, only=names)
    click.echo(f"wrote {', '.join(bundle.networks)} to {dst}")


@command()
@click.argument("network", metavar="NETWORK")
@user_errors
def info_cmd(network):
    """Print the networks, configs and sizes inside a network file (JSON)."""
    from ..networks.config import network_spec
    from ..zoo import load_networks

    bundle = load_networks(network, roles=None, allow_download=False)
    out = {"format": bundle.source_format, "networks": {}, "extra": bundle.extra}
    for k, net in bundle.networks.items():
        spec = network_spec(net)
        spec["parameters"] = sum(p.numel() for p in net.parameters())
        for attr in ("num_ws", "z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"):
            if hasattr(net, attr):
                spec[attr] = getattr(net, attr)
        out["networks"][k] = spec
    click.echo(json.dumps(out, indent=2))
