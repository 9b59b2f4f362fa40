"""``styleforge ui``: the web page and JSON API (styleforge.ui) served by uvicorn."""

from __future__ import annotations

import click

from .edit import allow_download_option, network_option
from .options import command, device_option, user_errors

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@command()
@network_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 serves every machine that can reach this one (warns).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="Port.")
@device_option
@click.option("--allow-uploads", is_flag=True, help="Accept uploaded network checkpoints (read by the safe reader; "
              "nothing in them is executed). Photos and direction files are always accepted.")
@click.option("--directions", "directions", type=click.Path(dir_okay=False), multiple=True,
              metavar="FILE", help="Direction files (.npy / .npz) shown as sliders; repeatable.")
@click.option("--threads", type=click.IntRange(1, None), default=None,
              help="torch CPU threads (default: torch's); 1 is fastest for small networks on a busy CPU.")
@click.option("--dry-run", is_flag=True, help="Load the network, build the app, print the address and exit.")
@allow_download_option
@user_errors
def ui_cmd(network, host, port, device, allow_uploads, directions, threads, dry_run, allow_download):
    """Web UI and JSON API: seeds, truncation, SeFa/GANSpace sliders, directions, style mixing, photo projection.

    \b
    The page is at http://HOST:PORT/, the API under /api (OpenAPI: /docs, /openapi.json).
    Example:
      styleforge ui --network ffhq.pkl            # http://127.0.0.1:7860
    """
    from ..errors import StyleforgeError

    try:
        import uvicorn

        from ..ui import Engine
        from ..ui.app import create_app
    except ImportError as e:
        raise StyleforgeError(f"the web UI needs its extra ({e.name} is missing): pip install 'styleforge[ui]'") \
            from None
    if host not in LOCAL_HOSTS:
        click.echo(f"warning: --host {host} serves the UI and API to every machine that can reach this one; "
                   "there is no login (default: 127.0.0.1, this machine only)", err=True)
    engine = Engine(network, device=device, allow_uploads=allow_uploads, allow_download=allow_download,
                    directions=directions, threads=threads)
    app = create_app(engine)
    shown = f"[{host}]" if ":" in host else host
    net = engine.network()
    click.echo(f"styleforge ui: {net.label} on {engine.device}; http://{shown}:{port}/ (API: /docs)"
               + ("" if dry_run else "; Ctrl-C stops"))
    if dry_run:
        return
    uvicorn.run(app, host=host, port=port, log_level="warning")
