"""Training presets and resolved options (styleforge.train.presets): the official tables, run descriptions, the
validation rules (errors name the setting; the train command shows its flag)."""

from __future__ import annotations

import json
import math
import re

import pytest

from conftest import cli_message

def test_presets_resolve():
    from styleforge.train.presets import PRESETS, resolve_options, resolve_preset

    assert set(PRESETS) == {"auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar", "cpu", "segan"}
    a = resolve_preset("auto", 256, gpus=1)
    assert (a.batch, a.mbstd, a.channel_base, a.lrate, a.ema_kimg, a.ema_rampup, a.map_layers) == \
        (16, 4, 16384, 0.0025, 5.0, 0.05, 2)
    assert math.isclose(a.gamma, 0.0002 * 256**2 / 16)
    a = resolve_preset("auto", 1024, gpus=8)
    assert (a.batch, a.mbstd, a.channel_base, a.lrate) == (32, 4, 32768, 0.002)
    p = resolve_preset("paper256", 256)
    assert (p.batch, p.mbstd, p.channel_base, p.gamma, p.ema_kimg, p.ema_rampup, p.map_layers, p.ref_gpus) == \
        (64, 8, 16384, 1, 20, None, 8, 8)
    c = resolve_preset("cifar", 32)
    assert (c.pl_weight, c.style_mixing_prob, c.d_architecture, c.batch, c.mbstd, c.gamma) == (0, 0, "orig", 64, 32, 0.01)
    s = resolve_preset("stylegan2", 1024)
    assert (s.batch, s.gamma, s.lrate, s.channel_base) == (32, 10, 0.002, 32768)
    cpu = resolve_preset("cpu", 32)
    assert cpu.map_layers == 2 and 128 <= cpu.z_dim <= 256 and 4096 <= cpu.channel_base <= 8192
    assert 128 <= cpu.channel_max <= 256 and 16 <= cpu.batch <= 32 and cpu.mbstd == 4
    assert math.isclose(cpu.gamma, 0.0002 * 32**2 / cpu.batch) and cpu.ema_kimg == 10 and cpu.ema_rampup == 0.05
    for name in PRESETS:
        for res in (32, 256, 1024):
            o = resolve_options(data="x.zip", dataset_name="x", resolution=res, num_channels=3, num_images=100,
                                label_dim=0, cfg=name)
            assert o.batch % (o.batch_gpu * o.gpus) == 0 and o.batch_gpu >= 1
            from styleforge.networks import DiscriminatorConfig, GeneratorConfig

            GeneratorConfig.from_dict(o.G)
            DiscriminatorConfig.from_dict(o.D)
    # paper256 on one process: global batch 64 in 8 accumulation rounds of 8 (official batch_gpu = mb // ref_gpus)
    o = resolve_options(data="x", dataset_name="x", resolution=256, num_channels=3, num_images=1, label_dim=0,
                        cfg="paper256")
    assert (o.batch, o.batch_gpu, o.rounds) == (64, 8, 8)


def test_options_json_and_desc():
    from styleforge.train.presets import TrainingOptions, resolve_options

    o = resolve_options(data="/d/faces.zip", dataset_name="faces", resolution=64, num_channels=3, num_images=10,
                        label_dim=3, cfg="auto", cond=True, mirror=True, gamma=0.5, kimg=100, batch=16,
                        aug="fixed", p=0.2, augpipe="bg")
    assert o.desc == "faces-cond-mirror-auto1-gamma0.5-kimg100-batch16-fixed-p0.2-bg"
    assert o.G["c_dim"] == 3 and o.D["c_dim"] == 3 and o.gamma == 0.5 and o.p == 0.2
    back = TrainingOptions.from_dict(json.loads(o.to_json()))
    assert back == o
    o = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                        cfg="cpu", resume="net.pkl")
    assert o.ada_kimg == 100 and o.ema_rampup is None and o.desc.endswith("-resumecustom")
    # capacity flags (the StyleGAN3 train.py names) reach both networks and the run description
    o = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                        cfg="cpu", cbase=1024, cmax=64, map_layers=3)
    assert o.desc == "x-cpu-cbase1024-cmax64-map3"
    assert o.G["synthesis"]["channel_base"] == 1024 and o.G["synthesis"]["channel_max"] == 64
    assert o.D["channel_base"] == 1024 and o.D["channel_max"] == 64 and o.G["mapping"]["num_layers"] == 3
    # one settings object; keywords replace its fields; a misspelt setting is refused
    from styleforge.train.presets import TrainSettings

    s = TrainSettings(cfg="cpu", cbase=1024, cmax=64, map_layers=3, gamma=0.5)
    o2 = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                         settings=s, gamma=None)
    assert o2.desc == o.desc and o2.G == o.G and s.gamma == 0.5
    with pytest.raises(TypeError, match="gama"):
        resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0, gama=1)


def test_option_errors():
    from styleforge.commands.train import train_cmd
    from styleforge.errors import StyleforgeError
    from styleforge.train.presets import resolve_options

    base = dict(data="x", dataset_name="x", resolution=32, num_channels=3, num_images=10, label_dim=0)
    for kw, msg in [({"cond": True}, "no labels"), ({"p": 0.3}, "--aug fixed"), ({"aug": "fixed"}, "needs --p"),
                    ({"target": 0.5, "aug": "noaug"}, "--aug ada"), ({"augpipe": "bgcfnc"}, "not implemented"),
                    ({"batch": 6, "gpus": 4}, "divisible"), ({"cmax": 0}, "--cmax 0"), ({"map_layers": 40}, "--map 40"), ({"gpus": 3}, "power of two"), ({"cfg": "nope"}, "unknown")]:
        with pytest.raises(StyleforgeError) as e:
            resolve_options(**base, **kw)
        assert re.search(msg, cli_message(e.value, train_cmd)), (kw, msg)
