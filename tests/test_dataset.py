"""Tests for dataset conversion (scripts/dataset_tool.py, styleforge.train.dataset_tool) and reading (styleforge.data)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import pickle
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import cli_message
from styleforge.commands.dataset import dataset_tool_cmd
from styleforge.data.dataset import ImageDataset
from styleforge.data.files import archive_name
from styleforge.errors import StyleforgeError
from styleforge.train.dataset_tool import convert_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "dataset_tool.py"


# ---------------------------------------------------------------------------------------------------------------------
# Real image content.


@functools.lru_cache(maxsize=None)
def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()  # 512x512x3 uint8


@functools.lru_cache(maxsize=None)
def _faces() -> np.ndarray:
    import skimage.data

    return (skimage.data.lfw_subset() * 255).round().astype(np.uint8)  # 200x25x25 grayscale


@functools.lru_cache(maxsize=None)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images * 15).astype(np.uint8)  # Nx8x8, values 0..240


def rgb_tile(i: int, h: int = 32, w: int = None) -> np.ndarray:
    w = w or h
    a = _astronaut()
    y, x = (37 * i) % (512 - h), (91 * i) % (512 - w)
    return np.ascontiguousarray(a[y:y + h, x:x + w])


def save(arr: np.ndarray, path: Path, fmt: str = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(arr).save(path, format=fmt)
    return path


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(data)))


def make_class_folder(root: Path, counts=(("b_dog", 2), ("a_cat", 3), ("c_bird", 1)), size: int = 32):
    """Class subfolders with PNGs; returns the source arrays in sorted (class, file) order."""
    out = {}
    k = 0
    for cls, n in counts:
        for j in range(n):
            arr = rgb_tile(k, size)
            save(arr, root / cls / f"{j:02d}.png")
            out[f"{cls}/{j:02d}.png"] = arr
            k += 1
    return [out[name] for name in sorted(out)]


def zip_entries(path: Path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: (i.compress_type, zf.read(i.filename)) for i in zf.infolist()}


def leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------------------------------
# Conversion.


def test_archive_names_follow_official_layout():
    assert archive_name(0) == "00000/img00000000.png"
    assert archive_name(49999) == "00049/img00049999.png"
    assert archive_name(123456) == "00123/img00123456.png"


def test_class_folders_to_zip(tmp_path):
    src = tmp_path / "src"
    expected = make_class_folder(src)
    dest = tmp_path / "out.zip"
    res = convert_dataset(src, dest)

    assert (res.num_images, res.num_found, res.num_skipped) == (6, 6, 0)
    assert (res.resolution, res.num_channels) == (32, 3)
    assert res.label_source == "folders" and res.class_names == ["a_cat", "b_dog", "c_bird"] and res.label_dim == 3
    assert res.dest == dest and not res.warnings

    entries = zip_entries(dest)
    names = [archive_name(i) for i in range(6)]
    assert sorted(entries) == names + ["dataset.json"]
    assert all(ct == zipfile.ZIP_STORED for ct, _ in entries.values())
    labels = json.loads(entries["dataset.json"][1])
    assert labels == {"labels": [[n, c] for n, c in zip(names, [0, 0, 0, 1, 1, 2])]}
    for name, arr in zip(names, expected):
        data = entries[name][1]
        assert len(data) > arr.size  # stored without zlib compression
        np.testing.assert_array_equal(read_png(data), arr)
    assert leftovers(tmp_path) == []


def test_image_dataset_reads_zip_and_folder(tmp_path):
    src = tmp_path / "src"
    expected = make_class_folder(src)
    convert_dataset(src, tmp_path / "d.zip")
    convert_dataset(src, tmp_path / "d")
    assert (tmp_path / "d" / "00000" / "img00000005.png").is_file()
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["labels"][5] == ["00000/img00000005.png", 2]

    zds, fds = ImageDataset(tmp_path / "d.zip"), ImageDataset(tmp_path / "d")
    for ds in (zds, fds):
        assert len(ds) == 6 and ds.image_shape == [3, 32, 32]
        assert (ds.resolution, ds.num_channels, ds.label_dim) == (32, 3, 3)
        assert ds.has_labels and ds.has_onehot_labels and ds.name == "d"
        img, label = ds[4]
        assert img.dtype == np.uint8 and img.shape == (3, 32, 32)
        np.testing.assert_array_equal(img, expected[4].transpose(2, 0, 1))
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, [0, 1, 0])
    for i in range(6):
        np.testing.assert_array_equal(zds[i][0], fds[i][0])

    flipped = ImageDataset(tmp_path / "d.zip", xflip=True, resolution=32)
    assert len(flipped) == 12
    for i in range(6):
        np.testing.assert_array_equal(flipped[i][0], zds[i][0])
        np.testing.assert_array_equal(flipped[6 + i][0], zds[i][0][:, :, ::-1])
        np.testing.assert_array_equal(flipped[6 + i][1], zds[i][1])
    assert flipped[-1][0].flags["C_CONTIGUOUS"]

    nolab = ImageDataset(tmp_path / "d.zip", use_labels=False)
    assert not nolab.has_labels and nolab.label_dim == 0 and nolab[0][1].shape == (0,)

    sub1 = ImageDataset(tmp_path / "d.zip", max_size=4, random_seed=3)
    sub2 = ImageDataset(tmp_path / "d.zip", max_size=4, random_seed=3, xflip=True)
    assert len(sub1) == 4 and len(sub2) == 8
    picked = [int(x) for x in sub1._raw_idx]
    assert picked == sorted(picked) and picked == [int(x) for x in sub2._raw_idx[:4]]
    for i in range(4):
        np.testing.assert_array_equal(sub1[i][0], zds[picked[i]][0])


def test_image_dataset_pickles_and_works_with_dataloader_workers(tmp_path):
    import torch

    src = tmp_path / "src"
    make_class_folder(src)
    convert_dataset(src, tmp_path / "d.zip")
    ds = ImageDataset(tmp_path / "d.zip", xflip=True)
    first = ds[0][0]  # opens the zip in this process
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][0], first)

    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (12, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (12, 3) and labels.dtype == torch.float32
    assert labels.sum(1).eq(1).all()
    np.testing.assert_array_equal(images[7].numpy(), ds[7][0])


def test_image_dataset_folder_labels(tmp_path):
    src = tmp_path / "raw"
    make_class_folder(src)
    assert not ImageDataset(src).has_labels
    ds = ImageDataset(src, folder_labels=True)
    assert ds.label_dim == 3 and [int(np.argmax(ds[i][1])) for i in range(6)] == [0, 0, 0, 1, 1, 2]


def _wide_image() -> np.ndarray:
    """64 wide x 32 tall: red band, 32x32 astronaut, blue band."""
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16] = (255, 0, 0)
    img[:, 16:48] = rgb_tile(5, 32)
    img[:, 48:] = (0, 0, 255)
    return img


def test_center_crop(tmp_path):
    wide = _wide_image()
    save(wide, tmp_path / "src" / "wide.png")
    res = convert_dataset(tmp_path / "src", tmp_path / "full.zip", transform="center-crop")
    assert res.resolution == 32
    np.testing.assert_array_equal(read_png(zip_entries(tmp_path / "full.zip")[archive_name(0)][1]), wide[:, 16:48])

    convert_dataset(tmp_path / "src", tmp_path / "small.zip", resolution=16, transform="center-crop")
    small = read_png(zip_entries(tmp_path / "small.zip")[archive_name(0)][1]).astype(int)
    ref = np.asarray(PIL.Image.fromarray(wide[:, 16:48]).resize((16, 16), PIL.Image.LANCZOS)).astype(int)
    assert small.shape == (16, 16, 3) and np.abs(small - ref).mean() < 2


def test_center_crop_wide(tmp_path):
    wide = _wide_image()  # 64x32
    tall = rgb_tile(7, 128, 64)  # 64 wide x 128 tall
    save(wide, tmp_path / "src" / "a_wide.png")
    save(tall, tmp_path / "src" / "b_tall.png")
    res = convert_dataset(tmp_path / "src", tmp_path / "out", resolution=64, transform="center-crop-wide")
    assert res.num_images == 2 and res.resolution == 64
    a = np.asarray(PIL.Image.open(tmp_path / "out" / archive_name(0)))
    b = np.asarray(PIL.Image.open(tmp_path / "out" / archive_name(1)))
    assert a.shape == b.shape == (64, 64, 3)
    assert not a[:16].any() and not a[48:].any()  # black bars
    np.testing.assert_array_equal(a[16:48], wide)  # full width kept
    np.testing.assert_array_equal(b, tall[32:96])  # taller than wide: centred square


def test_grayscale_auto_forced_and_mixed(tmp_path):
    faces = _faces()
    for i in range(4):
        save(faces[i], tmp_path / "gray" / f"face{i}.png")
    res = convert_dataset(tmp_path / "gray", tmp_path / "g25.zip")
    assert (res.num_channels, res.resolution) == (1, 25)
    warnings = [cli_message(w, dataset_tool_cmd) for w in res.warnings]
    assert any("not a power of two" in w and "--resolution 16 or 32" in w for w in warnings)
    with pytest.raises(StyleforgeError, match="power-of-two"):
        ImageDataset(tmp_path / "g25.zip")
    img0 = read_png(zip_entries(tmp_path / "g25.zip")[archive_name(0)][1])
    assert img0.ndim == 2
    np.testing.assert_array_equal(img0, faces[0])

    convert_dataset(tmp_path / "gray", tmp_path / "g32.zip", resolution=32)
    ds = ImageDataset(tmp_path / "g32.zip")
    assert ds.image_shape == [1, 32, 32] and ds[0][0].shape == (1, 32, 32) and not ds.has_labels

    rgb = convert_dataset(tmp_path / "gray", tmp_path / "rgb.zip", grayscale=False)
    assert rgb.num_channels == 3 and read_png(zip_entries(tmp_path / "rgb.zip")[archive_name(0)][1]).shape == (25, 25, 3)

    save(rgb_tile(1, 32), tmp_path / "color" / "c.png")
    forced = convert_dataset(tmp_path / "color", tmp_path / "forced.zip", grayscale=True)
    assert forced.num_channels == 1
    np.testing.assert_array_equal(read_png(zip_entries(tmp_path / "forced.zip")[archive_name(0)][1]),
                                  np.asarray(PIL.Image.fromarray(rgb_tile(1, 32)).convert("L")))

    save(faces[5], tmp_path / "mixed" / "a_gray.png")
    save(rgb_tile(2, 25), tmp_path / "mixed" / "b_rgb.png")
    mixed = convert_dataset(tmp_path / "mixed", tmp_path / "mixed.zip", resolution=32)
    assert mixed.num_channels == 3
    g = ImageDataset(tmp_path / "mixed.zip")[0][0]
    assert g.shape == (3, 32, 32) and (g[0] == g[1]).all() and (g[1] == g[2]).all()


def test_digits_box_filter_upscale(tmp_path):
    digits = _digits()
    for i in range(3):
        save(digits[i], tmp_path / "digits" / f"{i}.png")
    res = convert_dataset(tmp_path / "digits", tmp_path / "d.zip", resolution=16, resize_filter="box")
    assert (res.num_channels, res.resolution) == (1, 16)
    ds = ImageDataset(tmp_path / "d.zip")
    for i in range(3):
        np.testing.assert_array_equal(ds[i][0][0], np.kron(digits[i], np.ones((2, 2), np.uint8)))


def test_mixed_sizes_error_and_resolution_fix(tmp_path):
    save(rgb_tile(0, 32), tmp_path / "src" / "big.png")
    save(rgb_tile(1, 16), tmp_path / "src" / "small.png")
    with pytest.raises(StyleforgeError) as e:
        convert_dataset(tmp_path / "src", tmp_path / "out.zip")
    msg = cli_message(e.value, dataset_tool_cmd)
    assert "different sizes" in msg and "32x32" in msg and "16x16" in msg and "--resolution" in msg
    assert "\n" not in msg
    assert not (tmp_path / "out.zip").exists() and leftovers(tmp_path) == []

    res = convert_dataset(tmp_path / "src", tmp_path / "out.zip", resolution=16)
    assert res.num_images == 2 and ImageDataset(tmp_path / "out.zip").resolution == 16


def test_non_square_without_transform_is_an_error(tmp_path):
    save(_wide_image(), tmp_path / "src" / "wide.png")
    with pytest.raises(StyleforgeError) as e:
        convert_dataset(tmp_path / "src", tmp_path / "out.zip", resolution=32)
    assert re.search(r"64x32, not square; pass --transform center-crop", cli_message(e.value, dataset_tool_cmd))


def test_no_images_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StyleforgeError, match="no image files found"):
        convert_dataset(tmp_path / "empty", tmp_path / "out.zip")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(StyleforgeError, match="no image files found"):
        convert_dataset(tmp_path / "notes", tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(StyleforgeError, match="no image files found"):
        convert_dataset(tmp_path / "empty.zip", tmp_path / "out.zip")
    with pytest.raises(StyleforgeError, match="no images in this dataset"):
        ImageDataset(tmp_path / "empty")
    assert not (tmp_path / "out.zip").exists()


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(rgb_tile(i, 32), src / f"good{i}.png")
    (src / "bad.png").write_bytes(b"this is not a png at all")
    good = io.BytesIO()
    PIL.Image.fromarray(rgb_tile(9, 32)).save(good, format="PNG")
    (src / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (src / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")

    res = convert_dataset(src, tmp_path / "out.zip")
    assert (res.num_found, res.num_images, res.num_skipped) == (6, 3, 3)
    assert {name for name, _ in res.skipped} == {"bad.png", "truncated.png", "fake.jpg"}
    msg = res.skipped_message()
    assert msg.startswith("skipped 3 unreadable image file(s)") and "truncated.png" in msg and "\n" not in msg
    assert len(ImageDataset(tmp_path / "out.zip")) == 3
    assert res.skipped_message(limit=1).endswith("and 2 more")

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"junk")
    with pytest.raises(StyleforgeError, match="could be read"):
        convert_dataset(only_bad, tmp_path / "none.zip")


def test_source_dataset_json_takes_precedence_and_zip_source(tmp_path):
    src = tmp_path / "src"
    make_class_folder(src, counts=(("a", 2), ("b", 2)))
    labels = [["a/00.png", 7], ["a/01.png", 1], ["b/00.png", 3], ["b/01.png", 0]]
    (src / "dataset.json").write_text(json.dumps({"labels": labels}))
    res = convert_dataset(src, tmp_path / "one.zip")
    assert res.label_source == "dataset.json" and res.label_dim == 8 and res.class_names is None
    got = json.loads(zip_entries(tmp_path / "one.zip")["dataset.json"][1])["labels"]
    assert [v for _, v in got] == [7, 1, 3, 0]

    # A converted zip is itself a valid source; its labels and pixels carry over.
    res2 = convert_dataset(tmp_path / "one.zip", tmp_path / "two.zip", max_images=3)
    assert res2.num_images == 3 and res2.num_found == 4
    e1, e2 = zip_entries(tmp_path / "one.zip"), zip_entries(tmp_path / "two.zip")
    assert [v for _, v in json.loads(e2["dataset.json"][1])["labels"]] == [7, 1, 3]
    for i in range(3):
        np.testing.assert_array_equal(read_png(e2[archive_name(i)][1]), read_png(e1[archive_name(i)][1]))

    vec = [["a/00.png", [0.5, 1.0]], ["a/01.png", [1.5, 2.0]], ["b/00.png", [0, 0]], ["b/01.png", [1, -1]]]
    (src / "dataset.json").write_text(json.dumps({"labels": vec}))
    convert_dataset(src, tmp_path / "vec.zip")
    ds = ImageDataset(tmp_path / "vec.zip")
    assert ds.label_dim == 2 and not ds.has_onehot_labels
    np.testing.assert_array_equal(ds[1][1], np.array([1.5, 2.0], np.float32))

    (src / "dataset.json").write_text(json.dumps({"labels": labels[:3]}))
    res3 = convert_dataset(src, tmp_path / "partial.zip")
    assert res3.label_source is None and any("no label for 1 image" in str(w) for w in res3.warnings)
    assert json.loads(zip_entries(tmp_path / "partial.zip")["dataset.json"][1]) == {"labels": None}


def test_single_folder_does_not_become_a_label(tmp_path):
    for i in range(2):
        save(rgb_tile(i, 32), tmp_path / "src" / "images" / f"{i}.png")
    res = convert_dataset(tmp_path / "src", tmp_path / "out.zip")
    assert res.label_source is None and res.label_dim == 0


def test_dest_checks(tmp_path):
    src = tmp_path / "src"
    make_class_folder(src)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(StyleforgeError, match="not empty"):
        convert_dataset(src, tmp_path / "full")
    with pytest.raises(StyleforgeError) as e:
        convert_dataset(src, src / "out.zip")
    assert re.search("inside --source", cli_message(e.value, dataset_tool_cmd))
    (tmp_path / "empty_dest").mkdir()
    assert convert_dataset(src, tmp_path / "empty_dest").num_images == 6
    with pytest.raises(StyleforgeError, match="unknown transform"):
        convert_dataset(src, tmp_path / "x.zip", transform="zoom")
    with pytest.raises(StyleforgeError, match="no such file or folder"):
        convert_dataset(tmp_path / "missing", tmp_path / "x.zip")


def test_image_dataset_rejects_bad_folders(tmp_path):
    save(rgb_tile(0, 16, 32), tmp_path / "nonsquare" / "a.png")
    with pytest.raises(StyleforgeError, match="not square"):
        ImageDataset(tmp_path / "nonsquare")
    save(rgb_tile(0, 32), tmp_path / "mixed" / "a.png")
    save(rgb_tile(1, 16), tmp_path / "mixed" / "b.png")
    with pytest.raises(StyleforgeError, match="different sizes"):
        ImageDataset(tmp_path / "mixed")
    save(rgb_tile(0, 32), tmp_path / "chan" / "a.png")
    save(np.pad(_faces()[0], ((0, 7), (0, 7))), tmp_path / "chan" / "b.png")
    with pytest.raises(StyleforgeError, match="different channel counts"):
        ImageDataset(tmp_path / "chan")
    save(rgb_tile(0, 24), tmp_path / "npot" / "a.png")
    with pytest.raises(StyleforgeError, match="power-of-two"):
        ImageDataset(tmp_path / "npot")
    save(rgb_tile(0, 32), tmp_path / "ok" / "a.png")
    with pytest.raises(StyleforgeError, match="not the requested 64x64"):
        ImageDataset(tmp_path / "ok", resolution=64)
    (tmp_path / "not_a_zip.zip").write_bytes(b"nope")
    with pytest.raises(StyleforgeError, match="not a folder or a zip"):
        ImageDataset(tmp_path / "not_a_zip.zip")


# ---------------------------------------------------------------------------------------------------------------------
# The command-line tool.


@functools.lru_cache(maxsize=None)
def _cli():
    spec = importlib.util.spec_from_file_location("dataset_tool_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dataset_tool_cmd


def test_cli_success_and_report(tmp_path):
    from click.testing import CliRunner

    src = tmp_path / "src"
    make_class_folder(src)
    (src / "a_cat" / "zz_broken.png").write_bytes(b"broken")
    dest = tmp_path / "out.zip"
    r = CliRunner().invoke(_cli(), ["--source", str(src), "--dest", str(dest), "--resolution", "16",
                                    "--resize-filter", "box", "--max-images", "5"])
    assert r.exit_code == 0, r.output
    # --max-images counts readable images: the broken file is skipped, not counted.
    assert f"wrote 5 image(s), 16x16 RGB, 3 classes from folders (a_cat, b_dog, c_bird), to {dest}" in r.stdout
    assert "found 7 image file(s): 5 written, 1 skipped, 1 not used (--max-images)" in r.stdout
    assert "warning: skipped 1 unreadable image file(s): a_cat/zz_broken.png" in r.stderr
    assert ImageDataset(dest).image_shape == [3, 16, 16]

    r = CliRunner().invoke(_cli(), ["--source", str(src), "--dest", str(tmp_path / "g"), "--grayscale"])
    assert r.exit_code == 0 and "32x32 grayscale" in r.stdout
    assert ImageDataset(tmp_path / "g").num_channels == 1


def test_cli_user_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    save(rgb_tile(0, 32), tmp_path / "src" / "a.png")
    save(rgb_tile(1, 16), tmp_path / "src" / "b.png")
    r = CliRunner().invoke(_cli(), ["--source", str(tmp_path / "src"), "--dest", str(tmp_path / "o.zip")])
    assert r.exit_code == 1
    lines = [line for line in r.stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]  # other lines are the (cleared) progress bar
    assert errors == [lines[-1]] and lines[-1].startswith("error: ") and "different sizes" in lines[-1]
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)

    r = CliRunner().invoke(_cli(), ["--source", str(tmp_path / "src"), "--dest", "o.zip", "--transform", "zoom"])
    assert r.exit_code == 2 and "center-crop" in r.output


def test_script_runs_as_a_subprocess(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--source", str(tmp_path / "missing"), "--dest",
                        str(tmp_path / "o.zip")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: {tmp_path / 'missing'}: no such file or folder; check --source"
    assert p.stdout == ""


def test_pil_fallback_matches_pyspng(tmp_path, monkeypatch):
    import styleforge.data.dataset as dsmod

    src = tmp_path / "src"
    make_class_folder(src)
    convert_dataset(src, tmp_path / "d.zip")
    fast = [ImageDataset(tmp_path / "d.zip")[i][0] for i in range(6)]
    monkeypatch.setattr(dsmod, "pyspng", None)
    slow = [ImageDataset(tmp_path / "d.zip")[i][0] for i in range(6)]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that announces ``width`` x ``height`` (grayscale) but holds no pixel data: enough for a header scan."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_cli_refuses_absurd_or_untrainable_resolutions_up_front(tmp_path):
    from click.testing import CliRunner

    save(rgb_tile(0, 32), tmp_path / "src" / "a.png")
    dest = tmp_path / "o.zip"
    for value, needle in (("100", "not a power of two, which training needs; use 64 or 128"),
                          ("2", "smaller than 4, "),
                          ("100000", "larger than 8192, "),
                          ("16384", "larger than 8192, ")):
        r = CliRunner().invoke(_cli(), ["--source", str(tmp_path / "src"), "--dest", str(dest), "--resolution", value])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert r.stderr.startswith(f"error: --resolution: {value} is {needle}"), r.stderr
        assert r.stderr.count("\n") == 1  # refused before the scan's progress bar
        assert not dest.exists() and leftovers(tmp_path) == []
    # images larger than the bound, kept at their size: refused after the header scan, before any writing
    _png_header_only(tmp_path / "huge" / "a.png", 9000, 9000)
    r = CliRunner().invoke(_cli(), ["--source", str(tmp_path / "huge"), "--dest", str(dest)])
    assert r.exit_code == 1 and "images are 9000x9000, larger than the 8192x8192" in r.stderr.splitlines()[-1]
    assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("sig,kind", [("SIGTERM", "zip"), ("SIGTERM", "folder"), ("SIGINT", "zip")])
def test_signal_mid_run_removes_the_temp_output(tmp_path, sig, kind):
    """A real dataset_tool process, signalled while it writes: its last source image is a FIFO that the test
    feeds for the scan only, so the process is certainly still converting when the signal arrives."""
    import os
    import signal
    import threading

    src = tmp_path / "src"
    for i in range(30):
        save(rgb_tile(i, 32), src / f"{i:03d}.png")
    fifo = src / "zzz.png"
    os.mkfifo(fifo)
    png = (src / "000.png").read_bytes()

    def feed_once():  # the scan opens the FIFO once; the conversion then blocks on its second open
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as f:
            f.write(png)

    feeder = threading.Thread(target=feed_once, daemon=True)
    feeder.start()
    out = tmp_path / "out"
    out.mkdir()
    dest = out / ("d.zip" if kind == "zip" else "d")
    p = subprocess.Popen([sys.executable, str(SCRIPT), "--source", str(src), "--dest", str(dest)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # until the temp output exists (hang guard: 120 s)
            if any(n.endswith(".tmp") for n in os.listdir(out)) or p.poll() is not None:
                break
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()
        p.send_signal(getattr(signal, sig))
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    name = "terminated (SIGTERM)" if sig == "SIGTERM" else "interrupted (Ctrl-C)"
    assert p.returncode == (143 if sig == "SIGTERM" else 130), err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[-1] == f"error: {name}; nothing was written to {dest}", err
    assert "Traceback" not in err and sum("error" in ln.lower() for ln in lines) == 1
    assert os.listdir(out) == []  # no hidden temp zip or folder, no partial dataset
