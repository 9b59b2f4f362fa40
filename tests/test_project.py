"""Projector: the official schedule, W / W+ outputs, per-target RNG independence, resume, bad inputs, loss
choice (VGG file, discriminator fallback, pixel), and one-line errors from the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import assert_one_line_error, OFFICIAL, official_pickle, tiny_discriminator, tiny_generator
from styleforge.commands.generate import generate_cmd
from styleforge.commands.project import project_cmd
from styleforge.errors import StyleforgeError
from styleforge.networks.checkpoint import load_network, save_networks
from styleforge.project import batch as pbatch
from styleforge.perceptual import PixelLoss, RandomConvFeatures, psnr
from styleforge.images import uint8_as_projector as to_uint8
from styleforge.project.projector import (
    ProjectorConfig, compute_w_stats, learning_rate, noise_buffers, noise_regularizer, project, synthesize,
    w_noise_scale,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    return tiny_generator().requires_grad_(False)


@pytest.fixture()
def net(tmp_path):
    return save_networks(tmp_path / "gd.safetensors", {"G_ema": tiny_generator(), "D": tiny_discriminator()})


@pytest.fixture()
def net_no_d(tmp_path):
    return save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})


def samples(G, seeds):
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds]))
    with torch.no_grad():
        return to_uint8(G.synthesis(G.mapping(z, None), noise_mode="const"))  # [N, H, W, C]


@pytest.fixture()
def photos(tmp_path, G):
    d = tmp_path / "photos"
    d.mkdir()
    for s, a in zip((1, 2, 3), samples(G, (1, 2, 3))):
        Image.fromarray(a).save(d / f"img{s}.png")
    return d


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()


def run(args, cmd=project_cmd):
    return CliRunner().invoke(cmd, [str(a) for a in args])


one_line_error = assert_one_line_error


# ----------------------------------------------------------------------------------------------------------
# Schedule and pieces


def test_official_schedule():
    cfg = ProjectorConfig(num_steps=1000)
    assert learning_rate(0, cfg) == 0.0
    assert learning_rate(25, cfg) == pytest.approx(0.05)
    assert learning_rate(50, cfg) == pytest.approx(0.1)
    assert learning_rate(500, cfg) == pytest.approx(0.1)
    assert learning_rate(875, cfg) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.5 * math.pi)))
    assert learning_rate(999, cfg) < 1e-5
    assert w_noise_scale(0, 2.0, cfg) == pytest.approx(0.1)
    assert w_noise_scale(375, 2.0, cfg) == pytest.approx(0.1 * 0.25)
    assert w_noise_scale(750, 2.0, cfg) == 0.0 and w_noise_scale(900, 2.0, cfg) == 0.0


def test_noise_regularizer_per_sample():
    torch.manual_seed(0)
    maps = [torch.randn(3, 1, 16, 16), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 16, 16)]  # two of one size
    reg = noise_regularizer(maps)
    assert reg.shape == (3,)
    for i in range(3):
        # the official scalar formula, one target at a time
        ref = 0.0
        for v in maps:
            x = v[i: i + 1]
            while True:
                ref += (x * torch.roll(x, 1, 3)).mean() ** 2 + (x * torch.roll(x, 1, 2)).mean() ** 2
                if x.shape[2] <= 8:
                    break
                x = torch.nn.functional.avg_pool2d(x, 2)
        assert float(reg[i]) == pytest.approx(float(ref), rel=1e-5)


def test_w_stats_match_official_fixture():
    pkl = official_pickle("paper256_r128")
    G = load_network(pkl)
    st = compute_w_stats(G)
    ref = np.load(OFFICIAL / "paper256_r128" / "projector_w_avg.npy")
    std = json.loads((OFFICIAL / "paper256_r128" / "manifest.json").read_text())["projector_w_std"]
    assert np.abs(st.w_avg.numpy() - ref.reshape(-1)).max() < 1e-4
    assert st.w_std == pytest.approx(std, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The projector


def test_projection_improves_psnr(G):
    tgt = samples(G, (5, 6))
    st = compute_w_stats(G)
    start = to_uint8(synthesize(G, st.w_avg.reshape(1, 1, -1).repeat(2, G.num_ws, 1)))
    for space in ("w", "w+"):
        r = project(G, nchw(tgt), PixelLoss(), num_steps=60, space=space, stats=st)
        out = to_uint8(synthesize(G, r.w))
        gain = np.mean([psnr(out[i], tgt[i]) - psnr(start[i], tgt[i]) for i in range(2)])
        assert gain > 4.0, (space, gain)


def test_w_and_wplus_shapes(G):
    tgt = nchw(samples(G, (5,)))
    fn = RandomConvFeatures()
    r = project(G, tgt, fn, num_steps=6, space="w", keep_steps=True)
    assert r.w.shape == (1, G.num_ws, G.w_dim)
    assert torch.equal(r.w, r.w[:, :1].expand_as(r.w))  # one w for all layers
    assert r.w_steps.shape == (1, 6, G.num_ws, G.w_dim) and torch.equal(r.w_steps[:, -1], r.w)
    assert set(r.noise) == set(noise_buffers(G)) and all(v.shape[0] == 1 for v in r.noise.values())
    for v in r.noise.values():  # renormalised after every step
        assert abs(float(v.mean())) < 1e-4 and float(v.square().mean()) == pytest.approx(1.0, rel=1e-4)
    r2 = project(G, tgt, fn, num_steps=6, space="w+")
    assert r2.w.shape == (1, G.num_ws, G.w_dim)
    assert not torch.equal(r2.w[:, 0], r2.w[:, 1])
    # the caller's generator is left untouched
    assert all(v.shape == (16, 16) or v.ndim == 2 for v in noise_buffers(G).values())


def test_rng_independent_of_batch(G):
    tgt = nchw(samples(G, (5, 6, 7)))
    st = compute_w_stats(G)
    fn = RandomConvFeatures()
    alone = project(G, tgt[:1], fn, num_steps=12, space="w+", stats=st, seeds=11)
    again = project(G, tgt[:1], fn, num_steps=12, space="w+", stats=st, seeds=11)
    assert torch.equal(alone.w, again.w)  # deterministic
    batched = project(G, tgt, fn, num_steps=12, space="w+", stats=st, seeds=11)
    assert torch.allclose(alone.w[0], batched.w[0], atol=1e-4, rtol=0)
    other = project(G, tgt[[2, 0]], fn, num_steps=12, space="w+", stats=st, seeds=[5, 11])
    assert torch.allclose(alone.w[0], other.w[1], atol=1e-4, rtol=0)
    for name, v in alone.noise.items():
        assert torch.allclose(v[0], batched.noise[name][0], atol=1e-4)
    different_seed = project(G, tgt[:1], fn, num_steps=12, space="w+", stats=st, seeds=12)
    assert not torch.allclose(alone.w, different_seed.w, atol=1e-4)


def test_wrong_targets_are_clear_errors(G):
    with pytest.raises(StyleforgeError, match="4 channels"):
        project(G, torch.zeros(1, 4, 16, 16), PixelLoss(), num_steps=1)
    with pytest.raises(StyleforgeError, match="8x8"):
        project(G, torch.zeros(1, 3, 8, 8), PixelLoss(), num_steps=1)
    with pytest.raises(StyleforgeError, match="1 \\(grayscale\\) or 3"):
        pbatch.load_target_image(__file__, 16, channels=4)
    with pytest.raises(StyleforgeError, match="conditional"):
        project(tiny_generator(c_dim=3), torch.zeros(1, 3, 16, 16), PixelLoss(), num_steps=1)


def test_target_preprocessing(tmp_path):
    rs = np.random.RandomState(0)
    a = rs.randint(0, 256, (30, 50, 4)).astype(np.uint8)  # RGBA, landscape
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    arr, info = pbatch.load_target_image(tmp_path / "x.png", 16)
    assert arr.shape == (16, 16, 3) and info["crop_box"] == [10, 0, 40, 30] and not info["upscaled"]
    ref = Image.fromarray(a[:, 10:40, :3]).resize((16, 16), Image.LANCZOS)
    assert np.array_equal(arr, np.asarray(ref))
    gray, info = pbatch.load_target_image(tmp_path / "x.png", 64, channels=1)
    assert gray.shape == (64, 64, 1) and info["upscaled"]


def test_grayscale_network(tmp_path):
    from styleforge.networks import Generator, GeneratorConfig, MappingConfig, SynthesisConfig

    torch.manual_seed(0)
    G1 = Generator(GeneratorConfig(z_dim=16, w_dim=16, img_resolution=8, img_channels=1,
                                   mapping=MappingConfig(num_layers=2),
                                   synthesis=SynthesisConfig(channel_base=64, channel_max=16)))
    path = save_networks(tmp_path / "gray.safetensors", {"G_ema": G1})
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (20, 20, 3)).astype(np.uint8)).save(tmp_path / "c.png")
    res = pbatch.project_files(tmp_path / "c.png", tmp_path / "out", network=path, num_steps=3, loss="pixel",
                               save_video=False, device="cpu")
    assert len(res.done) == 1
    assert Image.open(tmp_path / "out" / "proj.png").mode == "L"
    assert RandomConvFeatures()(torch.zeros(1, 1, 8, 8)).shape[0] == 1  # RGB feature nets take grayscale


# ----------------------------------------------------------------------------------------------------------
# Files, folders, CLI


def test_single_file_outputs_w_and_video(tmp_path, photos, net):
    out = tmp_path / "single"
    res = pbatch.project_files(photos / "img1.png", out, network=net, num_steps=8, feature_net=RandomConvFeatures(),
                               save_video=True, device="cpu")
    assert len(res.done) == 1
    names = sorted(p.name for p in out.iterdir())
    expected = ["proj.png", "projected_noise.npz", "projected_w.npz", "projection.json", "target.png"]
    if pbatch.ffmpeg_available() is None:
        expected.append("proj.mp4")
        import imageio.v2 as imageio

        frames = imageio.mimread(out / "proj.mp4")
        assert len(frames) == 8 and frames[0].shape == (16, 32, 3)
    assert names == sorted(expected)
    with np.load(out / "projected_w.npz") as d:
        w = d["w"]
    assert w.shape == (1, 6, 32) and w.dtype == np.float32 and np.array_equal(w, np.repeat(w[:, :1], 6, axis=1))
    rec = json.loads((out / "projection.json").read_text())
    assert rec["space"] == "w" and rec["num_steps"] == 8 and rec["seed"] == 303
    for k in ("feature_distance", "psnr", "ssim", "psnr_start"):
        assert rec["final"][k] is not None
    assert rec["timings"]["s_per_step"] > 0
    # generate.py --projected-w reproduces proj.png (it converts with +128, the projector with +127.5)
    r = run(["--network", net, "--projected-w", out / "projected_w.npz", "--outdir", tmp_path / "gen"], generate_cmd)
    assert r.exit_code == 0, r.output
    a = np.asarray(Image.open(tmp_path / "gen" / "proj00.png")).astype(int)
    b = np.asarray(Image.open(out / "proj.png")).astype(int)
    assert np.abs(a - b).max() <= 1


def test_wplus_folder_batch_equals_alone(tmp_path, photos, net):
    common = dict(network=net, num_steps=6, space="w+", feature_net=RandomConvFeatures(), save_video=False,
                  device="cpu")
    res = pbatch.project_files(photos, tmp_path / "batched", batch_size=3, **common)
    assert [t.name for t in res.done] == ["img1", "img2", "img3"]
    res1 = pbatch.project_files(photos, tmp_path / "shard", shard=(1, 3), **common)
    assert [t.name for t in res1.done] == ["img2"]
    with np.load(tmp_path / "batched" / "img2" / "projected_w.npz") as a, \
            np.load(tmp_path / "shard" / "img2" / "projected_w.npz") as b:
        assert a["w"].shape == (1, 6, 32)
        assert not np.array_equal(a["w"][0, 0], a["w"][0, 1])  # W+
        assert np.allclose(a["w"], b["w"], atol=1e-4)
    assert json.loads((tmp_path / "batched" / "img2" / "projection.json").read_text())["batch_size"] == 3


def test_resume_skips_finished(tmp_path, photos, net):
    out = tmp_path / "out"
    args = ["--network", net, "--target", photos, "--outdir", out, "--num-steps", "3", "--loss", "pixel",
            "--no-save-video", "--device", "cpu"]
    r = run(args + ["--shard", "0/3"])
    assert r.exit_code == 0, r.output
    assert (out / "img1" / "projection.json").is_file() and not (out / "img2").exists()
    before = (out / "img1" / "projected_w.npz").stat().st_mtime_ns
    r = run(args)
    assert r.exit_code == 0, r.output
    assert "projected 2 target(s), skipped 1 already finished" in r.output
    assert (out / "img1" / "projected_w.npz").stat().st_mtime_ns == before
    r = run(args)
    assert "projected 0 target(s), skipped 3" in r.output
    # other settings in the same folder: reported, not silently mixed
    r = run(args + ["--space", "w+"])
    assert r.exit_code == 1 and "other settings" in r.output and "Traceback" not in r.output
    r = run(args + ["--overwrite"])
    assert r.exit_code == 0 and "projected 3" in r.output


def test_bad_image_in_folder_is_skipped_and_reported(tmp_path, photos, net):
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    r = run(["--network", net, "--target", photos, "--outdir", out, "--num-steps", "2", "--loss", "pixel",
             "--no-save-video", "--device", "cpu"])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert "projected 3 target(s), 1 failed" in r.output
    assert "broken.jpg" in r.output and "notes.txt" not in r.output
    assert all((out / f"img{i}" / "projection.json").is_file() for i in (1, 2, 3))
    assert not (out / "broken").exists()
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    mentions = [ln for ln in r.output.splitlines() if "broken.jpg" in ln]
    assert len(mentions) == 1 and mentions[0].startswith("failed: "), r.output  # one message per bad file


def test_failed_run_leaves_no_empty_outdir(tmp_path, photos):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04junk" * 100)
    out = tmp_path / "new" / "out"
    one_line_error(run(["--network", junk, "--target", photos, "--outdir", out, "--num-steps", "2", "--loss", "pixel"]),
                   "junk.pkl")
    assert not (tmp_path / "new").exists()
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():  # a device that is not there
        one_line_error(run(["--target", photos, "--outdir", out, "--device", "mps"]), "--device mps")
        assert not (tmp_path / "new").exists()


def test_missing_vgg_falls_back_to_discriminator(tmp_path, photos, net):
    out = tmp_path / "out"
    r = run(["--network", net, "--target", photos / "img1.png", "--outdir", out, "--num-steps", "2",
             "--no-save-video", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if ln.startswith("note:") and "vgg16.pt" in ln]
    assert len(notes) == 1 and "discriminator" in notes[0]
    rec = json.loads((out / "projection.json").read_text())
    assert rec["settings"]["loss"] == "discriminator" and rec["final"]["lpips"] is None


def test_loss_vgg_missing_file_is_one_line_error(tmp_path, photos, net):
    from styleforge.utils.cache import cache_dir

    r = run(["--network", net, "--target", photos, "--outdir", tmp_path / "o", "--loss", "vgg", "--device", "cpu"])
    one_line_error(r, "vgg16.pt", str(cache_dir()), "https://nvlabs-fi-cdn.nvidia.com/")
    r = run(["--network", net, "--target", photos, "--outdir", tmp_path / "o", "--vgg", tmp_path / "nope.pt"])
    one_line_error(r, "nope.pt")


def test_discriminator_needs_d(tmp_path, photos, net_no_d):
    r = run(["--network", net_no_d, "--target", photos, "--outdir", tmp_path / "o", "--loss", "discriminator",
             "--device", "cpu"])
    one_line_error(r, "discriminator", "--loss pixel")
    # default loss without vgg16.pt and without D: the notice, then the same clear error
    r = run(["--network", net_no_d, "--target", photos, "--outdir", tmp_path / "o", "--device", "cpu"])
    one_line_error(r, "--loss pixel")


class _FakeVGG(torch.nn.Module):
    """Same call signature as NVIDIA's vgg16.pt (for the loading path only)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        return self.conv(x / 255.0).flatten(1) / 30.0


def test_vgg_torchscript_file(tmp_path, photos, net):
    fake = tmp_path / "vgg16.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_FakeVGG()).save(str(fake))
    out = tmp_path / "out"
    r = run(["--network", net, "--target", photos / "img2.png", "--outdir", out, "--num-steps", "3", "--vgg", fake,
             "--no-save-video", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "projection.json").read_text())
    assert rec["settings"]["loss"] == "vgg" and rec["final"]["lpips"] is not None
    assert rec["loss"].endswith("eager)")  # the file's graph passed the probe and ran through the eager walk
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    r = run(["--network", net, "--target", photos, "--outdir", tmp_path / "o2", "--vgg", junk, "--device", "cpu"])
    one_line_error(r, "junk.pt", "TorchScript")


def test_cli_user_errors(tmp_path, photos, net):
    r = run(["--network", net, "--target", tmp_path / "missing", "--outdir", tmp_path / "o"])
    one_line_error(r, "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(["--network", net, "--target", empty, "--outdir", tmp_path / "o"])
    one_line_error(r, "no images")
    r = run(["--network", net, "--target", photos, "--outdir", tmp_path / "o", "--shard", "5/2"])
    one_line_error(r, "--shard")
    r = run(["--network", tmp_path / "nonet.pkl", "--target", photos, "--outdir", tmp_path / "o"])
    one_line_error(r, "nonet.pkl")
    r = run(["--network", net, "--target", photos / "img1.png", "--outdir", tmp_path / "o", "--space", "z"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    r = run(["--network", net, "--target", bad, "--outdir", tmp_path / "o1", "--loss", "pixel"])
    assert r.exit_code == 1 and "bad.png" in r.output and "Traceback" not in r.output


def test_outdir_inside_target_folder_is_not_reprojected(tmp_path, photos, net):
    out = photos / "proj"
    args = ["--network", net, "--target", photos, "--outdir", out, "--num-steps", "2", "--loss", "pixel",
            "--no-save-video", "--device", "cpu"]
    assert run(args).exit_code == 0
    r = run(args)
    assert r.exit_code == 0 and "projected 0 target(s), skipped 3" in r.output


def test_sixteen_bit_and_hidden_files(tmp_path):
    d = tmp_path / "in"
    (d / ".ipynb_checkpoints").mkdir(parents=True)
    a16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(a16).save(d / "deep.png")
    Image.fromarray(a16).save(d / ".ipynb_checkpoints" / "deep.png")
    (d / ".hidden.png").write_bytes(b"x")
    ts = pbatch.find_targets(d, tmp_path / "out")
    assert [t.name for t in ts] == ["deep"]
    arr, info = pbatch.load_target_image(ts[0].path, 16)
    assert info["mode"].startswith("I") and 100 < arr.mean() < 160  # scaled to 8 bits, not clipped to white


def test_official_pickle_discriminator_loss(tmp_path):
    pkl = official_pickle("paper256_r128")
    G = load_network(pkl)
    with torch.no_grad():
        img = to_uint8(G.synthesis(G.mapping(torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)), None)))
    Image.fromarray(img[0]).save(tmp_path / "t.png")
    r = run(["--network", pkl, "--target", tmp_path / "t.png", "--outdir", tmp_path / "o", "--num-steps", 2,
             "--loss", "discriminator", "--no-save-video", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o" / "projection.json").read_text())
    assert rec["settings"]["loss"] == "discriminator" and rec["num_ws"] == G.num_ws


def test_library_reports_through_the_callback_and_names_settings_not_flags(tmp_path, photos, net, capsys):
    """project_files never prints: failures, skips and the loss fallback are notes to the callback, the steps a
    transient stage; its errors and notes name the settings (``space``, ``overwrite``), which the CLI renders as
    flags (test_resume_skips_finished, test_missing_vgg_falls_back_to_discriminator)."""
    from styleforge.errors import StyleforgeWarning

    (photos / "broken.png").write_bytes(b"not a png")
    events = []
    res = pbatch.project_files(photos, tmp_path / "out", network=net, num_steps=2, loss="pixel", save_video=False,
                               device="cpu", callback=events.append)
    assert len(res.done) == 3 and len(res.failed) == 1
    failed = [e for e in events if e.kind == "note" and e.level == "failed"]
    assert len(failed) == 1 and "broken.png" in str(failed[0].message) and res.failed[0][1] == str(failed[0].message)
    stages = [e for e in events if e.kind == "begin"]
    assert [e.stage for e in stages] == ["project img1", "project img2", "project img3"] and stages[0].transient
    assert stages[0].total == 2 and stages[0].unit == "step"
    events.clear()
    res = pbatch.project_files(photos / "img1.png", tmp_path / "one", network=net, num_steps=2, device="cpu",
                               save_video=False, callback=events.append)  # no vgg16.pt: the discriminator
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and isinstance(notes[0], StyleforgeWarning) and "using loss discriminator" in str(notes[0])
    assert res.loss == "discriminator"
    pbatch.project_files(photos / "img1.png", tmp_path / "one", network=net, num_steps=3, device="cpu",
                         save_video=False, callback=events.append)  # other settings in the same folder
    other = events[-1].message
    assert events[-1].level == "failed" and str(other).endswith("use another output folder or overwrite=True")
    assert other.render({"outdir": "--outdir", "overwrite": "--overwrite"}).endswith("use another --outdir or --overwrite")
    for kwargs, param in (({"space": "z"}, "space"), ({"num_steps": 0}, "num_steps"), ({"batch_size": 0}, "batch_size"),
                          ({"loss": "l1"}, "loss")):
        with pytest.raises(StyleforgeError) as e:
            pbatch.project_files(photos, tmp_path / "x", network=net, device="cpu", **kwargs)
        assert e.value.param == param and "--" not in str(e.value), str(e.value)
    with pytest.raises(StyleforgeError, match=r"no such file or folder \(target\)$"):
        pbatch.find_targets(tmp_path / "nothing", tmp_path / "x")
    assert capsys.readouterr() == ("", "")  # nothing printed
