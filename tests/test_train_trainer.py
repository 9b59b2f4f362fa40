"""The trainer (styleforge.train.trainer): the stateless data order, TensorBoard output, and any registered model
(styleforge.train.registry) on the same loop."""

from __future__ import annotations

import sys

import pytest
import torch

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
