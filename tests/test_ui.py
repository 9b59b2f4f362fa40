"""The web UI's app logic through FastAPI's own test client, on the bundled faces32 (32 px, 8 latent layers).

Images are checked against independent computations with the library (official generate.py's files, directions.apply,
style_mix, the projector's latent rendered again), bad input against its 4xx JSON message, and after every bad
request the server still answers.
"""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (dev extra)")

from PIL import Image  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2
    from fastapi.testclient import TestClient  # noqa: E402

from styleforge.ui import Engine, Limits  # noqa: E402
from styleforge.ui.app import create_app  # noqa: E402
from styleforge.ui.engine import FifoLock  # noqa: E402
from ui_helpers import bad, decode  # noqa: E402


@pytest.fixture(scope="module")
def module_one_thread():
    """faces32 takes ~10 ms per image on one thread, but 0.1-0.6 s on two when other processes load the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def engine(module_one_thread):
    return Engine(device="cpu", limits=Limits(max_seeds=16, max_frames=12, max_upload_bytes=200_000))


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine), raise_server_exceptions=False)


def alive(client) -> None:
    r = client.post("/api/generate", json={"seed": 0})
    assert r.status_code == 200 and decode(r.content).shape == (32, 32, 1)


def test_page_and_openapi(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="main-img"' in r.text and "/static/app.js" in r.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/generate", "/api/interpolate", "/api/edit", "/api/render", "/api/project", "/api/download"):
        assert p in paths


def test_info_names_device_and_network(client):
    info = client.get("/api/info").json()
    assert info["device"] == "cpu" and info["network"] == "faces32" and "faces32" in info["bundled"]
    assert "cdcgan-mnist" in info["bundled"] and info["editable"] == ["faces32"]  # baselines open too (no W)
    assert info["w_space"] is True and info["truncation"] == "w"
    assert (info["resolution"], info["channels"], info["num_ws"]) == (32, 1, 8)
    assert info["layer_presets"][:2] == ["all", "0-1"] and info["allow_uploads"] is False


def test_generate_is_official_generate(client, tmp_path, engine):
    """The API's PNG of seed 3 at psi 0.7 is generate.py's seed0003.png, pixel for pixel; curl's -d (form
    content type) is read as JSON."""
    from styleforge.generate import generate_images

    generate_images(tmp_path, None, [3, 5], truncation_psi=0.7, device="cpu", batch_size=1)
    r = client.post("/api/generate", content='{"seed": 3, "trunc": 0.7}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    want = decode((tmp_path / "seed0003.png").read_bytes())
    assert np.array_equal(decode(r.content), want)
    j = client.post("/api/generate", json={"seeds": "3,5", "trunc": 0.7, "format": "json"}).json()
    assert [im["seed"] for im in j["images"]] == [3, 5]
    import base64

    for im in j["images"]:
        got = decode(base64.b64decode(im["png"]))
        assert np.array_equal(got, decode((tmp_path / f"seed{im['seed']:04d}.png").read_bytes()))
    grid = decode(client.post("/api/generate", json={"seeds": [3, 5], "trunc": 0.7, "cols": 2}).content)
    assert np.array_equal(grid, np.concatenate([want, decode((tmp_path / "seed0005.png").read_bytes())], axis=1))


def test_render_with_edits_equals_the_library(client, engine):
    from styleforge.directions import apply
    from styleforge.directions.ganspace import ganspace_directions
    from styleforge.directions.render import seeds_to_ws, synthesize
    from styleforge.directions.sefa import sefa

    G = engine.network().G
    body = {"latent": {"seed": 7, "trunc": 0.8},
            "edits": [{"direction": "sefa:0-1:1", "strength": 2.5}, {"direction": "ganspace:all:0", "strength": -1}]}
    got = decode(client.post("/api/render", json=body).content)
    ws = seeds_to_ws(G, [7], 0.8)
    ws = apply(ws, sefa(G, "0-1", 16).directions[1], 2.5)
    ws = apply(ws, ganspace_directions(engine.network()._pca, None, G.num_ws)[0], -1)
    assert np.abs(got.astype(int) - synthesize(G, ws)[0].astype(int)).max() <= 1
    plain = decode(client.post("/api/render", json={"latent": {"seed": 7, "trunc": 0.8}}).content)
    assert np.abs(plain.astype(int) - got.astype(int)).max() > 10  # the edit changes the image


def test_edit_strip_and_json(client, engine):
    r = client.post("/api/edit", json={"latent": {"seed": 1}, "direction": "sefa:all:0", "strengths": [-3, 0, 3]})
    strip = decode(r.content)
    assert strip.shape == (32, 96, 1)
    assert np.array_equal(strip[:, 32:64], decode(client.post("/api/generate", json={"seed": 1}).content))
    j = client.post("/api/edit", json={"latent": {"seed": 1}, "direction": "sefa:all:0", "strength": 3,
                                       "format": "json"}).json()
    w = np.asarray(j["w"], dtype=np.float32)
    assert w.shape == (1, 8, 256)
    r = client.post("/api/render", json={"latent": {"w": w[0].tolist()}})
    assert np.array_equal(decode(r.content), strip[:, 64:])


def test_style_mixing_is_official(client, engine):
    from styleforge.directions.mixing import style_mix

    want = style_mix(engine.network().G, [85], [55], "0-3", 0.9)[(85, 55)]
    got = decode(client.post("/api/render", json={"latent": {"mix": {"row": 85, "col": 55, "layers": "0-3",
                                                                       "trunc": 0.9}}}).content)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_interpolate_gif_and_frames(client):
    r = client.post("/api/interpolate", json={"from": {"seed": 1}, "to": {"seed": 2}, "steps": 5})
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.headers["x-space"] == "z"
    assert Image.open(io.BytesIO(r.content)).n_frames == 5
    j = client.post("/api/interpolate", json={"from": {"seed": 1}, "to": {"seed": 2}, "steps": 5,
                                              "format": "frames"}).json()
    import base64

    frames = [decode(base64.b64decode(f)) for f in j["frames"]]
    ends = [decode(client.post("/api/generate", json={"seed": s}).content) for s in (1, 2)]
    assert np.abs(frames[0].astype(int) - ends[0]).max() <= 1 and np.abs(frames[-1].astype(int) - ends[1]).max() <= 1
    j = client.post("/api/interpolate", json={"from": {"seed": 1}, "to": {"mix": {"row": 3, "col": 4}}, "steps": 3,
                                              "format": "frames"}).json()
    assert j["space"] == "w+" and np.asarray(j["w"]).shape == (3, 8, 256)


def test_download_zip_holds_pngs_and_their_latents(client, engine):
    from styleforge.directions.render import synthesize

    items = [{"latent": {"seed": 4, "trunc": 0.7}, "name": "seed4"},
             {"latent": {"seed": 4, "trunc": 0.7}, "edits": [{"direction": "sefa:all:2", "strength": 2}],
              "name": "current"}]
    r = client.post("/api/download", json={"items": items})
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["current.png", "items.json", "latents.npz", "seed4.png"]
    w = np.load(io.BytesIO(z.read("latents.npz")))["w"]
    assert w.shape == (2, 8, 256)
    imgs = synthesize(engine.network().G, w)
    assert np.array_equal(decode(z.read("seed4.png")), imgs[0])
    assert np.array_equal(decode(z.read("current.png")), imgs[1])
    assert json.loads(z.read("items.json"))["network"] == "faces32"


def test_results_are_cached(client, engine):
    body = {"latent": {"seed": 11, "trunc": 0.5}, "edits": [{"direction": "sefa:all:3", "strength": 1.5}]}
    a = client.post("/api/render", json=body).content
    hits = engine.cache.hits
    b = client.post("/api/render", json=body).content
    assert a == b and engine.cache.hits == hits + 1


def test_one_forward_pass_at_a_time(client, engine, monkeypatch):
    G = engine.network().G
    orig = G.synthesis.forward
    active, peak = [0], [0]
    guard = threading.Lock()

    def counting(*a, **k):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        try:
            return orig(*a, **k)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(G.synthesis, "forward", counting)
    codes = []
    threads = [threading.Thread(target=lambda s=s: codes.append(
        client.post("/api/render", json={"latent": {"seed": 1000 + s}}).status_code)) for s in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert codes == [200] * 8 and peak[0] == 1


def test_fifo_lock_serves_in_arrival_order():
    lock, order = FifoLock(), []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # arrive in order
    lock.release()
    [t.join() for t in threads]
    assert order == [0, 1, 2, 3, 4]
    with lock:  # re-entrant for its owner
        with lock:
            pass
    with pytest.raises(RuntimeError):
        lock.release()


@pytest.mark.parametrize("body,status,words", [
    ({"seed": -1}, 400, ["seed -1", "out of range"]),
    ({"seed": 2**32}, 400, ["out of range"]),
    ({"seed": "abc"}, 422, ["seed"]),
    ({"seeds": "0-99"}, 400, ["100 seeds, at most 16"]),
    ({"seed": 1, "seeds": [1]}, 400, ["not both"]),
    ({"seed": 1, "trunc": "nan"}, 400, ["trunc", "finite"]),
    ({"seed": 1, "noise_mode": "loud"}, 422, ["noise_mode"]),
])
def test_generate_bad_input(client, body, status, words):
    p = bad(client.post("/api/generate", json=body), status, *words)
    assert p.get("param") in ("seed", "seeds", "trunc", "noise_mode")
    alive(client)


def test_other_bad_requests(client):
    bad(client.post("/api/render", json={"latent": {"seed": 1}, "edits": [{"direction": "sefa:all:99"}]}), 400,
        "out of range")
    bad(client.post("/api/render", json={"latent": {"seed": 1}, "edits": [{"direction": "what"}]}), 404, "unknown")
    bad(client.post("/api/render", json={"latent": {"seed": 1, "latent": "x"}}), 400, "exactly one")
    bad(client.post("/api/render", json={"latent": {"w": [1, 2, 3]}}), 400, "[256] or [8, 256]")
    bad(client.post("/api/render", json={"latent": {"mix": {"row": 1, "col": 2, "layers": "5-9"}}}), 400, "layer 8")
    bad(client.post("/api/interpolate", json={"from": {"seed": 1}, "to": {"seed": 2}, "steps": 500}), 400, "2 to 12")
    bad(client.post("/api/edit", json={"latent": {"latent": "nope"}, "direction": "sefa:all:0"}), 404, "nope")
    bad(client.post("/api/render", content=b"{not json", headers={"content-type": "application/json"}), 422,
        "not valid JSON")
    bad(client.get("/api/jobs/nojob"), 404, "nojob")
    alive(client)


def test_body_and_upload_limits(client):
    big = b"\0" * 300_000
    bad(client.post("/api/project", files={"photo": ("big.png", big)}), 413, "293 KiB, at most 195 KiB")
    bad(client.post("/api/render", content=big, headers={"content-type": "application/json"}), 413)
    alive(client)


def test_networks_from_paths_and_uploads(client, tmp_path, engine):
    (tmp_path / "notes.txt").write_text("not a network")
    bad(client.get("/api/info", params={"network": str(tmp_path / "notes.txt")}), 400, "not a network file")
    bad(client.get("/api/info", params={"network": str(tmp_path / "missing.pkl")}), 400, "no such")
    bad(client.post("/api/networks", files={"file": ("faces.safetensors", b"x")}), 403, "--allow-uploads")
    alive(client)


def test_uploads_only_through_the_safe_reader(module_one_thread, tmp_path):
    """With --allow-uploads a checkpoint loads (same images as from its path); a pickle that would run code is
    refused by name and runs nothing; garbage is refused; the server goes on."""
    import os

    from styleforge.assets import bundled_model_path

    eng = Engine(device="cpu", allow_uploads=True)
    c = TestClient(create_app(eng), raise_server_exceptions=False)
    info = c.post("/api/networks", files={"file": ("mine.safetensors", bundled_model_path().read_bytes())}).json()
    assert info["network"].startswith("upload:") and info["resolution"] == 32
    a = c.post("/api/generate", json={"seed": 9, "network": info["network"]}).content
    assert a == c.post("/api/generate", json={"seed": 9}).content

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    body = bad(c.post("/api/networks", files={"file": ("evil.pkl", pickle.dumps({"G_ema": Evil()}, protocol=3))}),
               400, "evil.pkl")
    assert "system" in body["error"] and not marker.exists()
    bad(c.post("/api/networks", files={"file": ("x.pkl", b"garbage" * 10)}), 400, "x.pkl")
    alive(c)


def test_direction_files(client, engine, tmp_path):
    from styleforge.directions import Direction, apply
    from styleforge.directions.render import seeds_to_ws, synthesize

    v = np.random.RandomState(0).randn(256).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, v)
    j = client.post("/api/directions", files={"file": ("smile.npy", buf.getvalue())}).json()
    did = j["directions"][0]["id"]
    assert did == "file:smile:0"
    got = decode(client.post("/api/render", json={"latent": {"seed": 2}, "edits": [
        {"direction": did, "strength": 0.5, "layers": "0-3"}]}).content)
    G = engine.network().G
    want = synthesize(G, apply(seeds_to_ws(G, [2]), Direction(v), 0.5, "0-3"))[0]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert did in [d["id"] for d in client.get("/api/info").json()["directions"]]
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bad(client.post("/api/directions", files={"file": ("evil.npy", buf.getvalue())}), 400, "evil.npy")
    buf = io.BytesIO()
    np.save(buf, np.ones(64, np.float32))
    client.post("/api/directions", files={"file": ("narrow.npy", buf.getvalue())})
    bad(client.post("/api/render", json={"latent": {"seed": 2}, "edits": [{"direction": "file:narrow:0"}]}), 400,
        "64 wide")
    bad(client.post("/api/directions", files={"file": ("notes.txt", b"hello")}), 400, ".npy or .npz")
    alive(client)


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_photo_bad_input(client):
    bad(client.post("/api/project", files={"photo": ("notes.txt", b"hello, not an image")}), 400,
        "notes.txt", "not a readable image")
    pytest.importorskip("dlib", reason="face detection needs the align extra (dlib-bin)")
    gray = _png_bytes(np.full((120, 120, 3), 128, np.uint8))
    bad(client.post("/api/project", files={"photo": ("wall.png", gray)}), 400, "wall.png", "no face")
    alive(client)


def _wait(client, job_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = client.get(f"/api/jobs/{job_id}").json()
        if s["state"] not in ("queued", "projecting"):
            return s
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {s}")


def test_photo_align_project_edit(client, engine):
    """A real photo: aligned (dlib), projected a few steps, its latent rendered and edited; the result image is
    the stored latent's rendering."""
    pytest.importorskip("dlib", reason="face detection needs the align extra (dlib-bin)")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the photo")
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).resize((320, 320)).save(buf, format="JPEG", quality=90)
    photo = buf.getvalue()
    r = client.post("/api/project", files={"photo": ("astronaut.png", photo)}, data={"steps": "4"})
    assert r.status_code == 202, r.text
    s = _wait(client, r.json()["job"])
    assert s["state"] == "done" and s["step"] == 4 and s["dist"] is not None and s["latent"], s
    target = decode(client.get(f"/api/jobs/{s['job']}/target.png").content)
    assert target.shape == (32, 32, 1) and target.std() > 10  # the aligned face, in gray
    result = client.get(f"/api/jobs/{s['job']}/result.png").content
    assert client.post("/api/render", json={"latent": {"latent": s["latent"]}}).content == result
    r = client.post("/api/render", json={"latent": {"latent": s["latent"]},
                                         "edits": [{"direction": "sefa:all:1", "strength": 3}]})
    assert r.status_code == 200 and r.content != result


def test_projection_cancels_and_renders_go_on_meanwhile(client, engine):
    gray = _png_bytes(np.random.RandomState(0).randint(0, 255, (40, 40, 3)).astype(np.uint8))
    r = client.post("/api/project", files={"photo": ("noise.png", gray)}, data={"align": "false", "steps": "1000"})
    job = r.json()["job"]
    deadline = time.monotonic() + 30
    while client.get(f"/api/jobs/{job}").json()["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.perf_counter()
    assert client.post("/api/render", json={"latent": {"seed": 31337}}).status_code == 200
    assert time.perf_counter() - t0 < 5  # queued between projection steps, not behind 1000 of them
    assert client.post(f"/api/jobs/{job}/cancel").status_code == 200
    s = _wait(client, job, 10)
    assert s["state"] == "cancelled" and 2 <= s["step"] < 1000
    alive(client)


def test_cli_dry_run_and_host_warning():
    from click.testing import CliRunner

    from styleforge.cli import main

    r = CliRunner().invoke(main, ["ui", "--dry-run", "--device", "cpu"])
    assert r.exit_code == 0 and "http://127.0.0.1:7860/" in r.output and "faces32" in r.output
    assert "warning" not in r.output
    r = CliRunner().invoke(main, ["ui", "--dry-run", "--device", "cpu", "--host", "0.0.0.0", "--port", "8000"])
    assert r.exit_code == 0 and "warning: --host 0.0.0.0" in r.output and "http://0.0.0.0:8000/" in r.output
    r = CliRunner().invoke(main, ["ui", "--dry-run", "--network", "nothere.pkl"])
    assert r.exit_code == 1 and "error:" in r.output and "nothere.pkl" in r.output


def test_cli_direction_files_are_checked_at_start(tmp_path):
    from click.testing import CliRunner

    from styleforge.cli import main

    np.save(tmp_path / "age.npy", np.ones((18, 256), np.float32))  # [18, 512]-style file: identical rows fit
    np.save(tmp_path / "narrow.npy", np.ones(64, np.float32))
    r = CliRunner().invoke(main, ["ui", "--dry-run", "--device", "cpu", "--directions", str(tmp_path / "age.npy")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["ui", "--dry-run", "--device", "cpu", "--directions", str(tmp_path / "narrow.npy")])
    assert r.exit_code == 1 and "narrow.npy" in r.output and "64 wide" in r.output


def test_cli_without_the_ui_extra_says_what_to_install(monkeypatch):
    import sys

    from click.testing import CliRunner

    from styleforge.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    r = CliRunner().invoke(main, ["ui", "--dry-run"])
    assert r.exit_code == 1 and "pip install 'styleforge[ui]'" in r.output and "uvicorn" in r.output
