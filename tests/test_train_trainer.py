"""The trainer (styleforge.train.trainer): the stateless data order, TensorBoard output, and any registered model
(styleforge.train.registry) on the same loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from styleforge.networks.config import ConfigBase

from train_data import TINY, data, one_thread_module  # noqa: F401 - fixtures


def test_data_order_is_stateless_and_partitioned(data):
    from styleforge.data.dataset import open_dataset
    from styleforge.train.trainer import SampleOrder

    n, batch = 50, 8
    full = SampleOrder(n, seed=5, batch=batch)
    it = iter(full)
    steps = [next(it) for _ in range(20)]
    flat = [i for s in steps for i in s]
    for e in range(3):  # each epoch is a permutation of the dataset
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n:2 * n]  # a new order every epoch
    later = iter(SampleOrder(n, seed=5, batch=batch, start_step=13))
    assert [next(later) for _ in range(7)] == steps[13:]  # resuming needs only the step counter
    for s in (0, 7, 19):  # two processes split each global batch
        r0 = SampleOrder(n, 5, batch, rank=0, world=2).indices(s)
        r1 = SampleOrder(n, 5, batch, rank=1, world=2).indices(s)
        assert r0 + r1 == steps[s]
    # loader workers deliver the same batches in the same order
    ds = open_dataset(str(data["digits"]), cond=False)
    outs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=SampleOrder(len(ds), 5, batch, start_step=3),
                                             num_workers=workers, generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        outs.append(torch.cat([next(it)[0] for _ in range(4)]))
        del it
    assert torch.equal(outs[0], outs[1])


def test_tensorboard_scalars_and_images_when_available(data, tmp_path, monkeypatch):
    import types

    from styleforge.train.trainer import Trainer
    from styleforge.train.presets import TrainingOptions, resolve_options

    calls = []

    class FakeWriter:
        def __init__(self, logdir):
            calls.append(("init", logdir))

        def add_scalar(self, tag, value, global_step=None):
            calls.append(("scalar", tag))

        def add_image(self, tag, img, global_step=None, dataformats="CHW"):
            calls.append(("image", tag, img.shape, dataformats))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    o = resolve_options(data=str(data["digits"]), dataset_name="d", resolution=16, num_channels=3, num_images=200,
                        label_dim=10, cfg="cpu", batch=8, workers=0)
    from styleforge.train.loop import _deep_update

    o = TrainingOptions.from_dict(_deep_update(o.to_dict(), {**TINY, "grid": [4, 2]}))
    tr = Trainer(o, run_dir=tmp_path)
    tr.step()
    tr._write_stats(tr._tick_report(1.0, 0.008, 0.0))
    tr.save_images("fakes000000.png")
    assert ("init", str(tmp_path)) in calls
    assert ("scalar", "Loss/G/loss") in calls and ("scalar", "Progress/augment") in calls
    assert ("image", "fakes", (2 * 16, 4 * 16, 3), "HWC") in calls


# ---------------------------------------------------------------------------------------------------------------------
# Any registered model trains on the same loop: a plain two-layer G and D with the non-saturating loss.


@dataclass
class _TinyConfig(ConfigBase):
    z_dim: int = 8
    c_dim: int = 0
    img_resolution: int = 16
    img_channels: int = 3


class _TinyG(nn.Module):
    config_class = _TinyConfig

    def __init__(self, config: _TinyConfig):
        super().__init__()
        self.config = config
        self.z_dim, self.c_dim = config.z_dim, config.c_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.fc = nn.Linear(config.z_dim + config.c_dim, 32)
        self.out = nn.Linear(32, config.img_channels * config.img_resolution**2)

    def forward(self, z, c=None):
        h = torch.cat([z, c], dim=1) if self.c_dim else z
        img = torch.tanh(self.out(F.leaky_relu(self.fc(h), 0.2)))
        return img.view(-1, self.img_channels, self.img_resolution, self.img_resolution)


class _TinyD(nn.Module):
    config_class = _TinyConfig

    def __init__(self, config: _TinyConfig):
        super().__init__()
        self.config = config
        self.fc = nn.Linear(config.img_channels * config.img_resolution**2, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, img, c=None):
        return self.out(F.leaky_relu(self.fc(img.flatten(1)), 0.2))


class _PlainLoss:
    """The non-saturating GAN loss, no regularisers; D sees augmented images."""

    def __init__(self, G, D, augment_pipe):
        self.G, self.D, self.augment_pipe = G, D, augment_pipe

    def _D(self, img):
        return self.D(self.augment_pipe(img) if self.augment_pipe is not None else img)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain=1.0):
        if phase == "Gmain":
            loss = F.softplus(-self._D(self.G(gen_z)))
            loss.mean().mul(gain).backward()
            return {"Loss/G/loss": loss.detach()}
        with torch.no_grad():
            fake = self.G(gen_z)
        real_logits = self._D(real_img)
        loss = F.softplus(self._D(fake)) + F.softplus(-real_logits)
        loss.mean().mul(gain).backward()
        return {"Loss/D/loss": loss.detach(), "Loss/signs/real": real_logits.detach().sign()}

    def regularizes(self, net):
        return False

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _tiny_configure(opts):
    cfg = {"z_dim": 8, "c_dim": opts.label_dim, "img_resolution": opts.resolution, "img_channels": opts.num_channels}
    opts.G, opts.D = dict(cfg), dict(cfg)
    return opts


def _register_tiny_model():
    from styleforge.networks.config import register_network, registered_archs
    from styleforge.train.registry import Model, model_names, register_model

    if "tinygan" not in model_names():
        if "tinygan.generator" not in registered_archs():
            register_network("tinygan.generator")(_TinyG)
            register_network("tinygan.discriminator")(_TinyD)
        register_model(Model(
            "tinygan", build_networks=lambda o: {"G": _TinyG(_TinyConfig(**o.G)), "D": _TinyD(_TinyConfig(**o.D))},
            build_loss=lambda G, D, pipe, o, reduce_mean: _PlainLoss(G, D, pipe), configure=_tiny_configure))


def test_a_registered_model_trains_snapshots_and_resumes_exactly(data, tmp_path):
    """A model that is not StyleGAN2, registered by name, runs on the same loop: its own networks and loss
    (checked during the run), snapshots that load as its networks, the log as notes, and a run stopped as SIGTERM
    stops it and resumed with --resume auto that ends bit-identical to an uninterrupted one."""
    from styleforge.networks.checkpoint import load_networks
    from styleforge.train.loop import train
    from styleforge.train.state import load_state_file

    _register_tiny_model()
    kw = dict(data=str(data["digits"]), model="tinygan", cfg="cpu", batch=8, kimg=0.064, kimg_per_tick=0.016,
              snap=2, workers=0, deterministic=True, target=0.1, overrides={"ada_kimg": 0.1})
    seen, notes = [], []

    def check(trainer):
        seen.append((type(trainer.G), type(trainer.D), type(trainer.loss)))

    a = train(outdir=str(tmp_path / "a"), step_callback=check, callback=notes.append, **kw)
    assert a.done and a.cur_nimg == 64 and a.run_dir.name == "00000-digits16-cpu-tinygan-kimg0.064-batch8-target0.1"
    assert set(seen) == {(_TinyG, _TinyD, _PlainLoss)} and len(seen) == 8
    assert any(e.kind == "note" and str(e.message).startswith("tick 0") for e in notes)
    assert "tick 0" in (a.run_dir / "log.txt").read_text()
    bundle = load_networks(a.snapshot)
    assert {k: type(v) for k, v in bundle.networks.items()} == {"G": _TinyG, "D": _TinyD, "G_ema": _TinyG}
    assert (a.run_dir / "fakes000000.png").is_file() and (a.run_dir / "reals.png").is_file()

    def stop_at_3(trainer):
        if trainer.batch_idx == 3:
            trainer.stop.set("test")

    b1 = train(outdir=str(tmp_path / "b"), step_callback=stop_at_3, **kw)
    assert b1.stopped and b1.cur_nimg == 24
    b2 = train(outdir=str(tmp_path / "b"), resume="auto", **kw)
    assert b2.run_dir == b1.run_dir and b2.done and b2.cur_nimg == 64
    sa, sb = load_state_file(a.state), load_state_file(b2.state)
    for net in ("G", "D", "G_ema"):
        for k, v in sa["networks"][net].items():
            assert torch.equal(v, sb["networks"][net][k]), (net, k)
    for o in ("G", "D"):
        for i, st in sa["optimizers"][o]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb["optimizers"][o]["state"][i][k]), (o, i, k)
    assert sa["ada"] == sb["ada"] and sa["ada"]["num_adjustments"] >= 1
    for k in ("cur_nimg", "batch_idx", "cur_tick", "tick_start_nimg"):
        assert sa["progress"][k] == sb["progress"][k]
