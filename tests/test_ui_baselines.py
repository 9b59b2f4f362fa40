"""The web UI's API on networks without a W space: the bundled ``cdcgan-mnist`` (a conditional DCGAN, 32 px, 10
classes) and a tiny MLP GAN saved here through the checkpoint writer, through FastAPI's test client.

Images are checked against ``G(z, c)`` computed here from the zoo's generator (z drawn with numpy's RandomState as
the official scripts do, the uint8 conversion written out); everything that needs a W space is refused with its
one-line message, after which the server still answers.
"""

from __future__ import annotations

import base64
import io
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

from styleforge import zoo  # noqa: E402
from styleforge.errors import StyleforgeError  # noqa: E402
from styleforge.ui import Engine, Limits  # noqa: E402
from styleforge.ui.app import create_app  # noqa: E402
from ui_helpers import bad, decode  # noqa: E402

NET = "cdcgan-mnist"
NO_W = "cdcgan-mnist has no W space (a cdcgan baseline)"


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def engine(one_thread):
    return Engine(NET, device="cpu", limits=Limits(max_seeds=16, max_frames=12, max_upload_bytes=200_000))


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def G(one_thread):
    return zoo.load_generator(NET, "cpu")[0]


def z_of(seed: int, z_dim: int = 100) -> np.ndarray:
    return np.random.RandomState(seed).randn(1, z_dim)


def images(G, z: np.ndarray, c, psi: float = 1.0) -> np.ndarray:
    """[N, H, W, C] uint8 of G(z, c) with official generate.py's conversion (x * 127.5 + 128, clamped)."""
    with torch.no_grad():
        x = G(torch.from_numpy(z), c, truncation_psi=psi)
    return (x.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def onehot(k: int, n: int = 1) -> torch.Tensor:
    c = torch.zeros([n, 10])
    c[:, k] = 1
    return c


def alive(client) -> None:
    r = client.post("/api/generate", json={"seed": 0, "class": 1})
    assert r.status_code == 200 and decode(r.content).shape == (32, 32, 1)


def test_info_says_what_a_baseline_supports(client):
    info = client.get("/api/info").json()
    assert info["network"] == NET and info["w_space"] is False and info["model"] == "a cdcgan baseline"
    assert (info["resolution"], info["channels"], info["z_dim"], info["c_dim"]) == (32, 1, 100, 10)
    assert info["classes"] == list(range(10)) and info["num_ws"] is None and info["layer_presets"] == []
    assert info["truncation"] == "z" and NO_W in info["note"]
    assert {"cdcgan-mnist", "dcgan-mnist", "faces32"} <= set(info["bundled"]) and "faces32" in info["editable"]
    assert "dcgan-mnist" not in info["editable"]


def test_seed_grid_with_a_class_is_G_of_z_and_c(client, G):
    seeds = [0, 1, 2, 3, 4, 5]
    for psi in (1.0, 0.6):  # no W space: the truncation scales z towards 0, as generate.py's --trunc does
        r = client.post("/api/generate", json={"seeds": seeds, "class": 7, "trunc": psi, "cols": 3})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        want = [images(G, z_of(s), onehot(7), psi)[0] for s in seeds]
        want = np.concatenate([np.concatenate(want[:3], axis=1), np.concatenate(want[3:], axis=1)], axis=0)
        assert np.array_equal(decode(r.content), want)
    j = client.post("/api/generate", json={"seeds": "3,5", "class": 2, "format": "json"}).json()
    assert [im["seed"] for im in j["images"]] == [3, 5]
    for im in j["images"]:
        assert np.array_equal(decode(base64.b64decode(im["png"])), images(G, z_of(im["seed"]), onehot(2))[0])
    # the page's main image: /api/render of a seed is the same image; another class, another digit
    r = client.post("/api/render", json={"latent": {"seed": 3, "class": 2}})
    assert np.array_equal(decode(r.content), decode(base64.b64decode(j["images"][0]["png"])))
    other = decode(client.post("/api/render", json={"latent": {"seed": 3, "class": 8}}).content)
    assert np.abs(other.astype(int) - decode(r.content)).max() > 50


def test_class_out_of_range_or_missing(client):
    assert bad(client.post("/api/generate", json={"seed": 1, "class": 10}), 400, "classes 0..9")["param"] == "class"
    bad(client.post("/api/generate", json={"seed": 1, "class": -1}), 400, "classes 0..9")
    bad(client.post("/api/generate", json={"seed": 1}), 400, "conditional")
    bad(client.post("/api/render", json={"latent": {"seed": 1, "class": 12}}), 400, "classes 0..9")
    bad(client.post("/api/interpolate", json={"from": {"seed": 1}, "to": {"seed": 2}, "steps": 3}), 400, "conditional")
    alive(client)


def test_interpolation_in_z(client, G):
    j = client.post("/api/interpolate", json={"from": {"seed": 1, "class": 3}, "to": {"seed": 2}, "steps": 5,
                                              "format": "frames"}).json()
    assert j["space"] == "z" and "w" not in j
    z = np.asarray(j["z"])
    assert z.shape == (5, 100)
    assert np.allclose(z[0], z_of(1)[0], atol=1e-6) and np.allclose(z[-1], z_of(2)[0], atol=1e-6)
    # slerp: the direction turns at constant speed, the length moves linearly
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    angles = np.arccos(np.clip((u[:-1] * u[1:]).sum(1), -1, 1))
    assert np.allclose(angles, angles[0], atol=1e-4) and angles[0] > 0.1
    assert np.allclose(np.diff(np.linalg.norm(z, axis=1), 2), 0, atol=1e-4)
    frames = [decode(base64.b64decode(f)) for f in j["frames"]]  # one end's class serves both
    want = images(G, z.astype(np.float64), onehot(3, 5))
    assert max(np.abs(f.astype(int) - w).max() for f, w in zip(frames, want)) <= 1
    gen = decode(client.post("/api/generate", json={"seed": 1, "class": 3}).content)
    assert np.abs(frames[0].astype(int) - gen).max() <= 1
    # two classes: the labels move from one to the other
    j = client.post("/api/interpolate", json={"from": {"seed": 1, "class": 3}, "to": {"seed": 1, "class": 5},
                                              "steps": 3, "format": "frames"}).json()
    mid = decode(base64.b64decode(j["frames"][1]))
    c = torch.zeros([1, 10])
    c[0, 3] = c[0, 5] = 0.5
    assert np.abs(mid.astype(int) - images(G, z_of(1), c)[0]).max() <= 1
    r = client.post("/api/interpolate", json={"from": {"seed": 1, "class": 3}, "to": {"seed": 2, "class": 3},
                                              "steps": 4})
    assert r.status_code == 200 and r.headers["x-space"] == "z" and Image.open(io.BytesIO(r.content)).n_frames == 4


def test_w_tools_are_refused_with_one_line(client):
    seed = {"seed": 1, "class": 3}
    cases = [
        (client.post("/api/edit", json={"latent": seed, "direction": "sefa:all:0", "strength": 2}), "editing"),
        (client.post("/api/render", json={"latent": seed, "edits": [{"direction": "ganspace:all:1", "strength": 1}]}),
         "editing"),
        (client.post("/api/render", json={"latent": {"mix": {"row": 85, "col": 55, "layers": "0-3"}}}),
         "style mixing"),
        (client.post("/api/render", json={"latent": {"w": [0.0] * 100}}), "a W latent"),
        (client.post("/api/render", json={"latent": {"latent": "proj-0123"}}), "W latent"),
        (client.post("/api/interpolate", json={"from": seed, "to": {"seed": 2}, "steps": 3, "space": "w"}),
         "interpolation in W"),
        (client.post("/api/interpolate", json={"from": seed, "to": {"mix": {"row": 1, "col": 2}}, "steps": 3}),
         "style mixing"),
        (client.post("/api/project", files={"photo": ("a.png", b"not even an image")}), "photo projection"),
        (client.post("/api/download", json={"items": [{"latent": seed, "edits": [
            {"direction": "sefa:all:0", "strength": 1}]}]}), "editing"),
    ]
    for r, what in cases:
        body = bad(r, 400, NO_W, f"{what} needs a StyleGAN network")
        assert body["param"] == "network" and "\n" not in body["error"]
        alive(client)


def test_download_holds_pngs_and_z(client, G):
    items = [{"latent": {"seed": 4, "class": 1, "trunc": 0.5}, "name": "four"},
             {"latent": {"seed": 9, "class": 6}, "name": "nine"}]
    z = zipfile.ZipFile(io.BytesIO(client.post("/api/download", json={"items": items}).content))
    assert sorted(z.namelist()) == ["four.png", "items.json", "latents.npz", "nine.png"]
    lat = np.load(io.BytesIO(z.read("latents.npz")))
    assert "w" not in lat and lat["z"].shape == (2, 100)
    assert np.allclose(lat["z"], np.concatenate([z_of(4), z_of(9)]), atol=1e-6)
    assert np.array_equal(decode(z.read("four.png")), images(G, z_of(4), onehot(1), 0.5)[0])
    assert np.array_equal(decode(z.read("nine.png")), images(G, z_of(9), onehot(6))[0])


def test_a_tiny_baseline_checkpoint_opens_from_its_path(client, tmp_path):
    """An unconditional MLP GAN built with the baselines API and saved by the checkpoint writer."""
    from styleforge.baselines.nets import MLPConfig, MLPGenerator
    from styleforge.networks.checkpoint import save_networks

    torch.manual_seed(0)
    G = MLPGenerator(MLPConfig(z_dim=8, img_resolution=8, img_channels=1, hidden=(16,))).eval()
    path = save_networks(tmp_path / "tiny-gan.safetensors", {"G_ema": G})
    info = client.get("/api/info", params={"network": str(path)}).json()
    assert info["w_space"] is False and info["model"] == "a gan baseline" and info["classes"] == []
    r = client.post("/api/generate", json={"network": str(path), "seeds": [0, 1], "cols": 2})
    want = images(G, np.concatenate([z_of(0, 8), z_of(1, 8)]), None)
    assert np.array_equal(decode(r.content), np.concatenate(list(want), axis=1))
    bad(client.post("/api/edit", json={"network": str(path), "latent": {"seed": 0}, "direction": "sefa:all:0"}),
        400, f"{path} has no W space (a gan baseline): editing needs")
    alive(client)  # the default network still answers


def test_direction_files_at_start_need_a_w_space(one_thread, tmp_path):
    d = tmp_path / "d.npy"
    np.save(d, np.ones(100, np.float32))
    with pytest.raises(StyleforgeError, match="no W space.*loading direction files needs a StyleGAN network"):
        Engine(NET, device="cpu", directions=[str(d)])
