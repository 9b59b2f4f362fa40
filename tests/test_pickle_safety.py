"""Safety and robustness of the official-pickle reader (load_network / load_networks on .pkl files).

Covers: embedded ``module_src`` is never executed; globals outside the allow-list (also inside tensor blobs) are
refused with a one-line UnsafePickleError and nothing runs; truncated, empty, random and non-network files raise
NetworkFormatError and nothing else; protocol 3/4 and numpy 1.x/2.x spellings load; tiny G/D written in the
official layout round-trip bit-identically. Networks are tiny, so the whole file runs in seconds.
"""

from __future__ import annotations

import collections
import copy
import io
import os
import pickletools
import random
import re
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the official_format test utility

from official_format import (  # noqa: E402
    LOAD_FROM_BYTES,
    REBUILD_PARAMETER,
    GlobalRef,
    Reduce,
    legacy_storage_blob,
    official_pickle_bytes,
    tiny_networks,
    write_official_pickle,
)

from styleforge.errors import NetworkFormatError, UnsafePickleError  # noqa: E402
from styleforge.networks.checkpoint import load_network, load_networks  # noqa: E402
from styleforge.networks.official import ALLOWED_GLOBALS, read_official_pickle  # noqa: E402

FIXTURES = Path(os.environ.get("STYLEFORGE_OFFICIAL_FIXTURES", "/work/shared/fixtures/official"))
FIXTURE_NAMES = ("cifar_cond_r32", "paper256_r128", "resnet_fp32_r64")

# Tiny configurations (name -> G overrides, D overrides), on top of official_format.TINY_G / TINY_D.
KINDS = {
    "skip16": ({}, {}),
    "resnet32_cond": (
        dict(img_resolution=32, c_dim=4, z_dim=64, w_dim=64,
             synthesis=dict(channel_base=512, channel_max=32, architecture="resnet")),
        dict(img_resolution=32, c_dim=4, channel_base=512, architecture="orig"),
    ),
    "orig16_clamp": (
        dict(synthesis=dict(channel_base=256, channel_max=32, architecture="orig", conv_clamp=256)),
        dict(architecture="skip", conv_clamp=256, mbstd_group_size=None),
    ),
}


@pytest.fixture(scope="module")
def nets():
    """kind -> (G, D, G_ema) for a few tiny configurations. Tests must not modify them (deepcopy first)."""
    return {k: tiny_networks(seed=i, g_overrides=g, d_overrides=d) for i, (k, (g, d)) in enumerate(KINDS.items())}


@pytest.fixture(scope="module")
def tiny_pickle(nets, tmp_path_factory):
    """The bytes of a tiny official-layout snapshot (G, D, G_ema)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pkl"
    G, D, G_ema = nets["skip16"]
    write_official_pickle(path, G=G, D=D, G_ema=G_ema, training_set_kwargs={"class_name": "x", "resolution": 16})
    return path.read_bytes()


def _tensors(net):
    out = dict(net.named_parameters())
    out.update(net.named_buffers())
    return out


def assert_bit_identical(src, dst):
    a, b = _tensors(src), _tensors(dst)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name].detach(), b[name].detach()), name
    assert type(src) is type(dst) and src.config == dst.config


_OTHER = object()


def _globals_of(data: bytes):
    """Every (module, name) the outer pickle references through GLOBAL or STACK_GLOBAL, found statically.

    STACK_GLOBAL takes its two names from the stack, where they may come from the memo, so string pushes and the
    memo are tracked (every other opcode counts as pushing a non-string, which is all this needs).
    """
    found, pushed, memo = set(), [], {}
    for op, arg, _pos in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
            pushed.append(_OTHER)
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            pushed.append(arg)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1]
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo[arg])
        elif op.name == "STACK_GLOBAL":
            found.add((pushed[-2], pushed[-1]))
            pushed.append(_OTHER)
        elif op.name not in ("FRAME", "PROTO", "MARK", "STOP"):
            pushed.append(_OTHER)
    return found


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------------------------
# (a) module_src is never executed


def _marker_src(marker: Path) -> str:
    return (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('module_src was executed')\n"
        "raise SystemExit('module_src was executed')\n"
    )


def test_module_src_payload_is_live(tmp_path):
    """Sanity check of the payload itself: exec'ing it (what the official loader does) creates the marker."""
    marker = tmp_path / "proof"
    with pytest.raises(SystemExit):
        exec(compile(_marker_src(marker), "<payload>", "exec"), {})
    assert marker.exists()


@pytest.mark.parametrize("protocol", [3, 4])
def test_module_src_is_never_executed(nets, tmp_path, protocol):
    marker = tmp_path / "EXECUTED"
    G, D, G_ema = nets["skip16"]
    path = write_official_pickle(tmp_path / "evil_src.pkl", G=G, D=D, G_ema=G_ema,
                                 module_src=_marker_src(marker), protocol=protocol)
    assert _marker_src(marker).encode() in path.read_bytes()
    net = load_network(path)
    assert_bit_identical(G_ema, net)
    bundle = load_networks(path)
    assert sorted(bundle.networks) == ["D", "G", "G_ema"]
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# (b) globals outside the allow-list are refused, and nothing runs


def _hostile_call(module: str, name: str, marker: Path) -> Reduce:
    if (module, name) == ("builtins", "eval"):
        args = (f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",)
    elif (module, name) == ("builtins", "exec"):
        args = (f"open({str(marker)!r}, 'w').close()",)
    elif (module, name) == ("subprocess", "Popen"):
        args = (["touch", str(marker)],)
    elif (module, name) == ("builtins", "open"):
        args = (str(marker), "w")
    else:
        args = (f"touch {marker}",)
    return Reduce(GlobalRef(module, name), args)


HOSTILE = [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
    ("builtins", "open"), ("builtins", "getattr"), ("builtins", "__import__"), ("torch", "load"),
    ("numpy", "load"), ("torch_utils.persistence", "persistent_class"), ("dnnlib.util", "call_func_by_name"),
]


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("module,name", HOSTILE)
def test_hostile_global_alone_is_refused(tmp_path, module, name, protocol):
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(official_pickle_bytes(_hostile_call(module, name, marker), protocol=protocol))
    assert (module, name) in _globals_of(path.read_bytes())
    with pytest.raises(UnsafePickleError) as info:
        load_network(path)
    assert f"{module}.{name}" in _one_line(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["top-level entry", "inside module state", "as a tensor"])
@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("subprocess", "Popen")])
def test_hostile_global_inside_a_network_is_refused(nets, tmp_path, module, name, where):
    marker = tmp_path / "EXECUTED"
    G, D, G_ema = nets["skip16"]
    call = _hostile_call(module, name, marker)
    augment_pipe = None
    if where == "top-level entry":
        augment_pipe = call
    elif where == "inside module state":
        G_ema = copy.deepcopy(G_ema)
        G_ema.mapping.__dict__["evil"] = call  # a plain attribute of a submodule
    else:
        G_ema = copy.deepcopy(G_ema)
        G_ema.synthesis.b4._parameters["const"] = Reduce(REBUILD_PARAMETER, (call, False, collections.OrderedDict()))
    path = write_official_pickle(tmp_path / "evil.pkl", G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe)
    assert (module, name) in _globals_of(path.read_bytes())
    with pytest.raises(UnsafePickleError) as info:
        load_networks(path)
    assert f"{module}.{name}" in _one_line(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("torch", "load")])
def test_hostile_global_inside_tensor_blob_is_refused(nets, tmp_path, module, name):
    G, D, G_ema = nets["skip16"]
    data = {"training_set_kwargs": None, "G": G, "D": D, "G_ema": G_ema, "augment_pipe": None}
    path = tmp_path / "evil_blob.pkl"
    path.write_bytes(official_pickle_bytes(data, storage_global=GlobalRef(module, name)))
    with pytest.raises(UnsafePickleError) as info:
        load_network(path)
    msg = _one_line(info.value)
    assert f"{module}.{name}" in msg and "tensor blob" in msg


def test_hostile_reduce_inside_tensor_blob_is_refused(tmp_path):
    """A blob whose storage record is a call to os.system (REDUCE inside the inner pickle)."""
    marker = tmp_path / "EXECUTED"
    blob = legacy_storage_blob(torch.zeros(3), storage_global=GlobalRef("os", "system"))
    inner = official_pickle_bytes(_hostile_call("os", "system", marker), protocol=2)
    start = blob.index(b"\x80\x02(")  # the 4th pickle (storage record) -> replace it by the hostile one
    end = blob.index(b".", blob.index(b"Q", start)) + 1
    blob = blob[:start] + inner + blob[end:]
    path = tmp_path / "evil.pkl"
    path.write_bytes(official_pickle_bytes({"G_ema": Reduce(LOAD_FROM_BYTES, (blob,))}))
    with pytest.raises(UnsafePickleError) as info:
        load_network(path)
    assert "os.system" in _one_line(info.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# (c) malformed input -> NetworkFormatError and nothing else


def _expect_format_error(path) -> NetworkFormatError:
    with pytest.raises(NetworkFormatError) as info:
        load_networks(path)
    _one_line(info.value)
    with pytest.raises(NetworkFormatError):
        load_network(path)
    return info.value


def test_truncated_at_many_offsets(tiny_pickle, tmp_path):
    n = len(tiny_pickle)
    # Structural offsets (inside opcodes of the outer pickle) plus a spread of arbitrary ones.
    op_offsets = [pos for _op, _arg, pos in pickletools.genops(tiny_pickle)]
    cuts = {1, 2, 3, 10, 100, n // 7, n // 3, n // 2, n - 2, n - 1}
    cuts.update(op_offsets[i] + 1 for i in range(0, len(op_offsets), max(1, len(op_offsets) // 25)))
    path = tmp_path / "cut.pkl"
    for cut in sorted(c for c in cuts if 0 < c < n):
        path.write_bytes(tiny_pickle[:cut])
        err = _expect_format_error(path)
        assert not isinstance(err, UnsafePickleError), cut


def test_empty_missing_and_directory(tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    assert "empty" in str(_expect_format_error(empty))
    _expect_format_error(tmp_path / "missing.pkl")
    _expect_format_error(tmp_path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "random.pkl"
    for n in (1, 7, 64, 4096):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(n)))
        _expect_format_error(path)
        for proto in (2, 3, 4, 5):  # random opcodes behind a valid pickle header
            path.write_bytes(bytes([0x80, proto]) + bytes(rng.randrange(256) for _ in range(n)))
            _expect_format_error(path)


NON_NETWORKS = {
    "list": [1, 2, 3],
    "int": 42,
    "str": "G_ema",
    "none": None,
    "dict_without_G": {"D": None, "training_set_kwargs": None, "foo": 1},
    "empty_dict": {},
    "G_is_int": {"G": 5, "G_ema": 5},
    "G_is_dict": {"G_ema": {"z_dim": 512}},
    "G_is_tensor": {"G_ema": torch.zeros(3)},
    "bad_training_set_kwargs": {"G_ema": None, "training_set_kwargs": [1, 2]},
}


@pytest.mark.parametrize("kind", sorted(NON_NETWORKS))
@pytest.mark.parametrize("protocol", [3, 4])
def test_non_network_pickles(tmp_path, kind, protocol):
    path = tmp_path / f"{kind}.pkl"
    path.write_bytes(official_pickle_bytes(NON_NETWORKS[kind], protocol=protocol))
    err = _expect_format_error(path)
    assert not isinstance(err, UnsafePickleError)


def test_non_network_module_class(nets, tmp_path):
    """A persistent object that is not a Generator/Discriminator where one is expected."""
    G, D, G_ema = nets["skip16"]
    path = write_official_pickle(tmp_path / "swapped.pkl", G=G.mapping, G_ema=G.synthesis.b4, D=D.b4)
    _expect_format_error(path)


def test_torch_save_files(nets, tmp_path):
    G = nets["skip16"][0]
    zipped = tmp_path / "state_dict.pt"
    torch.save(G.state_dict(), zipped)
    assert "zip" in str(_expect_format_error(zipped))
    legacy = tmp_path / "state_dict_legacy.pt"
    torch.save(G.state_dict(), legacy, _use_new_zipfile_serialization=False)
    _expect_format_error(legacy)  # starts with the magic-number pickle: an int, not a network dict
    whole = tmp_path / "module.pt"
    torch.save(G, whole)
    _expect_format_error(whole)


def test_tensors_that_do_not_match_the_config(nets, tmp_path):
    G = copy.deepcopy(nets["orig16_clamp"][2])
    G.synthesis.b16.torgb._parameters["bias"] = torch.nn.Parameter(torch.zeros(4))  # config says 3 channels
    path = write_official_pickle(tmp_path / "wrong_shape.pkl", G_ema=G)
    assert "torgb.bias" in str(_expect_format_error(path))
    G = copy.deepcopy(nets["skip16"][2])
    del G.mapping._buffers["w_avg"]
    path = write_official_pickle(tmp_path / "missing.pkl", G_ema=G)
    assert "w_avg" in str(_expect_format_error(path))
    G = copy.deepcopy(nets["skip16"][2])
    G.mapping._buffers["w_avg_extra"] = torch.zeros(3)
    path = write_official_pickle(tmp_path / "unexpected.pkl", G_ema=G)
    assert "w_avg_extra" in str(_expect_format_error(path))


# ---------------------------------------------------------------------------------------------------------------
# (d) protocol 3 and 4, numpy 1.x and 2.x spellings


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("numpy2", [False, True])
def test_protocols_and_numpy_spellings(nets, tmp_path, protocol, numpy2):
    G, D, G_ema = nets["skip16"]
    path = write_official_pickle(tmp_path / "p.pkl", G=G, D=D, G_ema=G_ema, protocol=protocol, numpy2_names=numpy2)
    data = path.read_bytes()
    assert data[:2] == bytes([0x80, protocol])
    found = _globals_of(data)
    spelling = ("numpy._core.multiarray", "scalar") if numpy2 else ("numpy.core.multiarray", "scalar")
    assert spelling in found
    assert found <= set(ALLOWED_GLOBALS)
    expected = {("torch_utils.persistence", "_reconstruct_persistent_obj"), ("dnnlib.util", "EasyDict"),
                ("collections", "OrderedDict"), ("torch._utils", "_rebuild_parameter"),
                ("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes"), ("numpy", "dtype"),
                spelling}
    if protocol < 4:
        expected.add(("builtins", "set"))
    assert found == expected
    bundle = load_networks(path)
    for key, src in (("G", G), ("D", D), ("G_ema", G_ema)):
        assert_bit_identical(src, bundle.networks[key])


def _fixture(name: str) -> Path:
    path = FIXTURES / f"{name}.pkl"
    if not path.exists():
        pytest.skip(f"official fixture {path} not present on this machine")
    return path


def test_fixture_numpy2_spelling_loads_identically(tmp_path):
    """Respell the numpy 1.x scalar global of a real official pickle as numpy 2.x writes it; same tensors."""
    src = _fixture("cifar_cond_r32")
    data = src.read_bytes()
    old, new = b"cnumpy.core.multiarray\nscalar\n", b"cnumpy._core.multiarray\nscalar\n"
    assert old in data and new not in data
    respelled = tmp_path / "np2.pkl"
    respelled.write_bytes(data.replace(old, new))  # GLOBAL is newline-terminated: no lengths to fix up
    a, b = load_networks(src), load_networks(respelled)
    for key in ("G", "D", "G_ema"):
        assert_bit_identical(a.networks[key], b.networks[key])


def test_writer_matches_fixture_layout(nets):
    """Our writer reproduces the official layout: same globals, same meta keys and state key order."""
    src = _fixture("cifar_cond_r32")
    data = src.read_bytes()
    G, D, G_ema = nets["resnet32_cond"]
    ours = official_pickle_bytes({"training_set_kwargs": None, "G": G, "D": D, "G_ema": G_ema,
                                  "augment_pipe": None})
    assert _globals_of(ours) == _globals_of(data)
    with open(src, "rb") as f:
        theirs_rec = read_official_pickle(f).modules
    ours_rec = read_official_pickle(io.BytesIO(ours)).modules

    def walk(rec, out):
        out.setdefault(rec.class_name, rec)
        for child in rec.state["_modules"].values():
            if child is not None:
                walk(child, out)
        return out

    theirs_by_class, ours_by_class = walk(theirs_rec["G_ema"], {}), walk(ours_rec["G_ema"], {})
    walk(theirs_rec["D"], theirs_by_class)
    walk(ours_rec["D"], ours_by_class)
    assert set(ours_by_class) <= set(theirs_by_class)
    for cls, rec in ours_by_class.items():
        structural = [k for k in rec.state if k.startswith("_") or k == "training"]
        theirs = [k for k in theirs_by_class[cls].state if k.startswith("_") or k == "training"]
        assert structural == theirs, cls
        for key in ("weight_gain", "act_gain"):
            if key in theirs_by_class[cls].state:
                assert type(rec.state[key]) is np.float64, (cls, key)
    assert ours_rec["G_ema"].init_kwargs.keys() == theirs_rec["G_ema"].init_kwargs.keys()


def test_blob_matches_torch_save_layout():
    """Our storage blob equals torch's own legacy torch.save stream of the storage (up to the storage key)."""
    for t in (torch.randn(3, 5), torch.randn([]), torch.arange(7), torch.randn(4).half()):
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation
            torch.save(t.storage(), buf, _use_new_zipfile_serialization=False)
        theirs = buf.getvalue()
        # the storage key (an address): a BINUNICODE string of digits (its length byte may be b"\n": DOTALL)
        key = re.search(rb"X.\x00\x00\x00(\d+)q\x02", theirs, re.DOTALL).group(1).decode()
        ours = legacy_storage_blob(t, key=key)
        assert ours == theirs
        back = torch.load(io.BytesIO(ours), weights_only=True)
        assert torch.equal(torch.tensor(back.tolist(), dtype=t.dtype).reshape(t.shape), t)


# ---------------------------------------------------------------------------------------------------------------
# (e) tiny G/D round trips, bit-identical tensors and identical outputs


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tiny_round_trip(nets, tmp_path, kind):
    G, D, G_ema = nets[kind]
    tsk = {"class_name": "training.dataset.ImageFolderDataset", "path": "/data/x.zip", "use_labels": G.c_dim > 0,
           "max_size": 10, "xflip": False, "resolution": G.img_resolution}
    path = write_official_pickle(tmp_path / f"{kind}.pkl", G=G, D=D, G_ema=G_ema, training_set_kwargs=tsk)
    bundle = load_networks(path)
    assert bundle.source_format == "official-pickle"
    assert bundle.extra["training_set_kwargs"] == tsk
    for key, src in (("G", G), ("D", D), ("G_ema", G_ema)):
        assert_bit_identical(src, bundle.networks[key])

    gen = torch.Generator().manual_seed(1)
    z = torch.randn([2, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1]), G.c_dim).float() if G.c_dim else torch.zeros([2, 0])
    with torch.no_grad():
        for key, src, psi in (("G", G, 1.0), ("G_ema", G_ema, 0.7)):
            a = src(z, c, truncation_psi=psi, noise_mode="const", update_w_avg=False)
            b = bundle.networks[key](z, c, truncation_psi=psi, noise_mode="const", update_w_avg=False)
            assert torch.equal(a, b), (key, psi)
        assert torch.equal(D(a, c), bundle.networks["D"](a, c))
    assert load_network(path).config == G_ema.config


def test_generator_only_and_g_fallback(nets, tmp_path):
    """A pickle with only G (no G_ema): load_network falls back to G; asking for D is a format error."""
    G = nets["skip16"][0]
    path = write_official_pickle(tmp_path / "g_only.pkl", G=G)
    assert_bit_identical(G, load_network(path))
    with pytest.raises(NetworkFormatError) as info:
        load_network(path, which="D")
    assert "'D'" in _one_line(info.value)


def test_writer_is_deterministic(nets):
    G, D, G_ema = nets["skip16"]
    a = official_pickle_bytes({"G": G, "D": D, "G_ema": G_ema})
    b = official_pickle_bytes({"G": G, "D": D, "G_ema": G_ema})
    assert a == b and a[:2] == b"\x80\x03"  # default: protocol 3, as the documented Python 3.7 writer


# ---------------------------------------------------------------------------------------------------------------
# (f) Reader bugs found by these tests and by fuzz/fuzz_pickle_reader.py (details in fuzz/README.md), now fixed:
# these tests keep them fixed.



def _edit_state(class_name, edit):
    def hook(module, state):
        if type(module).__name__ == class_name:
            edit(state)
    return hook


def _set_kwarg(group, key, value):
    def edit(state):
        target = state["_init_kwargs"] if group is None else state["_init_kwargs"][group]
        target[key] = value
    return edit


BAD_STATES = {
    "parameters_is_a_list": ("MappingNetwork", lambda s: s.__setitem__("_parameters", [1, 2])),
    "tensor_name_is_an_int": ("MappingNetwork", lambda s: s["_buffers"].__setitem__(7, torch.zeros(2))),
    "child_name_is_an_int": ("Generator", lambda s: s["_modules"].__setitem__(5, s["_modules"]["mapping"])),
    "channel_base_zero": ("Generator", _set_kwarg("synthesis_kwargs", "channel_base", 0)),
    "negative_z_dim": ("Generator", _set_kwarg(None, "z_dim", -1)),
    "init_kwargs_cycle": ("Generator", lambda s: s["_init_kwargs"].__setitem__("self", s["_init_kwargs"])),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_malformed_module_state_is_a_format_error(nets, tmp_path, case):
    class_name, edit = BAD_STATES[case]
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(official_pickle_bytes({"G_ema": nets["skip16"][2]}, state_hook=_edit_state(class_name, edit)))
    _expect_format_error(path)


@pytest.mark.parametrize("where,dtype", [("buffer", torch.int16), ("param", torch.float64), ("param", torch.int64)])
def test_non_float32_tensors_are_rejected_or_cast(nets, tmp_path, where, dtype):
    G_ema = copy.deepcopy(nets["skip16"][2])
    if where == "buffer":
        G_ema.mapping._buffers["w_avg"] = G_ema.mapping.w_avg.to(dtype)
    else:
        G_ema.mapping.fc0._parameters["weight"] = torch.nn.Parameter(G_ema.mapping.fc0.weight.to(dtype),
                                                                     requires_grad=False)
    path = write_official_pickle(tmp_path / "dtype.pkl", G_ema=G_ema)
    try:
        net = load_network(path)
    except NetworkFormatError as e:
        _one_line(e)
        return
    assert all(t.dtype == torch.float32 for t in _tensors(net).values())


@pytest.mark.parametrize("case", ["mixed_set", "cycle"])
def test_odd_training_set_kwargs_are_a_format_error_or_load(nets, tmp_path, case):
    if case == "mixed_set":
        tsk = {"labels": {1, "a"}}
    else:
        tsk = {}
        tsk["self"] = tsk
    path = write_official_pickle(tmp_path / "tsk.pkl", G_ema=nets["skip16"][2], training_set_kwargs=tsk)
    try:
        load_networks(path)
    except NetworkFormatError as e:
        _one_line(e)


def test_wrapped_error_message_is_one_line(tmp_path):
    path = tmp_path / "float.pkl"
    path.write_bytes(b"\x80\x03F1e999\n.")  # protocol-0 FLOAT that overflows: the error quotes '1e999\n'
    _expect_format_error(path)


def test_build_cannot_modify_the_allow_listed_stand_ins(tmp_path):
    from styleforge.networks import official

    fn = official.ALLOWED_GLOBALS[("torch._utils", "_rebuild_tensor_v2")]
    easydict = official.ALLOWED_GLOBALS[("dnnlib.util", "EasyDict")]
    saved = fn.__defaults__
    path = tmp_path / "poison.pkl"
    path.write_bytes(
        b"\x80\x03ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__(K\x01K\x02ts\x86b0"
        b"cdnnlib.util\nEasyDict\nN}X\x0b\x00\x00\x00__getattr__cbuiltins\nset\ns\x86b0}."
    )  # BUILD with slot state (None, {attr: value}) is setattr(stand_in, attr, value)
    try:
        _expect_format_error(path)
        assert fn.__defaults__ == saved and "__getattr__" not in vars(easydict)
    finally:  # undo the poisoning for the rest of the test session
        fn.__defaults__ = saved
        if "__getattr__" in vars(easydict):
            delattr(easydict, "__getattr__")


def test_build_cannot_grow_a_tensor_past_its_blob():
    from styleforge.networks.official import RestrictedUnpickler

    blob = legacy_storage_blob(torch.zeros(1, dtype=torch.bfloat16))
    n = 1000
    data = (
        b"\x80\x03}X\x05\x00\x00\x00G_ema"
        b"ctorch._utils\n_rebuild_tensor_v2\n"
        b"(ctorch.storage\n_load_from_bytes\nB" + struct.pack("<I", len(blob)) + blob + b"\x85Rq\x02"
        b"K\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR"  # the 1-element tensor
        b"(h\x02K\x00M" + struct.pack("<H", n) + b"\x85K\x01\x85tb"  # BUILD (storage, 0, (n,), (1,))
        b"s."
    )
    try:
        t = RestrictedUnpickler(io.BytesIO(data)).load()["G_ema"]
    except NetworkFormatError:
        return
    assert t.numel() <= 1, f"a 1-element blob became a {t.numel()}-element tensor"


@pytest.mark.parametrize("view_min", [1, None])
def test_blob_views_of_the_file_are_never_kept(tiny_pickle, tmp_path, monkeypatch, view_min):
    """Large tensor blobs are read as views of the memory-mapped file (view_min=1 makes every BINBYTES payload
    one). Truncated files still give clean errors, the bytes read from a file and from memory agree, and the
    loaded networks own their tensors: overwriting the file afterwards changes nothing, and they are writable."""
    from styleforge.networks import official

    if view_min is not None:
        monkeypatch.setattr(official, "VIEW_MIN_BYTES", view_min)
    path = tmp_path / "views.pkl"
    n = len(tiny_pickle)
    for cut in (n // 5, n // 2, n - 40, n - 1):
        path.write_bytes(tiny_pickle[:cut])
        _expect_format_error(path)
    path.write_bytes(tiny_pickle)
    with open(path, "rb") as f:
        from_file = read_official_pickle(f).modules["G_ema"].named_tensors()
    from_memory = read_official_pickle(io.BytesIO(tiny_pickle)).modules["G_ema"].named_tensors()
    assert from_file.keys() == from_memory.keys()
    assert all(torch.equal(from_file[k], from_memory[k]) for k in from_file)
    for t in list(from_file.values()) + list(from_memory.values()):
        t.add_(1)  # writable (copy-on-write pages of the mapping): never the file, never a crash
    assert path.read_bytes() == tiny_pickle
    del from_file
    bundle = load_networks(path)
    before = {key: {k: t.clone() for k, t in _tensors(net).items()} for key, net in bundle.networks.items()}
    with open(path, "r+b") as f:  # overwrite in place: a tensor still viewing the mapping would change too
        f.write(bytes(n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for key, net in bundle.networks.items():
            for k, t in _tensors(net).items():
                assert torch.equal(t, before[key][k]), (key, k)
                with torch.no_grad():
                    t.add_(1)  # writable memory of the network's own


def test_a_large_bytes_value_shared_by_many_settings_is_refused(nets, tmp_path):
    """A >= 64 KiB bytes value arrives as a view of the file; settings referring to it many times must not
    turn into many copies (a 2 MB file could otherwise ask for tens of GB): it is refused with one line."""
    G, D, G_ema = nets["skip16"]
    path = write_official_pickle(tmp_path / "shared.pkl", G=G, D=D, G_ema=G_ema,
                                 training_set_kwargs={"class_name": "x", "blob": [bytes(70000)] * 300})
    assert path.stat().st_size < 2_000_000
    err = _expect_format_error(path)
    assert "binary value" in str(err)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_a_failed_load_unmaps_the_file(tiny_pickle, tmp_path, monkeypatch):
    """After an error the file is no longer mapped (on Windows a mapped file could not be replaced by a fresh
    download in the same process)."""
    from styleforge.networks import official

    monkeypatch.setattr(official, "VIEW_MIN_BYTES", 1)  # every BINBYTES payload a view of the mapping
    path = tmp_path / "unmapped.pkl"
    path.write_bytes(tiny_pickle[: len(tiny_pickle) - 40])
    _expect_format_error(path)
    assert str(path) not in Path("/proc/self/maps").read_text()
