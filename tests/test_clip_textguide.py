"""styleforge.textguide and the clip_generate / clip_direction commands, with the small fixture CLIP (open_clip's
architecture, random weights) and a tiny generator: the optimisation does what it claims (similarity rises, the
loss falls, lambda holds the edit near its start, the identity term keeps the start image), the direction file
works in edit.py, and bad input ends in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT, assert_one_line_error, tiny_generator
from styleforge.errors import StyleforgeError
from styleforge.textguide import TextGuideConfig, learning_rate, optimize_latents, start_latents, text_direction

FIX = ROOT.parent / "shared" / "fixtures" / "clip"
SMALL = {"embed_dim": 64, "quick_gelu": True,
         "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
PROMPT = "a person with sunglasses"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks: one thread is fastest and steadiest on a shared machine."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    weights = FIX / "clip_small_quickgelu.safetensors"
    if not weights.is_file():
        pytest.skip(f"CLIP fixture {weights} not present")
    d = tmp_path_factory.mktemp("clipfiles")
    (d / "small.json").write_text(json.dumps(SMALL))
    from styleforge.networks.checkpoint import save_networks

    save_networks(d / "tiny.safetensors", {"G": tiny_generator(res=16, seed=3)})
    return {"config": d / "small.json", "weights": weights, "network": d / "tiny.safetensors", "dir": d}


@pytest.fixture(scope="module")
def G():
    return tiny_generator(res=16, seed=3)


@pytest.fixture(scope="module")
def clip(files):
    from styleforge.perceptual.clip import load_clip

    return load_clip(files["config"], files["weights"])


def test_schedule_is_styleclips():
    cfg = TextGuideConfig()
    assert (cfg.num_steps, cfg.initial_learning_rate, cfg.l2_lambda) == (300, 0.1, 0.008)
    assert learning_rate(0, cfg) == 0.0
    assert learning_rate(150, cfg) == pytest.approx(0.1)
    assert learning_rate(15, cfg) == pytest.approx(0.1)  # ramp-up ends at 5 %
    t = 270 / 300  # inside the last 25 %: 0.1 * (0.5 - 0.5 cos(pi (1 - t) / 0.25))
    assert learning_rate(270, cfg) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi * (1 - t) / 0.25)))


def test_generation_loss_falls_and_similarity_rises(G, clip):
    w0 = start_latents(G)  # the mean latent in every layer
    assert torch.equal(w0[0, 3], G.mapping.w_avg)
    res = optimize_latents(G, clip, PROMPT, w0.repeat(2, 1, 1) + torch.randn(2, G.num_ws, G.w_dim) * 0.3,
                           num_steps=20, frame_every=5)
    sim = res.similarity
    assert sim.shape == (21, 2) and res.loss.shape == (20, 2)
    assert np.array_equal(sim[1], sim[0])  # lr is 0 at step 0: the first update moves nothing
    assert (sim[-1] > sim[0] + 0.05).all(), sim[[0, -1]]
    assert (res.loss[-1] < res.loss[0] - 0.05).all()
    np.testing.assert_allclose(res.loss, 1 - sim[:-1], atol=1e-6)  # generate mode: the CLIP term only
    # the recorded similarity is CLIP's on the rendered image, computed independently here
    with torch.no_grad():
        img = G.synthesis(res.w, noise_mode="const")
        again = (clip.encode_pixels(img) * clip.encode_prompts(PROMPT)).sum(-1).numpy()
    np.testing.assert_allclose(again, sim[-1], atol=1e-5)
    assert [s for s, _ in res.frames] == [0, 5, 10, 15, 20] and res.images.shape == (2, 16, 16, 3)


def test_edit_distance_to_start_shrinks_as_lambda_grows(G, clip):
    w0 = start_latents(G, seeds=[5], truncation_psi=0.7)
    dist, sims = [], []
    for lam in (0.0, 0.001, 0.01, 0.1):  # (much larger lambdas only reach Adam's step-size floor, ~lr^2)
        res = optimize_latents(G, clip, PROMPT, w0, num_steps=10, mode="edit", l2_lambda=lam, frame_every=0)
        dist.append(float(res.distance[-1, 0]))
        sims.append(float(res.similarity[-1, 0]))
        np.testing.assert_allclose(res.loss[:, 0], 1 - res.similarity[:-1, 0] + lam * res.distance[:-1, 0], rtol=1e-5)
    assert all(a > b for a, b in zip(dist, dist[1:])), dist
    assert sims[0] > sims[-1], sims  # holding on to w0 costs similarity


def test_identity_term_keeps_the_start_image(G, clip):
    from styleforge.perceptual import PixelLoss

    w0 = start_latents(G, seeds=[7])
    start = G.synthesis(w0, noise_mode="const").detach()
    far = []
    for lam in (0.0, 50.0):
        res = optimize_latents(G, clip, PROMPT, w0, num_steps=10, mode="edit", l2_lambda=0.0, identity_lambda=lam,
                               identity=PixelLoss() if lam else None, frame_every=0)
        with torch.no_grad():
            far.append(float((G.synthesis(res.w, noise_mode="const") - start).square().mean()))
    assert far[1] < 0.5 * far[0], far
    with pytest.raises(StyleforgeError, match="identity_lambda is 0"):
        optimize_latents(G, clip, PROMPT, w0, num_steps=2, mode="edit", identity=PixelLoss())


def test_text_direction_moves_clip_toward_the_target(G, clip):
    from styleforge.directions import Direction, apply

    d = text_direction(G, clip, "a face", "a smiling face", seeds=range(6))
    assert d.vector.shape == (G.num_ws, G.w_dim) and d.scale == 1.0
    assert np.sqrt((d.vector.astype(np.float64) ** 2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-5)
    gain = d.meta["similarity_gain_at_strength_1"]
    assert gain["mean"] > 0 and gain["min"] > 0, gain
    # checked independently on other seeds: moving along it raises cos(CLIP(image), CLIP(B) - CLIP(A))
    with torch.no_grad():
        a, b = clip.encode_prompts(["a face", "a smiling face"])
        delta = torch.nn.functional.normalize(b - a, dim=-1)
        ws = start_latents(G, seeds=[100, 101, 102])
        direction = Direction(d.vector, scale=d.scale)

        def score(s):
            return (clip.encode_pixels(G.synthesis(apply(ws, direction, s), noise_mode="const")) * delta).sum(-1)

        assert (score(0.5) > score(0.0)).all()
    opt = text_direction(G, clip, "a face", "a smiling face", seeds=range(2), method="optimize", steps=8)
    assert opt.scale > 0 and opt.meta["similarity_gain_at_strength_1"]["mean"] > 0
    with pytest.raises(StyleforgeError, match="same CLIP features"):
        text_direction(G, clip, "a face", "a  FACE", seeds=range(2))


# -- the commands -----------------------------------------------------------------------------------------------------

def _cmd(name):
    from styleforge.cli import main

    return main.commands[name]


def _clip_args(files):
    return ["--network", str(files["network"]), "--clip-model", str(files["config"]),
            "--clip-weights", str(files["weights"]), "--device", "cpu"]


def test_clip_generate_writes_images_latents_and_similarities(files, tmp_path):
    out = tmp_path / "kid"
    r = CliRunner().invoke(_cmd("clip-generate"), _clip_args(files) + [
        "--prompt", "a blond kid with green eyes", "--seeds", "0,1", "--steps", "12", "--frame-every", "4",
        "--outdir", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "clip.json").read_text())
    sims = np.array(rec["similarity_per_step"])
    assert sims.shape == (2, 13) and (sims[:, -1] > sims[:, 0]).all()
    assert rec["mode"] == "generate" and rec["clip"]["activation"] == "QuickGELU"
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"clip{k:02d}-{s:04d}.png" for k in (0, 1)
                                                                  for s in (0, 4, 8, 12)]
    assert (out / "clip00.gif").is_file() and (out / "clip01.gif").is_file()
    # the final latents render the final images exactly through generate.py --projected-w
    r = CliRunner().invoke(_cmd("generate"), ["--network", str(files["network"]), "--projected-w",
                                              str(out / "clip_w.npz"), "--outdir", str(tmp_path / "gen")])
    assert r.exit_code == 0, r.output
    for k in (0, 1):
        assert np.array_equal(np.array(Image.open(out / f"clip{k:02d}.png")),
                              np.array(Image.open(tmp_path / "gen" / f"proj{k:02d}.png")))
    # ... and edit mode from them: the start is the given latent
    r = CliRunner().invoke(_cmd("clip-generate"), _clip_args(files) + [
        "--prompt", "a person with sunglasses", "--w", str(out / "clip_w.npz"), "--steps", "3", "--no-video",
        "--outdir", str(tmp_path / "edit")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "edit" / "clip_w.npz") as z, np.load(out / "clip_w.npz") as first:
        assert np.array_equal(z["w0"], first["w"])
    assert json.loads((tmp_path / "edit" / "clip.json").read_text())["mode"] == "edit"


def test_clip_direction_file_loads_in_edit(files, tmp_path):
    out = tmp_path / "smile_clip.npz"
    r = CliRunner().invoke(_cmd("clip-direction"), _clip_args(files) + [
        "--from", "a face", "--to", "a smiling face", "--seeds", "0-3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from styleforge.directions import load_direction

    d = load_direction(out)
    assert d.origin == "clip" and d.meta["source"] == "a face" and d.meta["target"] == "a smiling face"
    r = CliRunner().invoke(_cmd("edit"), ["--network", str(files["network"]), "--seeds", "0", "--direction", str(out),
                                          "--strengths", "-1,0,1", "--no-video", "--outdir", str(tmp_path / "ed")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ed" / "edit00.png").is_file()


def test_bad_input_is_one_line(files, tmp_path):
    gen = _cmd("clip-generate")
    base = _clip_args(files) + ["--outdir", str(tmp_path / "o"), "--steps", "2"]
    r = CliRunner().invoke(gen, base + ["--prompt", "   "])
    assert_one_line_error(r, "--prompt", "is empty")
    # weights of another model (the small weights for ViT-B-32)
    r = CliRunner().invoke(gen, ["--network", str(files["network"]), "--clip-weights", str(files["weights"]),
                                 "--prompt", "a cat", "--outdir", str(tmp_path / "o")])
    assert_one_line_error(r, "--clip-weights", "another model than ViT-B-32", "--clip-model")
    # a latent of another network
    np.savez(tmp_path / "other.npz", w=np.zeros((1, 18, 512), np.float32))
    r = CliRunner().invoke(gen, base + ["--prompt", "a cat", "--w", str(tmp_path / "other.npz")])
    assert_one_line_error(r, "other.npz", "this network needs [N, 6, 32]")
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(_cmd("clip-direction"), _clip_args(files) + ["--from", "a face", "--to", "",
                                                                        "--out", str(tmp_path / "d.npz")])
    assert_one_line_error(r, "--to", "is empty")


def test_over_long_prompt_is_cut_with_one_warning(files, tmp_path):
    long = "a photo of a person " + " ".join(f"wearing hat number {i}" for i in range(30))
    r = CliRunner().invoke(_cmd("clip-generate"), _clip_args(files) + [
        "--prompt", long, "--steps", "1", "--no-video", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output + r.stderr
    warns = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "--prompt" in warns[0] and "CLIP reads 75" in warns[0] and "cut after word" in warns[0]


def test_offline_without_clip_weights_fails_fast_naming_the_file(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), STYLEFORGE_CACHE=str(tmp_path / "cache"))
    env.pop("STYLEFORGE_ALLOW_DOWNLOAD", None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "clip_generate.py"), "--prompt", "a cat",
                        "--outdir", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=60)
    seconds = time.perf_counter() - t0
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ViT-B-32.pt is not in the cache: put it at "
                                                   f"{tmp_path / 'cache' / 'ViT-B-32.pt'}"), r.stderr
    assert "--allow-download" in lines[0]
    assert seconds < 2.0, seconds  # no torch import, no network: ~0.5 s here
