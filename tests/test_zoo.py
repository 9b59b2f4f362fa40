"""styleforge.zoo: one resolution of paths, bundled and known names and URLs (offline: where to put the file);
the networks a tool needs read from the file once; families registered through zoo.FAMILIES, imported lazily."""

from __future__ import annotations

import io
import sys
import textwrap
import urllib.request

import pytest

from conftest import tiny_discriminator, tiny_generator
from styleforge import zoo
from styleforge.assets import bundled_model_path
from styleforge.errors import MissingNetworkError, StyleforgeError
from styleforge.networks import checkpoint, config
from styleforge.networks.checkpoint import save_networks
from styleforge.utils.cache import KNOWN_FILES, cache_dir


@pytest.fixture()
def gd(tmp_path):
    return save_networks(tmp_path / "gd.safetensors",
                         {"G": tiny_generator(seed=1), "G_ema": tiny_generator(seed=2), "D": tiny_discriminator()})


@pytest.fixture()
def reads(monkeypatch):
    """How many times a network file is read (parsed) while the test runs."""
    count = []
    real = checkpoint._read

    def counting(*args, **kwargs):
        count.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "_read", counting)
    return count


def test_paths_bundled_names_and_the_default(gd):
    assert zoo.resolve(gd) == gd and zoo.resolve(str(gd)) == gd
    assert zoo.resolve(None) == bundled_model_path() == zoo.resolve("faces32")
    G, path = zoo.load_generator(None)
    assert path == bundled_model_path() and not G.training and not any(p.requires_grad for p in G.parameters())


def test_known_names_and_urls_offline_say_where_to_put_the_file():
    with pytest.raises(StyleforgeError) as e:
        zoo.resolve("ffhq")
    msg = str(e.value)
    target = cache_dir() / "ffhq.pkl"
    assert f"put it at {target}" in msg and KNOWN_FILES["ffhq"].url in msg
    assert "allow_download=True / STYLEFORGE_ALLOW_DOWNLOAD=1" in msg and "--" not in msg  # a setting, not a flag
    assert e.value.render({"allow_download": "--allow-download"}).endswith("with --allow-download / "
                                                                          "STYLEFORGE_ALLOW_DOWNLOAD=1")
    with pytest.raises(StyleforgeError, match=r"put it at .*model\.pkl .*https://example\.org/x/model\.pkl"):
        zoo.resolve("https://example.org/x/model.pkl")
    with pytest.raises(StyleforgeError, match="nonet: no such network file; known names: cdcgan-mnist, dcgan-mnist, faces32, afhqcat"):
        zoo.resolve("nonet")


def test_a_known_name_is_taken_from_the_cache_or_downloaded_with_progress(gd, monkeypatch):
    cached = cache_dir() / "ffhq.pkl"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(gd.read_bytes())
    assert zoo.resolve("ffhq") == cached
    payload = gd.read_bytes()

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    def urlopen(url, timeout):
        assert url == "https://example.org/nets/tiny.safetensors"
        return Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    events = []
    nets = zoo.load_networks("https://example.org/nets/tiny.safetensors", ("G",), allow_download=True,
                             callback=events.append)
    assert nets.path == cache_dir() / "tiny.safetensors" and nets.path.read_bytes() == payload
    assert [(e.kind, e.stage) for e in events][::len(events) - 1] == [("begin", "tiny.safetensors"),
                                                                      ("end", "tiny.safetensors")]
    assert events[0].total == len(payload) and events[0].unit == "B"
    assert sum(e.n for e in events if e.kind == "advance") == len(payload)


def test_roles_are_served_from_one_read(gd, reads):
    bundle = zoo.load_networks(gd, roles=("G", "D", "G_train"))
    assert len(reads) == 1 and set(bundle.networks) == {"G", "D", "G_train"} and bundle.path == gd
    G_ema = checkpoint.load_networks(gd, "G_ema").networks["G_ema"]
    assert all((a == b).all() for a, b in zip(bundle.networks["G"].parameters(), G_ema.parameters()))  # G: G_ema
    reads.clear()
    every = zoo.load_networks(gd, roles=None)
    assert len(reads) == 1 and set(every.networks) == {"G", "G_ema", "D"}
    no_d = save_networks(gd.parent / "g.safetensors", {"G_ema": tiny_generator()})
    with pytest.raises(MissingNetworkError, match="has no network 'D'"):
        zoo.load_networks(no_d, roles=("G", "D"))


def test_the_discriminator_loss_reads_the_network_file_once(gd, reads, tmp_path):
    from PIL import Image

    from styleforge.project.batch import project_files

    Image.new("RGB", (16, 16), (90, 120, 150)).save(tmp_path / "t.png")
    res = project_files(tmp_path / "t.png", tmp_path / "out", network=gd, num_steps=1, loss="discriminator",
                        save_video=False, device="cpu")
    assert len(res.done) == 1 and res.loss == "discriminator"
    assert reads == [gd]  # G and D from one read (it used to read the file a second time for D)


FAKE_FAMILY = '''
    """A network family outside styleforge.networks, as SEGAN or a baseline will be."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from styleforge.networks.config import ConfigBase, register_network


    @dataclass
    class TinyConfig(ConfigBase):
        width: int = 3


    @register_network("fakefam.generator")
    class TinyGenerator(nn.Module):
        config_class = TinyConfig

        def __init__(self, cfg):
            super().__init__()
            self.config = cfg
            self.lin = nn.Linear(cfg.width, cfg.width)
'''


def test_a_family_listed_in_zoo_families_is_imported_when_its_checkpoint_loads(tmp_path, monkeypatch):
    (tmp_path / "fakefam_nets.py").write_text(textwrap.dedent(FAKE_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(config, "_FAMILIES", dict(config._FAMILIES))
    monkeypatch.setattr(config, "_REGISTRY", dict(config._REGISTRY))
    import fakefam_nets

    path = save_networks(tmp_path / "fake.safetensors", {"G_ema": fakefam_nets.TinyGenerator(fakefam_nets.TinyConfig(4))})
    # a fresh process: the family's module is not imported and its arch not registered
    monkeypatch.delitem(sys.modules, "fakefam_nets")
    del config._REGISTRY["fakefam.generator"]
    with pytest.raises(StyleforgeError, match="unknown network arch 'fakefam.generator'"):
        zoo.load_networks(path)
    assert "fakefam_nets" not in sys.modules
    monkeypatch.setitem(zoo.FAMILIES, "fakefam", ("fakefam_nets",))
    G = zoo.load_networks(path).networks["G"]
    assert "fakefam_nets" in sys.modules and type(G).__name__ == "TinyGenerator" and G.config.width == 4
