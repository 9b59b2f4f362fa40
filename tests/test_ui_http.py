"""The web UI over real HTTP: uvicorn on 127.0.0.1 (a free port) in this process, spoken to with httpx (the JSON
API) and with Debian's chromium driven by playwright (the page: a slider moved, a new image shown)."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
pytest.importorskip("uvicorn", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
httpx = pytest.importorskip("httpx", reason="the API tests need httpx (dev extra)")

from PIL import Image  # noqa: E402

from styleforge.ui import Engine, Limits  # noqa: E402
from styleforge.ui.app import create_app  # noqa: E402
from styleforge.ui.server import running  # noqa: E402

CHROMIUM = Path(os.environ.get("STYLEFORGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # faces32: ~10 ms per image on one thread, far slower on two of a busy CPU
    engine = Engine(device="cpu", limits=Limits(max_seeds=12, max_upload_bytes=100_000))
    try:
        with running(create_app(engine)) as url:
            yield url, engine
    finally:
        torch.set_num_threads(n)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_binds_to_the_loopback_address(server):
    url, _ = server
    assert url.startswith("http://127.0.0.1:")


def test_api_status_codes_and_images(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/generate", content=b'{"seed": 3, "trunc": 0.7}',  # as curl -d sends it
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert decode(r.content).shape == (32, 32)
        r = c.post("/api/generate", json={"seeds": "0-3"})
        assert decode(r.content).shape == (64, 64)  # a 2x2 grid
        r = c.post("/api/interpolate", json={"from": {"seed": 0}, "to": {"seed": 1}, "steps": 4})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).n_frames == 4
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200


def test_api_refusals_leave_the_server_up(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as c:
        cases = [
            (c.post("/api/generate", json={"seed": 2**32}), 400, "out of range"),
            (c.post("/api/generate", json={"seeds": list(range(13))}), 400, "at most 12"),
            (c.post("/api/generate", content=b"x" * 200_000, headers={"content-type": "application/json"}), 413,
             "at most"),
            (c.post("/api/project", files={"photo": ("a.txt", b"plain text")}), 400, "not a readable image"),
            (c.post("/api/networks", files={"file": ("n.pkl", b"junk")}), 403, "--allow-uploads"),
            (c.get("/api/info", params={"network": __file__}), 400, "not a network file"),
            (c.post("/api/render", json={"latent": {}}), 400, "exactly one"),
        ]
        for r, status, words in cases:
            assert r.status_code == status and words in r.json()["error"], (r.status_code, r.text)
            assert c.post("/api/generate", json={"seed": 1}).status_code == 200


@contextlib.contextmanager
def _new_page():
    """A blank page in headless Debian chromium (skips with the reason when chromium or playwright is absent)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: the browser test needs Debian's chromium (apt-get install chromium; "
                    "the README's test command runs tools/install-chromium.sh)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_page_slider_shows_a_new_image(server):
    url, _ = server
    with _new_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_function("window.sfRenders >= 1 && document.querySelectorAll('#grid img').length == 12",
                               timeout=20_000)
        assert "device: cpu" in page.inner_text("#device")
        first = page.evaluate("document.getElementById('main-img').src")
        pixels = ("(() => { const i = document.getElementById('main-img');"
                  " const c = document.createElement('canvas');"
                  " c.width = i.naturalWidth; c.height = i.naturalHeight;"
                  " const x = c.getContext('2d'); x.drawImage(i, 0, 0);"
                  " return Array.from(x.getImageData(0, 0, c.width, c.height).data); })()")
        before = np.array(page.evaluate(pixels))
        box = page.locator("#factor-1").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)  # move the slider
        page.wait_for_function("window.sfRenders >= 2", timeout=20_000)
        assert float(page.input_value("#factor-1")) > 3
        assert page.evaluate("document.getElementById('main-img').src") != first
        assert page.evaluate("document.getElementById('main-img').naturalWidth") == 32
        after = np.array(page.evaluate(pixels))
        assert before.shape == after.shape and np.abs(before - after).max() > 10  # a different image
        assert page.inner_text("#msg") == "" and not errors


def test_page_shows_a_readable_error(server):
    url, _ = server
    with _new_page() as page:
        page.goto(url + "/")
        page.wait_for_function("window.sfRenders >= 1", timeout=20_000)
        page.select_option("#net-pick", "__path__")
        page.fill("#net-path", "/no/such/network.pkl")
        page.click("#net-load")
        page.wait_for_function("document.getElementById('msg').textContent.length > 0", timeout=10_000)
        assert "/no/such/network.pkl" in page.inner_text("#msg")
        page.set_input_files("#photo", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                               "buffer": b"not a photo"}])
        page.click("#photo-go")
        page.wait_for_function("document.getElementById('msg').textContent.includes('notes.txt')",
                               timeout=10_000)
        assert "not a readable image" in page.inner_text("#msg")
        # the page still works: another seed renders
        n = page.evaluate("window.sfRenders")
        page.click("#grid img:nth-child(3)")
        page.wait_for_function(f"window.sfRenders > {n}", timeout=10_000)
        assert page.inner_text("#base-label") == "seed 2"


def test_page_drops_stale_slider_events(server):
    """20 slider moves in a burst: far fewer renders than moves, and the image shown is the newest value's."""
    url, _ = server
    with _new_page() as page:
        page.goto(url + "/")
        page.wait_for_function("window.sfRenders >= 1", timeout=20_000)
        n0 = page.evaluate("window.sfRenders")
        page.evaluate("""() => { const el = document.getElementById('factor-2');
            for (let i = 1; i <= 20; i++) { el.value = (i / 5).toFixed(1); el.dispatchEvent(new Event('input')); }
        }""")
        page.wait_for_function("window.sfLatency.length >= 2", timeout=20_000)
        page.wait_for_timeout(500)  # let any follow-up request finish
        renders = page.evaluate("window.sfRenders") - n0
        assert 1 <= renders <= 3, renders
        shown = page.evaluate("""async () => { const r = await fetch(document.getElementById('main-img').src);
            return Array.from(new Uint8Array(await r.arrayBuffer())); }""")
    with httpx.Client(base_url=url, timeout=30) as c:
        want = c.post("/api/render", json={"latent": {"seed": 0, "trunc": 0.7},
                                           "edits": [{"direction": "sefa:all:2", "strength": 4.0}]}).content
    assert np.array_equal(decode(bytes(shown)), decode(want))


def test_page_baseline_without_w_space(server):
    """A bundled baseline (cdcgan-mnist, no W space) picked on the page: the note is shown, the W tools hidden,
    the seed grid follows the class picker, and the Z interpolation plays."""
    url, _ = server
    with _new_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_function("window.sfRenders >= 1", timeout=20_000)
        assert page.is_hidden("#note") and page.is_visible("#right")
        page.select_option("#net-pick", "cdcgan-mnist")
        page.click("#net-load")
        page.wait_for_function("document.getElementById('note').textContent.includes('no W space')", timeout=20_000)
        assert page.is_visible("#note") and "cdcgan" in page.inner_text("#note")
        for w_only in ("#right", "#mix-go", "#photo-go", "#reset"):
            assert page.is_hidden(w_only), w_only
        assert page.eval_on_selector_all("#class-pick option", "os => os.length") == 10
        page.wait_for_function("document.querySelectorAll('#grid img').length == 12", timeout=20_000)
        first = page.eval_on_selector("#grid img", "el => el.src")
        page.select_option("#class-pick", "7")
        page.wait_for_function(f"document.querySelector('#grid img').src != {first!r}", timeout=20_000)
        page.click("#interp-go")
        page.wait_for_function("document.getElementById('interp-img').naturalWidth > 0", timeout=20_000)
        assert page.inner_text("#msg") == "" and not errors


def test_styleforge_ui_command_serves_and_stops(tmp_path):
    """The real command in its own process: serves the page and the API on 127.0.0.1, stops on SIGINT."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "styleforge.cli", "ui", "--port", str(port), "--device", "cpu",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, up = time.monotonic() + 60, False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert up, proc.stdout.read() if proc.poll() is not None else "no answer"
        r = httpx.post(f"http://127.0.0.1:{port}/api/generate", json={"seed": 3, "trunc": 0.7}, timeout=30)
        assert r.status_code == 200 and decode(r.content).shape == (32, 32)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out and "faces32" in out and "warning" not in out
