"""Official pickle variants beyond the fixtures: TF-converted settings (legacy kwargs, D mapping with 0 layers,
mbstd over the whole batch), fp16/clamp settings, protocol 4 with numpy 2 names. Written by the test writer in
tests/official_format.py (official layout, no official code involved) and read back through load_networks."""

from __future__ import annotations

import pytest
import torch

from official_format import write_official_pickle
from styleforge.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from styleforge.networks.checkpoint import load_networks


def _tf_style_networks():
    torch.manual_seed(1)
    G = Generator(GeneratorConfig.from_dict({
        "z_dim": 24, "w_dim": 40, "c_dim": 3, "img_resolution": 16, "img_channels": 3,
        "mapping": {"num_layers": 3, "embed_features": 16, "layer_features": 48, "activation": "lrelu",
                    "lr_multiplier": 0.01, "w_avg_beta": 0.995},
        "synthesis": {"channel_base": 512, "channel_max": 32, "num_fp16_res": 2, "conv_clamp": 256,
                      "architecture": "skip", "resample_filter": [1, 3, 3, 1], "use_noise": True,
                      "activation": "lrelu"},
    })).eval()
    D = Discriminator(DiscriminatorConfig.from_dict({
        "c_dim": 3, "img_resolution": 16, "img_channels": 3, "architecture": "resnet", "channel_base": 512,
        "channel_max": 32, "cmap_dim": 24, "mbstd_group_size": None, "mbstd_num_channels": 2,
        "mapping": {"num_layers": 0, "lr_multiplier": 0.1, "w_avg_beta": None},
    })).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for n, p in G.named_parameters():
            if n.endswith("noise_strength"):
                p.fill_(0.3)
    return G, D


@pytest.mark.parametrize("protocol,numpy2", [(3, False), (4, True)])
def test_tf_converted_style_settings_load_and_match(tmp_path, protocol, numpy2):
    G, D = _tf_style_networks()
    path = write_official_pickle(tmp_path / "tf.pkl", G=G, D=D, G_ema=G, protocol=protocol, numpy2_names=numpy2)
    b = load_networks(path)
    G2, D2 = b.networks["G_ema"], b.networks["D"]
    assert G2.config == G.config and D2.config == D.config
    assert not hasattr(D2.mapping, "fc0") and D2.b4.mbstd.group_size is None
    z, c = torch.randn(6, 24), torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    with torch.no_grad():
        assert torch.equal(G(z, c, truncation_psi=0.6), G2(z, c, truncation_psi=0.6))
        assert torch.equal(G(z, c, fp16=True), G2(z, c, fp16=True))
        img = torch.randn(6, 3, 16, 16)
        assert torch.equal(D(img, c), D2(img, c))


def test_unknown_official_setting_is_a_clear_error(tmp_path):
    from styleforge.errors import NetworkFormatError
    from official_format import generator_init_kwargs

    G, _ = _tf_style_networks()
    kw = generator_init_kwargs(G.config.to_dict())
    kw["synthesis_kwargs"]["magic"] = 1

    # write with the patched kwargs by swapping the function the writer takes them from
    import official_format as of

    orig = of.generator_init_kwargs
    of.generator_init_kwargs = lambda cfg: kw
    try:
        path = write_official_pickle(tmp_path / "odd.pkl", G_ema=G)
    finally:
        of.generator_init_kwargs = orig
    with pytest.raises(NetworkFormatError, match="magic"):
        load_networks(path)
