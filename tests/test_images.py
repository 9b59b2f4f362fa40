"""styleforge.images: the three official float -> uint8 conversions (different on purpose), grids, the one image
reader (EXIF orientation, 16-bit / 32-bit / float scaled to 8 bits), image extensions and folder listing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.images import (
    find_images, high_depth_to_8bit, image_extensions, make_grid, read_image, to_image_range, uint8_as_generate,
    uint8_as_projector, uint8_as_training, unique_keys,
)


def _nchw(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_the_three_conversions_differ_exactly_as_documented():
    # x = 0: generate adds 128 (128), the projector truncates 127.5 (127), training rounds 127.5 to even (128)
    # x = -0.004: (x + 1) * 127.5 = 126.99: projector 126, training 127; generate 127.49 -> 127
    x = _nchw([0.0, -0.004, 0.002, -1.0, 1.0, -1.5, 1.5])
    assert uint8_as_generate(x)[0, 0, :, 0].tolist() == [128, 127, 128, 0, 255, 0, 255]
    assert uint8_as_projector(x)[0, 0, :, 0].tolist() == [127, 126, 127, 0, 255, 0, 255]
    assert uint8_as_training(x)[0, 0, :, 0].tolist() == [128, 127, 128, 0, 255, 0, 255]


def test_conversions_follow_their_formulas_on_random_images():
    x = torch.randn(2, 3, 5, 7) * 0.8
    a = x.permute(0, 2, 3, 1).numpy()
    for got, want in (
        (uint8_as_generate(x), np.clip(a * np.float32(127.5) + np.float32(128), 0, 255)),     # truncated
        (uint8_as_projector(x), np.clip((a + np.float32(1)) * np.float32(255 / 2), 0, 255)),   # truncated
        (uint8_as_training(x), np.clip(np.round((a + np.float32(1)) * np.float32(127.5)), 0, 255)),  # rounded
    ):
        assert got.shape == (2, 5, 7, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want.astype(np.uint8))
    assert torch.equal(to_image_range(x), (x + 1) * (255 / 2))


def test_make_grid_tiles_row_major():
    tiles = [np.full((2, 3, 1), v, np.uint8) for v in range(5)]
    g = make_grid(tiles)  # 5 images: 3 columns, 2 rows, the last cells black
    assert g.shape == (4, 9, 1) and g[0, 3, 0] == 1 and g[2, 0, 0] == 3 and g[2, 6, 0] == 0
    assert make_grid(tiles, cols=5, pad=1).shape == (2, 19, 1)
    with pytest.raises(ValueError):
        make_grid([])


def test_read_image_applies_exif_orientation(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :15] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    up = np.asarray(read_image(tmp_path / "phone.jpg"))
    assert up.shape == (30, 20, 3) and up[:10].mean() > 200 and up[20:].mean() < 50  # the white half on top
    raw = read_image(tmp_path / "phone.jpg", exif=False)
    assert raw.size == (30, 20)
    with open(tmp_path / "phone.jpg", "rb") as f:  # a file object; the pixels outlive the closed file
        im = read_image(io.BytesIO(f.read()), "L")
    assert im.mode == "L" and im.size == (20, 30) and np.asarray(im).shape == (30, 20)


def test_read_image_scales_high_depth_instead_of_clipping(tmp_path):
    a16 = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(a16).save(tmp_path / "deep.png")
    im = read_image(tmp_path / "deep.png")
    assert im.mode == "L" and np.asarray(im).tolist() == [[0, 1, 128, 255]]  # 16-bit: x / 257
    i32 = Image.fromarray(np.array([[0, 100, 255]], np.int32), "I")
    assert np.asarray(high_depth_to_8bit(i32)).tolist() == [[0, 100, 255]]  # 32-bit within 8 bits: kept
    big = Image.fromarray(np.array([[0, 70000, 140000]], np.int32), "I")
    assert np.asarray(high_depth_to_8bit(big)).tolist() == [[0, 128, 255]]  # above 16 bits: to its maximum
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(high_depth_to_8bit(unit)).tolist() == [[0, 128, 255]]  # float in [0, 1]: times 255
    byte = Image.fromarray(np.array([[0.0, 100.4, 200.0]], np.float32), "F")
    assert np.asarray(high_depth_to_8bit(byte)).tolist() == [[0, 100, 200]]  # float within 8 bits: rounded
    wide = Image.fromarray(np.array([[0.0, 32896.0, 65535.0]], np.float32), "F")
    assert np.asarray(high_depth_to_8bit(wide)).tolist() == [[0, 128, 255]]  # float above 255: as 16-bit values
    rgb = read_image(tmp_path / "deep.png", "RGB")
    assert rgb.mode == "RGB" and np.asarray(rgb)[0, 3].tolist() == [255, 255, 255]


def test_image_extensions_are_what_pillow_decodes():
    exts = image_extensions()
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"} <= exts
    assert ".h5" not in exts and ".grib" not in exts  # Pillow only identifies these (stub plugins)
    assert ".txt" not in exts and ".json" not in exts


def test_find_images_lists_a_folder_sorted_and_skips_hidden_and_output(tmp_path):
    src = tmp_path / "in"
    for rel in ("z.png", "a.jpg", "sub/b.png", "sub/deeper/c.webp", ".hidden.png", ".cache/d.png", "out/e.png",
                "notes.txt", "sub/readme.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"x")
    found, others = find_images(src, exclude=src / "out")
    assert [k for _, k in found] == ["a", "sub/b", "sub/deeper/c", "z"] and others == 2
    assert found[1][0] == src / "sub" / "b.png"
    found, _ = find_images(src)
    assert "out/e" in [k for _, k in found]


def test_unique_keys_append_the_extension_only_on_a_clash(tmp_path):
    items = [(tmp_path / "a.png", "a"), (tmp_path / "a.JPG", "a"), (tmp_path / "b.png", "b")]
    assert [k for _, k in unique_keys(items)] == ["a_png", "a_jpg", "b"]
