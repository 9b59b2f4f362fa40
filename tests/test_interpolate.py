"""Interpolation: lerp/slerp maths, endpoints equal to the inputs, outputs (strip, video, npz), errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import assert_one_line_error, tiny_generator
from styleforge.commands.generate import generate_cmd
from styleforge.commands.interpolate import interpolate_cmd
from styleforge.errors import StyleforgeError
from styleforge.latents import seed_to_z
from styleforge.networks.checkpoint import save_networks
from styleforge.project.interpolate import interpolate_latents, lerp, slerp
from styleforge.utils.fileio import save_npz


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def net(tmp_path):
    return save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})


@pytest.fixture()
def latents(tmp_path):
    """A W latent (same w in every layer) and a W+ latent, shaped like projected_w.npz."""
    rs = np.random.RandomState(0)
    w = np.repeat(rs.randn(1, 1, 32).astype(np.float32), 6, axis=1)
    wp = rs.randn(1, 6, 32).astype(np.float32)
    w2 = np.repeat(rs.randn(1, 1, 32).astype(np.float32), 6, axis=1)
    return {
        "w": (save_npz(tmp_path / "a.npz", w=w), w),
        "w2": (save_npz(tmp_path / "c.npz", w=w2), w2),
        "wp": (save_npz(tmp_path / "b.npz", w=wp), wp),
    }


def run(args, cmd=interpolate_cmd):
    return CliRunner().invoke(cmd, [str(a) for a in args])


one_line_error = assert_one_line_error


def test_slerp_stays_on_sphere():
    rs = np.random.RandomState(1)
    for _ in range(5):
        a, b = rs.randn(512), rs.randn(512)
        a /= np.linalg.norm(a)
        b /= np.linalg.norm(b)
        t = np.linspace(0, 1, 11)
        s = slerp(a, b, t)
        assert np.allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-12)
        assert np.array_equal(s[0], a) and np.array_equal(s[-1], b)
        ang = np.arccos(np.clip(np.sum(s[1:] * s[:-1], axis=1), -1, 1))
        assert np.allclose(ang, ang[0], atol=1e-9)  # constant angular speed
    # non-unit vectors: the length is interpolated linearly
    a, b = rs.randn(8) * 3, rs.randn(8)
    s = slerp(a, b, [0, 0.5, 1])
    assert np.linalg.norm(s[1]) == pytest.approx((np.linalg.norm(a) + np.linalg.norm(b)) / 2)
    # parallel vectors fall back to lerp
    assert np.allclose(slerp(a, 2 * a, [0.5])[0], 1.5 * a)


def test_lerp_endpoints_exact():
    rs = np.random.RandomState(2)
    a, b = rs.randn(6, 32).astype(np.float32), rs.randn(6, 32).astype(np.float32)
    out = lerp(a, b, np.linspace(0, 1, 7))
    assert out.shape == (7, 6, 32)
    assert np.array_equal(out[0], a) and np.array_equal(out[-1], b)
    assert np.allclose(out[3], (a.astype(np.float64) + b) / 2)


def test_npz_endpoints_equal_inputs_wplus(tmp_path, net, latents):
    out = tmp_path / "o"
    (fa, wa), (fb, wb) = latents["w"], latents["wp"]
    r = run(["--network", net, "--from", fa, "--to", fb, "--steps", 5, "--outdir", out, "--no-video"])
    assert r.exit_code == 0, r.output
    with np.load(out / "interp.npz") as d:
        w, t = d["w"], d["t"]
    assert w.shape == (5, 6, 32) and np.array_equal(t, np.linspace(0, 1, 5).astype(np.float32))
    assert np.array_equal(w[0], wa[0]) and np.array_equal(w[-1], wb[0])
    rec = json.loads((out / "interpolation.json").read_text())
    assert rec["space"] == "w+"  # chosen because the second latent's layers differ
    assert Image.open(out / "interp.png").size == (5 * 16, 16)
    assert sorted(p.name for p in out.iterdir()) == ["interp.npz", "interp.png", "interpolation.json"]
    # the first frame equals generate.py --projected-w of the start latent
    r = run(["--network", net, "--projected-w", fa, "--outdir", tmp_path / "g"], generate_cmd)
    assert r.exit_code == 0, r.output
    first = np.asarray(Image.open(out / "interp.png"))[:, :16]
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "g" / "proj00.png")))


def test_w_space_between_w_latents(tmp_path, net, latents):
    out = tmp_path / "o"
    (fa, wa), (fc, wc) = latents["w"], latents["w2"]
    r = run(["--network", net, "--from", fa, "--to", fc, "--steps", 3, "--outdir", out, "--gif"])
    assert r.exit_code == 0, r.output
    with np.load(out / "interp.npz") as d:
        w = d["w"]
    assert np.array_equal(w[0], wa[0]) and np.array_equal(w[-1], wc[0])
    assert np.array_equal(w, np.repeat(w[:, :1], 6, axis=1))
    assert json.loads((out / "interpolation.json").read_text())["space"] == "w"
    gif = Image.open(out / "interp.gif")
    assert gif.n_frames == 3 and gif.size == (16, 16)
    r = run(["--network", net, "--from", fa, "--to", latents["wp"][0], "--space", "w", "--outdir", out])
    one_line_error(r, "--space w+")


def test_seeds_slerp_in_z(tmp_path, net):
    out = tmp_path / "o"
    r = run(["--network", net, "--from-seed", 3, "--to-seed", 9, "--steps", 4, "--trunc", 0.7, "--outdir", out])
    assert r.exit_code == 0, r.output
    with np.load(out / "interp.npz") as d:
        z, w = d["z"], d["w"]
        assert list(d["seeds"]) == [3, 9]
    assert np.array_equal(z[0], seed_to_z(3, 32)) and np.array_equal(z[-1], seed_to_z(9, 32))
    # endpoints' w equal generate's latents for the same seeds and truncation
    r = run(["--network", net, "--seeds", "3,9", "--trunc", 0.7, "--outdir", tmp_path / "g"], generate_cmd)
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "g" / "ws.npz") as d:
        ref = d["w"]
    assert np.allclose(w[0], ref[0], atol=1e-5) and np.allclose(w[-1], ref[1], atol=1e-5)
    files = sorted(p.name for p in out.iterdir())
    assert "interp.mp4" in files or "interp.gif" in files


def test_seeds_lerp_in_w_and_mixed_endpoints(net, latents):
    from styleforge.networks.checkpoint import load_network

    G = load_network(net)
    it = interpolate_latents(G, steps=3, space="w", from_seed=1, to_seed=2)
    assert it.space == "w" and it.z is None
    assert np.array_equal(it.ws, np.repeat(it.ws[:, :1], 6, axis=1))
    it = interpolate_latents(G, steps=3, from_w=latents["wp"][0], to_seed=2)
    assert it.space == "w+" and np.array_equal(it.ws[0], latents["wp"][1][0])


def test_npz_row_selection(tmp_path, net):
    rs = np.random.RandomState(3)
    ws = rs.randn(3, 6, 32).astype(np.float32)
    f = save_npz(tmp_path / "many.npz", w=ws)
    out = tmp_path / "o"
    r = run(["--network", net, "--from", f"{f}:2", "--to", f"{f}:1", "--steps", 2, "--outdir", out, "--no-video"])
    assert r.exit_code == 0, r.output
    with np.load(out / "interp.npz") as d:
        assert np.array_equal(d["w"][0], ws[2]) and np.array_equal(d["w"][1], ws[1])
    r = run(["--network", net, "--from", f"{f}:7", "--to", f, "--outdir", out])
    one_line_error(r, "row 7")


def test_user_errors(tmp_path, net, latents):
    fa = latents["w"][0]
    out = tmp_path / "o"
    one_line_error(run(["--network", net, "--from-seed", 1, "--outdir", out]), "--to")
    one_line_error(run(["--network", net, "--from", fa, "--from-seed", 1, "--to-seed", 2, "--outdir", out]), "not both")
    one_line_error(run(["--network", net, "--from", fa, "--to-seed", 2, "--space", "z", "--outdir", out]), "--space z")
    one_line_error(run(["--network", net, "--from", tmp_path / "nope.npz", "--to-seed", 2, "--outdir", out]), "nope.npz")
    bad = save_npz(tmp_path / "bad.npz", w=np.zeros((1, 3, 32), np.float32))
    one_line_error(run(["--network", net, "--from", bad, "--to-seed", 2, "--outdir", out]), "bad.npz")
    r = run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--steps", 1, "--outdir", out])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_progress_bar_and_frame_bound(tmp_path, net, monkeypatch):
    import styleforge.project.interpolate as interp

    out = tmp_path / "o"
    r = run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--steps", 5, "--no-video", "--outdir", out])
    assert r.exit_code == 0 and "interpolate" in r.output and "5/5" in r.output, r.output
    monkeypatch.setattr(interp, "FRAMES_MAX_BYTES", 10 * (16 * 16 * 3 + 6 * 32 * 12))  # 10 frames of the tiny net
    out2 = tmp_path / "o2"
    one_line_error(run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--steps", 100000, "--outdir", out2]),
                   "--steps 100000", "at most 10 frames")
    assert not out2.exists()
    assert run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--steps", 10, "--no-video", "--outdir", out2]).exit_code == 0


def test_nonsense_values_and_leftovers(tmp_path, net, latents, monkeypatch):
    import styleforge.project.interpolate as interp

    out = tmp_path / "new" / "o"
    for args in (["--trunc", "nan"], ["--trunc", "inf"], ["--fps", "inf"], ["--fps", "nan"]):
        one_line_error(run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--outdir", out] + args), args[0])
    w = latents["wp"][1].copy()
    w[0, 1, 2] = np.nan
    bad = save_npz(tmp_path / "nan.npz", w=w)
    one_line_error(run(["--network", net, "--from", bad, "--to-seed", 2, "--outdir", out]), "nan.npz", "NaN")

    def oom(img):
        raise MemoryError()

    monkeypatch.setattr(interp, "uint8_as_generate", oom)  # rendering fails: no empty folder is left
    one_line_error(run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--outdir", out]), "out of memory")
    assert not (tmp_path / "new").exists()


def test_video_gets_normal_file_permissions(tmp_path, net):
    import os

    import styleforge.utils.fileio as fileio
    from styleforge.project.batch import ffmpeg_available

    if ffmpeg_available() is not None:
        pytest.skip("no mp4 writer here")
    old = os.umask(0o022)
    fileio._FILE_MODE = None
    try:
        out = tmp_path / "o"
        r = run(["--network", net, "--from-seed", 1, "--to-seed", 2, "--steps", 3, "--mp4", "--outdir", out])
        assert r.exit_code == 0, r.output
        modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
        assert modes == {"interp.png": 0o644, "interp.npz": 0o644, "interp.mp4": 0o644, "interpolation.json": 0o644}
    finally:
        os.umask(old)
        fileio._FILE_MODE = None


def test_latent_file_warning_is_one_line(tmp_path, net, latents):
    r = run(["--network", net, "--from", latents["w"][0], "--to", latents["w2"][0], "--trunc", 0.5, "--steps", 2,
             "--no-video", "--outdir", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    assert "warning: --trunc applies to seeds only; latent files are used as saved" in r.output.splitlines()
    assert "UserWarning" not in r.output and ".py:" not in r.output


def test_library_reports_through_the_callback(tmp_path, net, capsys, monkeypatch):
    import styleforge.project.interpolate as interp
    from styleforge.project.interpolate import run_interpolation

    events = []
    monkeypatch.setattr(interp, "ffmpeg_available", lambda: "ImportError: no imageio")
    res = run_interpolation(tmp_path / "o", network=net, from_seed=1, to_seed=2, steps=3, callback=events.append)
    assert res.video.name == "interp.gif"
    assert [(e.kind, e.stage) for e in events[:1] + events[-2:-1]] == [("begin", "interpolate"), ("end", "interpolate")]
    assert events[0].total == 3 and sum(e.n for e in events if e.kind == "advance") == 3
    assert events[-1].kind == "note" and "writing interp.gif instead" in events[-1].message
    with pytest.raises(StyleforgeError) as e:
        run_interpolation(tmp_path / "o2", network=net, from_seed=1, to_seed=2, space="q")
    assert str(e.value) == "space 'q': use z, w or w+"
    assert capsys.readouterr() == ("", "")  # nothing printed
