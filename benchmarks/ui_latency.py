#!/usr/bin/env python3
"""Web UI latency in a real browser: a slider moved -> the new image on screen, in milliseconds.

The server (``styleforge.ui``, uvicorn on 127.0.0.1, a free port) runs in this process; Debian's chromium, driven by
playwright, opens the page and clicks SeFa sliders at new positions (each move a new, uncached image). The page itself
measures each move (``window.sfLatency``: from the slider's input event to the frame after the new image has loaded;
``static/app.js``), so the time covers the request, the forward pass, PNG encoding, the transfer and the decode.
One warm-up move, then ``--moves`` timed ones; prints min / median / max per network and thread count.

Networks: the bundled ``faces32`` and ``paper256``, a 256-px generator of the full paper256 config built in memory
from random weights (``benchmarks/fullsize.py``).

    python benchmarks/ui_latency.py                            # both networks, 1 and 2 torch threads
    python benchmarks/ui_latency.py --only faces32 --threads 1 --screenshot docs/ui.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def measure(network: str, threads: int, moves: int, chromium: str, screenshot: str = "") -> dict:
    import torch
    from playwright.sync_api import sync_playwright

    from styleforge.ui import Engine
    from styleforge.ui.app import create_app
    from styleforge.ui.server import running

    torch.set_num_threads(threads)
    if network == "faces32":
        engine = Engine("faces32", device="cpu")
    else:
        from fullsize import full_size_generator

        engine = Engine(device="cpu", preloaded={network: full_size_generator(network)})
    with running(create_app(engine)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(url + "/")
            page.wait_for_function("window.sfRenders >= 1 && document.querySelectorAll('#grid img').length > 0",
                                   timeout=120_000)
            positions = [0.9, 0.15, 0.7, 0.3, 0.8, 0.05, 0.6, 0.4, 0.95, 0.25]
            for i in range(moves + 1):
                slider = f"#factor-{i % 4}"
                box = page.locator(slider).bounding_box()
                n = page.evaluate("window.sfLatency.length")
                page.mouse.click(box["x"] + box["width"] * positions[(i + i // 4) % len(positions)],
                                 box["y"] + box["height"] / 2)
                page.wait_for_function(f"window.sfLatency.length > {n}", timeout=120_000)
            times = page.evaluate("window.sfLatency")[-moves:]
            if screenshot:
                show_projection(page)
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=screenshot)
        finally:
            browser.close()
    return {"network": network, "resolution": engine.network().G.img_resolution, "threads": threads, "moves": moves,
            "min_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1)}


def show_projection(page) -> None:
    """For the screenshot: scikit-image's astronaut photo aligned and projected (150 steps), then edited along
    SeFa factor 1 (needs scikit-image and dlib; skipped without them)."""
    import io

    try:
        import dlib  # noqa: F401
        from PIL import Image
        from skimage import data
    except ImportError:
        return
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    page.click("#reset")
    page.set_input_files("#photo", files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg",
                                           "buffer": buf.getvalue()}])
    page.fill("#photo-steps", "150")
    page.click("#photo-go")
    page.wait_for_function("document.getElementById('photo-status').textContent.startsWith('done')", timeout=300_000)
    n = page.evaluate("window.sfRenders")
    box = page.locator("#factor-1").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    page.wait_for_function(f"window.sfRenders > {n + 1}", timeout=60_000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["faces32", "paper256"])
    ap.add_argument("--threads", default="1,2", help="torch CPU threads to try, e.g. 1,2")
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot", default="", help="save a screenshot of the faces32 page here (e.g. docs/ui.png)")
    args = ap.parse_args()
    rows = []
    for net in [args.only] if args.only else ["faces32", "paper256"]:
        for t in [int(x) for x in args.threads.split(",")]:
            shot = args.screenshot if net == "faces32" and not rows else ""
            rows.append(measure(net, t, args.moves, args.chromium, shot))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'network':10} {'px':>4} {'threads':>7} {'min ms':>8} {'median ms':>10} {'max ms':>8}")
    for r in rows:
        print(f"{r['network']:10} {r['resolution']:4d} {r['threads']:7d} {r['min_ms']:8.1f} {r['median_ms']:10.1f} "
              f"{r['max_ms']:8.1f}")


if __name__ == "__main__":
    main()
