"""The bundled default model: shipped as package data, loadable by name, and still a face generator.

The face check reuses ``benchmarks/bundled_model_check.py`` (HOG + logistic-regression face classifier trained on
scikit-image's lfw_subset) on fewer samples than the benchmark's 200, so that replacing the model with a worse one
fails here too.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import ROOT
from styleforge.assets import BUNDLED_MODELS, bundled_model_path, default_network_path
from styleforge.networks.checkpoint import load_networks
from styleforge.utils.cache import resolve_file


def test_bundled_model_ships_and_is_the_default():
    path = bundled_model_path()
    assert path is not None and path.name == BUNDLED_MODELS[0]
    assert default_network_path() == path
    assert resolve_file("faces32") == path
    bundle = load_networks(path)
    assert set(bundle.networks) == {"G_ema", "D"}  # D: the projector's offline loss and fine-tuning
    G, D = bundle.networks["G_ema"], bundle.networks["D"]
    assert (G.c_dim, G.img_resolution, G.img_channels) == (0, 32, 1)
    assert (D.c_dim, D.img_resolution, D.img_channels) == (0, 32, 1)
    card = path.with_suffix(".md")
    assert card.is_file() and "kimg" in card.read_text()


def test_demo_network_without_a_bundled_model_is_reported_through_the_callback(monkeypatch, capsys):
    """An install without the bundled model builds the demo network once and says so to the caller's progress
    callback (the library prints nothing)."""
    import styleforge.assets as assets

    monkeypatch.setattr(assets, "BUNDLED_MODELS", ())
    events = []
    path = default_network_path(callback=events.append)
    assert path.name == assets.DEMO_NAME and path.is_file()
    assert [e.kind for e in events] == ["note"] and "random-init demo network" in str(events[0].message)
    assert default_network_path(callback=events.append) == path and len(events) == 1  # built once
    assert capsys.readouterr() == ("", "")


def _check_module():
    spec = importlib.util.spec_from_file_location("bundled_model_check", ROOT / "benchmarks" / "bundled_model_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_model_draws_varied_faces_not_copies():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from scipy.spatial.distance import cdist
    from skimage.data import lfw_subset

    check = _check_module()
    data = lfw_subset()
    faces, nonfaces = data[:100], data[100:]
    clf, cv_acc = check.face_classifier(faces, nonfaces)
    assert cv_acc > 0.9  # the classifier itself tells faces from non-faces, noise and blobs
    samples = check.to_gray25(check.sample_network(None, 100, 1.0))
    assert clf.predict(check.hog_features(samples)).mean() >= 0.8
    assert check.mean_pairwise(samples) >= 0.6 * check.mean_pairwise(faces)
    d_real = cdist(faces.reshape(100, -1), faces.reshape(100, -1))
    np.fill_diagonal(d_real, np.inf)
    nearest = cdist(samples.reshape(100, -1), faces.reshape(100, -1)).min(axis=1)
    assert (nearest < 0.5 * np.median(d_real.min(axis=1))).mean() <= 0.1
