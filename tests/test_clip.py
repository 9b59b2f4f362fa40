"""styleforge.perceptual.clip against open_clip's own numbers (../shared/fixtures/clip): tokens, preprocessing,
features, logits and image gradients of two small random models of the real architecture (GELU and QuickGELU),
the ViT-B-32 key set, and the weight reader (torch archives and TorchScript read without running code)."""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from styleforge.errors import StyleforgeError, StyleforgeWarning
from styleforge.perceptual.clip import (CLIP, MODEL_CONFIGS, Tokenizer, WeightsFormatError, load_clip,
                                        preprocess_image, preprocess_tensor, read_state_dict, resize_crop)
from styleforge.perceptual.clip.preprocess import OPENAI_MEAN, OPENAI_STD

FIX = ROOT.parent / "shared" / "fixtures" / "clip"
SMALL = {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small models: one thread is fastest and steadiest on a shared machine."""


def fixture(name: str) -> Path:
    p = FIX / name
    if not p.is_file():
        pytest.skip(f"CLIP fixture {p} not present")
    return p


def small_config_file(tmp_path: Path, quick_gelu: bool) -> Path:
    p = tmp_path / ("small-quickgelu.json" if quick_gelu else "small.json")
    p.write_text(json.dumps({**SMALL, "quick_gelu": quick_gelu}))
    return p


def rel(a, ref) -> float:
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def inputs():
    return dict(np.load(fixture("inputs.npz")))


@pytest.fixture(scope="module")
def tokens():
    return dict(np.load(fixture("tokens.npz")))


# -- tokenizer ------------------------------------------------------------------------------------------------------

def test_tokens_equal_open_clip(tokens):
    tok = Tokenizer()
    for prompt, row in zip(tokens["prompts"], tokens["tokens"]):
        ids, _ = tok.tokenize(str(prompt))
        assert ids == row.tolist(), str(prompt)
    full = json.loads(fixture("manifest.json").read_text())["tokens"]["long_prompt_untruncated_ids"]
    assert [tok.sot] + tok.encode(str(tokens["prompts"][4])) + [tok.eot] == full


def test_long_prompt_warns_where_it_was_cut_and_empty_prompt_is_an_error(tokens):
    tok = Tokenizer()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ids = tok(str(tokens["prompts"][4]))
    assert ids[0].tolist() == tokens["tokens"][4].tolist()
    msgs = [str(x.message) for x in w if issubclass(x.category, StyleforgeWarning)]
    assert len(msgs) == 1 and "94 tokens long, CLIP reads 75" in msgs[0] and "'long'" in msgs[0], msgs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("a photo of a cat")  # no warning for a short prompt
    for bad in ("", "   \n"):
        with pytest.raises(StyleforgeError, match="prompt .*is empty"):
            tok(bad)


def test_pre_tokenisation_rules():
    from styleforge.perceptual.clip.tokenizer import split_words

    # digits one by one, contractions, punctuation runs, letters of any script (as the \p{L} / \p{N} regex)
    assert split_words("you're 1984 -- naïve 東京!") == ["you", "'re", "1", "9", "8", "4", "--", "naïve", "東京", "!"]
    tok = Tokenizer()
    assert tok.decode(tok.tokenize("A Blond   kid &amp; green eyes")[0]) == "a blond kid & green eyes"


# -- preprocessing --------------------------------------------------------------------------------------------------

def test_exact_preprocessing_is_open_clips_bit_for_bit(inputs):
    for i, name in enumerate(inputs["image_names"]):
        src = inputs[f"source_{name}"]
        assert np.array_equal(resize_crop(src, 64).transpose(2, 0, 1), inputs["images_uint8"][i])
        assert np.array_equal(resize_crop(src, 224).transpose(2, 0, 1), inputs["preprocess224_uint8"][i])
        assert np.array_equal(preprocess_image(src, 64).numpy(), inputs["images"][i])
        assert np.array_equal(preprocess_image(src, 224).numpy(), inputs["preprocess224"][i])


def test_differentiable_preprocessing_is_close_to_the_exact_one(inputs):
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    for i, name in enumerate(inputs["image_names"]):
        src = torch.from_numpy(inputs[f"source_{name}"]).permute(2, 0, 1)[None].float()
        x = preprocess_tensor(src, 224, (0, 255))
        px = ((x * std + mean) * 255).clamp(0, 255).round().numpy()[0]
        d = np.abs(px - inputs["preprocess224_uint8"][i].astype(np.float32))
        assert d.max() <= 5 and d.mean() < 0.25, (name, d.max(), d.mean())
        # the same in the generator's range [-1, 1]
        y = preprocess_tensor(src / 127.5 - 1, 224)
        assert torch.allclose(x, y, atol=1e-5)
    gray = torch.rand(2, 1, 32, 32)
    out = preprocess_tensor(gray, 64, (0, 1))
    assert out.shape == (2, 3, 64, 64) and torch.allclose(out[:, 0] * OPENAI_STD[0] + OPENAI_MEAN[0],
                                                          out[:, 1] * OPENAI_STD[1] + OPENAI_MEAN[1], atol=1e-6)


# -- the model against open_clip's outputs --------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["gelu", "quickgelu"])
def test_features_logits_and_gradients_match_open_clip(act, inputs, tokens, tmp_path):
    out = np.load(fixture(f"outputs_{act}.npz"))
    clip = load_clip(small_config_file(tmp_path, act == "quickgelu"), fixture(f"clip_small_{act}.safetensors"))
    assert clip.source["activation"] == ("QuickGELU" if act == "quickgelu" else "GELU")
    x = torch.from_numpy(inputs["images"])
    ids = torch.from_numpy(tokens["tokens"])
    with torch.no_grad():
        fi, ft = clip.encode_image(x), clip.encode_text(ids)
        logits_img, logits_txt = clip(x, ids)
    assert rel(fi, out["image_features"]) <= 1e-5
    assert rel(ft, out["text_features"]) <= 1e-5
    assert rel(torch.nn.functional.normalize(fi, dim=-1), out["image_features_normalized"]) <= 1e-5
    assert rel(logits_img, out["logits_per_image"]) <= 1e-5
    assert rel(logits_txt, out["logits_per_image"].T) <= 1e-5
    assert abs(clip.logit_scale.exp().item() - float(out["logit_scale_exp"])) <= 1e-5 * float(out["logit_scale_exp"])

    # d sim / d input, through the normalised input and through [0, 1] pixels (the optimisation path)
    txt = clip.encode_text(ids[2:3], normalize=True)
    xi = x[:1].clone().requires_grad_(True)
    sim = (clip.encode_image(xi, normalize=True) * txt).sum()
    (g,) = torch.autograd.grad(sim, [xi])
    assert abs(sim.item() - float(out["sim"])) <= 1e-5 * abs(float(out["sim"]))
    assert rel(g[0], out["grad_sim_wrt_image"]) <= 1e-4
    p = torch.from_numpy(inputs["images_uint8"][:1].astype(np.float32) / 255).requires_grad_(True)
    sim2 = (clip.encode_pixels(p, value_range=(0, 1)) * txt).sum()  # 64 px in, no resize: the exact input
    (g2,) = torch.autograd.grad(sim2, [p])
    assert abs(sim2.item() - float(out["sim_check"])) <= 1e-5 * abs(float(out["sim"]))
    assert rel(g2[0], out["grad_sim_wrt_pixels01"]) <= 1e-4


def test_a_wrong_activation_is_visible_in_the_outputs(inputs, tmp_path):
    """The tolerance above separates the two activations (so the tests above pin the activation down)."""
    out = np.load(fixture("outputs_quickgelu.npz"))
    clip = load_clip(small_config_file(tmp_path, False), fixture("clip_small_quickgelu.safetensors"))
    with torch.no_grad():
        assert rel(clip.encode_image(torch.from_numpy(inputs["images"])), out["image_features"]) > 1e-3


def test_vit_b_32_has_open_clips_keys_and_shapes():
    keys = json.loads(fixture("vit_b_32_keys.json").read_text())["keys"]
    with torch.device("meta"):
        for name in ("ViT-B-32", "ViT-B-32-quickgelu"):
            sd = CLIP(MODEL_CONFIGS[name]).state_dict()
            assert [(k, list(v.shape)) for k, v in sd.items()] == [(k["name"], k["shape"]) for k in keys]
    assert MODEL_CONFIGS["ViT-B-32"].vision_heads == 12 and not MODEL_CONFIGS["ViT-B-32"].quick_gelu
    assert MODEL_CONFIGS["ViT-B-32-quickgelu"].quick_gelu


# -- weight files ---------------------------------------------------------------------------------------------------

class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _scripted_archive(state, path: Path, openai_extras: bool = True) -> None:
    """A TorchScript archive holding ``state`` as module attributes, as OpenAI's ViT-B-32.pt does (some tensors
    float16, plus the three non-weight entries and a plain attn_mask attribute)."""
    root = _Holder()
    for key, v in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for part in parents:
            if not hasattr(mod, part):
                mod.add_module(part, _Holder())
            mod = getattr(mod, part)
        t = v.clone().half() if ".mlp." in key else v.clone()
        mod.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
    if openai_extras:
        for name, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
            root.register_buffer(name, torch.tensor(value))
    root.transformer.resblocks.get_submodule("0").attn_mask = torch.zeros(77, 77)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(root).save(str(path))


def test_torchscript_archive_is_read_without_running_it(tmp_path, monkeypatch, inputs):
    from safetensors.torch import load_file

    state = load_file(str(fixture("clip_small_gelu.safetensors")))
    ts = tmp_path / "ViT-small.pt"
    _scripted_archive(state, ts)

    def no_jit(*a, **k):
        raise AssertionError("torch.jit.load must not be called")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    monkeypatch.setattr(torch, "load", no_jit)
    got, fmt = read_state_dict(ts)
    assert fmt.startswith("TorchScript")
    for k, v in state.items():
        want = v.half() if ".mlp." in k else v
        assert got[k].dtype == want.dtype and torch.equal(got[k], want), k
    # OpenAI's archive -> QuickGELU even though the config says GELU; extras dropped; float32 everywhere
    notes = []
    clip = load_clip(small_config_file(tmp_path, False), ts, callback=notes.append)
    assert clip.source["activation"] == "QuickGELU" and "QuickGELU" in str(notes[0].message)
    assert all(p.dtype == torch.float32 for p in clip.parameters())
    out = np.load(fixture("outputs_quickgelu.npz"))
    with torch.no_grad():
        fi = clip.encode_image(torch.from_numpy(inputs["images"]))
    assert rel(fi, out["image_features"]) <= 2e-3  # the MLP weights went through float16 in this archive


def test_torch_save_state_dict_and_module_prefix(tmp_path, inputs):
    from safetensors.torch import load_file

    state = load_file(str(fixture("clip_small_gelu.safetensors")))
    p = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, p)
    got, fmt = read_state_dict(p)
    assert fmt == "torch zip archive" and set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)
    clip = load_clip(small_config_file(tmp_path, False), p)
    out = np.load(fixture("outputs_gelu.npz"))
    with torch.no_grad():
        assert rel(clip.encode_image(torch.from_numpy(inputs["images"])), out["image_features"]) <= 1e-5


def test_hostile_and_foreign_files_are_refused(tmp_path):
    # a torch archive whose pickle calls os.system: refused by name, nothing run
    evil = tmp_path / "evil.pt"
    payload = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00touch pwnd\x85R."
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/data.pkl", payload)
    with pytest.raises(WeightsFormatError, match="refusing global 'os.system'"):
        read_state_dict(evil)
    assert not Path("pwnd").exists()
    # a tensor record reaching past its storage
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(short, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b[:8] if "/data/" in n else b)
    with pytest.raises(WeightsFormatError, match="truncated"):
        read_state_dict(short)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not weights at all")
    with pytest.raises(WeightsFormatError, match="junk.pt"):
        read_state_dict(junk)


def test_weights_of_another_model_and_missing_weights(tmp_path):
    with pytest.raises(StyleforgeError, match=r"weights of another model than ViT-B-32 \(positional_embedding is "
                                              r"\[77, 64\], ViT-B-32 needs \[77, 512\]\)"):
        load_clip("ViT-B-32", fixture("clip_small_gelu.safetensors"))
    with pytest.raises(StyleforgeError, match="nope.safetensors: no such file"):
        load_clip("ViT-B-32", tmp_path / "nope.safetensors")
    with pytest.raises(StyleforgeError, match="unknown model"):
        load_clip("ViT-Z-99", fixture("clip_small_gelu.safetensors"))


def test_offline_without_weights_names_the_file_at_once():
    from styleforge.utils.cache import cache_dir

    t0 = time.perf_counter()
    with pytest.raises(StyleforgeError) as e:
        load_clip("ViT-B-32", "openai")
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert f"put it at {cache_dir() / 'ViT-B-32.pt'}" in msg and "openaipublic.azureedge.net" in msg
