"""The baselines' data and measuring tools: an ImageFolder's class subfolders are labels for conditional training,
a run without tensorboard says so in one line, and the digit classifier that serves as the MNIST FID detector
learns digits, is deterministic and plugs into the metrics package as its ``inception`` detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_data import data, digits, one_thread_module  # noqa: F401 - fixtures


def _folder(root, layout):
    import PIL.Image

    for i, name in enumerate(layout):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(p)
    return root


def test_an_image_folder_with_class_subfolders_has_labels_for_training(tmp_path):
    from styleforge.data.dataset import ImageDataset, open_dataset

    imgs = _folder(tmp_path / "imgfolder", ["seven/a.png", "one/b.png", "seven/c.png", "one/d.png", "three/e.png"])
    ds = open_dataset(imgs, cond=True)
    assert ds.label_dim == 3  # classes in sorted order: one, seven, three
    assert [int(np.argmax(ds.get_label(i))) for i in range(len(ds))] == [0, 0, 1, 1, 2]  # files sorted by path
    assert not open_dataset(imgs, cond=False).has_labels and not ImageDataset(imgs).has_labels
    # not an ImageFolder: no labels, and no error (unconditional training on these must keep working)
    flat = _folder(tmp_path / "flat", ["a.png", "b.png"])
    one = _folder(tmp_path / "one", ["only/a.png", "only/b.png"])
    mixed = _folder(tmp_path / "mixed", ["x/a.png", "y/b.png", "c.png"])
    official = _folder(tmp_path / "official", ["00000/img0.png", "00001/img1.png"])
    (official / "dataset.json").write_text(json.dumps({"labels": None}))  # the dataset tool's unlabelled layout
    for folder in (flat, one, mixed, official):
        assert not open_dataset(folder, cond=True).has_labels, folder.name


def test_a_conditional_baseline_trains_on_an_image_folder_and_says_tensorboard_is_missing(data, tmp_path,
                                                                                         monkeypatch):
    import sys

    from styleforge.baselines.run import tensorboard_missing, train_baseline
    from styleforge.zoo import load_generator

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    events = []
    folder = digits(tmp_path / "digits", 40)  # sklearn digits in class subfolders 0..9, no dataset.json
    res = train_baseline("cdcgan", str(folder), str(tmp_path / "runs"), epochs=8 / 40, batch=8, workers=0,
                         deterministic=True, callback=events.append)
    assert res.done and res.cur_nimg == 8
    G, _ = load_generator(res.generator)
    assert G.c_dim == 10 and G.img_resolution == 16
    notes = [str(e.message) for e in events if e.kind == "note" and "tensorboard" in str(e.message).lower()]
    assert len(notes) == 1 and "\n" not in notes[0] and "pip install tensorboard" in notes[0]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", type(sys)("fake_tb"))
    sys.modules["torch.utils.tensorboard"].SummaryWriter = object
    assert tensorboard_missing() is None


def _sklearn_digits(size=16):
    import PIL.Image
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.stack([np.asarray(PIL.Image.fromarray((im / 16 * 255).astype(np.uint8)).resize((size, size),
                                                                                        PIL.Image.BILINEAR))
                  for im in d.images])
    return X, d.target


@pytest.fixture(scope="module")
def digit_net():
    from styleforge.baselines.digits import train_digit_net

    X, y = _sklearn_digits()
    return train_digit_net(X[:1000], y[:1000], epochs=6, seed=0), X, y


def test_digit_classifier_learns_unseen_digits_and_is_deterministic(digit_net):
    from styleforge.baselines.digits import accuracy, train_digit_net

    net, X, y = digit_net
    assert accuracy(net, X[1000:], y[1000:]) >= 0.85  # 797 digits it never saw (chance: 0.1)
    again = train_digit_net(X[:1000], y[:1000], epochs=6, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    other = train_digit_net(X[:1000], y[:1000], epochs=6, seed=1)
    assert not torch.equal(net.fc1.weight, other.fc1.weight)


def test_digit_classifier_is_a_metrics_detector(digit_net, tmp_path):
    """Saved as TorchScript it loads as the metrics' inception detector and gives the eager features; grayscale
    repeated to RGB (what the metrics feed it) is the same as gray; its FID sees a dropped half of the classes."""
    from styleforge.metrics import features as MF
    from styleforge.metrics.formulas import MeanCov, frechet_distance
    from styleforge.perceptual.detectors import load_detector

    net, X, y = digit_net
    det = load_detector("inception", net.save_torchscript(tmp_path / "digits.pt"))
    imgs = torch.from_numpy(X[1000:1400])[:, None]  # uint8 [400, 1, 16, 16]
    feats = MF.run_detector(det, imgs, {"return_features": True}, "legacy", "cpu")
    assert feats.shape == (400, 128)
    torch.testing.assert_close(feats, net(imgs, return_features=True))
    torch.testing.assert_close(feats, net(imgs.repeat(1, 3, 1, 1), return_features=True))
    probs = det(imgs.repeat(1, 3, 1, 1))
    torch.testing.assert_close(probs.sum(1), torch.ones(400))
    with pytest.raises(Exception):
        det(imgs, return_lpips=True)

    def fid(a, b):
        ma, mb = MeanCov(), MeanCov()
        ma.update(net(torch.from_numpy(X[a])[:, None], return_features=True))
        mb.update(net(torch.from_numpy(X[b])[:, None], return_features=True))
        return frechet_distance(ma.mean(), ma.cov(), mb.mean(), mb.cov())

    held = np.random.RandomState(0).permutation(np.arange(1000, len(y)))  # 797 digits the net never saw
    half_a, half_b = held[:398], held[398:]
    low = half_a[y[half_a] < 5]
    same = fid(half_a, half_b)
    dropped = fid(np.resize(low, len(half_a)), half_b)  # as many images, but only the digits 0-4
    assert same < 0.25 * dropped
