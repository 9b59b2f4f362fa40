"""FFHQ alignment: geometry of the pure function, the dlib detector on a real photo, the batch tool and its CLI."""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import assert_one_line_error
from styleforge.align import align_face, align_face_5, align_images, ffhq_quad, five_from_68, points_to_aligned
from styleforge.align import landmarks as lmmod
from styleforge.commands.align import align_cmd
from styleforge.commands.options import error_line
from styleforge.commands.progress import note_line
from styleforge.errors import StyleforgeError

skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the test photos")


def _dlib_ready() -> str:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return "dlib cannot be imported: pip install 'styleforge[align]'"
    try:
        lmmod.dlib_model_path()
    except StyleforgeError as e:
        return str(e)
    return ""


_DLIB_MISSING = _dlib_ready()
needs_dlib = pytest.mark.skipif(bool(_DLIB_MISSING), reason=_DLIB_MISSING or "dlib ready")

# the real face in skimage.data.astronaut() (dlib HOG box); dlib also reports a weak box at (126,335)-(215,425)
ASTRONAUT_FACE = (175, 76, 266, 167)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


@pytest.fixture(scope="module")
def detector():
    if _DLIB_MISSING:
        pytest.skip(_DLIB_MISSING)
    return lmmod.get_detector("dlib")


def run(args):
    return CliRunner().invoke(align_cmd, [str(a) for a in args])


def one_line_error(r, *needles):
    return assert_one_line_error(r, *needles, prefixes=("error:", "Error:"))


def warnings_in(output: str):
    return [ln for ln in output.splitlines() if ln.startswith("warning:")]


def notes_to(lines: list):
    """A progress callback that appends each note as the align command prints it (``warning: ...``)."""
    def callback(e):
        if e.kind == "note":
            lines.append(note_line(e, click.Context(align_cmd)))
    return callback


# ---------------------------------------------------------------------------------------------------------------------
# Geometry helpers written independently of the implementation


def expected_aligned(p, eye_l, eye_r, mouth_l, mouth_r, size):
    """Where photo point p lands: FFHQ quad geometry, computed from scratch (rotation + scale about the centre)."""
    eye_avg = (eye_l + eye_r) / 2
    e2e = eye_r - eye_l
    e2m = (mouth_l + mouth_r) / 2 - eye_avg
    xdir = e2e - np.array([-e2m[1], e2m[0]])
    xdir /= np.linalg.norm(xdir)
    half = max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))  # half the side of the crop square
    ydir = np.array([-xdir[1], xdir[0]])
    c = eye_avg + 0.1 * e2m
    d = np.asarray(p, float) - c
    u = 0.5 + d @ xdir / (2 * half)
    v = 0.5 + d @ ydir / (2 * half)
    return np.array([u * size - 0.5, v * size - 0.5])


def synthetic_landmarks(angle_deg=0.0, scale=1.0, shift=(0.0, 0.0), eye_dist=40.0, mouth_drop=44.0, mouth_w=36.0):
    """68 points of an upright symmetric face (only eyes and mouth corners matter), then rotated/scaled/shifted."""
    lm = np.zeros((68, 2))
    ring = np.array([[-6, 0], [-3, -2], [3, -2], [6, 0], [3, 2], [-3, 2]], float)
    lm[36:42] = ring + [-eye_dist / 2, 0]
    lm[42:48] = ring + [eye_dist / 2, 0]
    lm[48] = [-mouth_w / 2, mouth_drop]
    lm[54] = [mouth_w / 2, mouth_drop]
    lm[30] = [0, mouth_drop * 0.6]
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return lm @ rot.T * scale + np.asarray(shift, float)


def blob_image(h, w, red_at, blue_at, sigma):
    """Grey photo with a red blob and a blue blob (to follow two points through the alignment)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g1 = np.exp(-((xx - red_at[0]) ** 2 + (yy - red_at[1]) ** 2) / (2 * sigma ** 2))
    g2 = np.exp(-((xx - blue_at[0]) ** 2 + (yy - blue_at[1]) ** 2) / (2 * sigma ** 2))
    img = np.full((h, w, 3), 110.0)
    img[..., 0] += 140 * g1
    img[..., 2] += 140 * g2
    return np.uint8(np.clip(np.rint(img), 0, 255))


def centroid(weight):
    weight = np.clip(weight, 0, None)
    weight = np.where(weight > 0.2 * weight.max(), weight, 0)
    yy, xx = np.mgrid[0:weight.shape[0], 0:weight.shape[1]]
    return np.array([(weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()])


# ---------------------------------------------------------------------------------------------------------------------
# Pure function on synthetic landmarks


@pytest.mark.parametrize("angle,scale", [(0.0, 1.0), (30.0, 1.7), (-65.0, 0.8)])
def test_known_rotation_and_scale_give_level_eyes_at_ffhq_positions(angle, scale):
    S = 256
    lm = synthetic_landmarks(angle, scale, shift=(200, 180))
    five = five_from_68(lm)
    img = blob_image(400, 420, five[0], five[1], sigma=3.0 * scale)
    out, info = align_face(img, lm, output_size=S, transform_size=4 * S)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8

    # upright symmetric face with 2*|eye_to_eye| > 1.8*|eye_to_mouth|: the half side is 2*eye_dist, so the eyes land
    # at 3/8 and 5/8 of the width, on one horizontal line, 0.1*mouth_drop/(4*eye_dist) above the middle
    fy = 0.5 - 0.1 * 44.0 / (4 * 40.0)
    want_l = np.array([0.375 * S - 0.5, fy * S - 0.5])
    want_r = np.array([0.625 * S - 0.5, fy * S - 0.5])
    got = info["aligned_points"]
    assert np.allclose(got["eye_left"], want_l, atol=1e-6)
    assert np.allclose(got["eye_right"], want_r, atol=1e-6)
    # ...and the pixels really are there: the blobs painted at the eyes come out at those positions
    o = out.astype(float)
    assert np.allclose(centroid(o[..., 0] - o[..., 1]), want_l, atol=0.75)
    assert np.allclose(centroid(o[..., 2] - o[..., 1]), want_r, atol=0.75)


def test_rotated_copy_aligns_to_the_same_image():
    S = 128
    base = synthetic_landmarks(0, 1.0, shift=(160, 150))
    five = five_from_68(base)
    img = blob_image(320, 320, five[0], five[1], sigma=4.0)
    out0, _ = align_face(img, base, output_size=S, transform_size=4 * S)
    # rotate the photo by 90 degrees (counter-clockwise) together with its landmarks
    img90 = np.ascontiguousarray(np.rot90(img))
    lm90 = np.stack([base[:, 1], img.shape[1] - 1 - base[:, 0]], axis=1)
    out90, _ = align_face(img90, lm90, output_size=S, transform_size=4 * S)
    assert np.abs(out0.astype(int) - out90.astype(int)).mean() < 1.0


def test_five_point_path_matches_68_points_and_points_to_aligned():
    lm = synthetic_landmarks(12, 1.3, shift=(150, 140))
    img = blob_image(300, 300, (120, 120), (180, 130), 5)
    a, ia = align_face(img, lm, output_size=64, transform_size=256)
    b, ib = align_face_5(img, five_from_68(lm), output_size=64, transform_size=256)
    assert np.array_equal(a, b) and ia["quad"] == ib["quad"]
    five = five_from_68(lm)
    quad, qsize = ffhq_quad(five[0], five[1], five[3], five[4])
    for p in ([10.0, 20.0], five[2], five[3]):
        assert np.allclose(points_to_aligned([p], quad, 64)[0], expected_aligned(p, five[0], five[1], five[3], five[4], 64))
    assert qsize == pytest.approx(ia["qsize"])
    with pytest.raises(ValueError):
        align_face(img, lm[:60])
    with pytest.raises(ValueError):
        align_face(img.astype(np.float32), lm)


def test_padding_fills_the_outside_and_no_padding_leaves_it_black():
    lm = synthetic_landmarks(0, 1.5, shift=(40, 50))  # face near the top-left corner: the crop leaves the photo
    img = blob_image(200, 220, (10, 50), (70, 50), 4)
    padded, info = align_face(img, lm, output_size=64, transform_size=256)
    assert info["pad"] is not None and min(info["pad"]) > 0
    bare, info2 = align_face(img, lm, output_size=64, transform_size=256, enable_padding=False)
    assert info2["pad"] is None
    assert bare[0, 0].max() == 0 and padded[0, 0].min() > 50  # reflected/blurred content instead of black
    assert np.array_equal(info["quad"], info2["quad"])


def test_big_photo_is_shrunk_first_and_points_still_land_right():
    S = 64
    lm = synthetic_landmarks(20, 6.0, shift=(600, 560))  # crop square ~ 960 px for a 64 px output: shrink 7
    five = five_from_68(lm)
    img = blob_image(1200, 1200, five[0], five[1], sigma=14.0)
    out, info = align_face(img, lm, output_size=S, transform_size=4 * S)
    assert info["shrink"] > 1
    o = out.astype(float)
    assert np.allclose(centroid(o[..., 0] - o[..., 1]), info["aligned_points"]["eye_left"], atol=0.75)
    assert np.allclose(centroid(o[..., 2] - o[..., 1]), info["aligned_points"]["eye_right"], atol=0.75)


# ---------------------------------------------------------------------------------------------------------------------
# dlib on a real photo


@needs_dlib
def test_dlib_picks_the_real_face_on_astronaut(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) >= 1
    best = faces[0]
    assert np.allclose(best.box, ASTRONAUT_FACE, atol=6), best.box
    assert best.landmarks68.shape == (68, 2)
    eyes = five_from_68(best.landmarks68)[:2]
    assert np.allclose(eyes, [[203.2, 101.5], [246.5, 104.2]], atol=3)
    # dlib's HOG also fires on the suit; that weaker box must never come first
    for f in faces[1:]:
        assert f.prominence < best.prominence


@needs_dlib
def test_aligned_astronaut_has_eyes_where_ffhq_puts_them(detector, astronaut):
    S = 256
    face = detector.detect(astronaut)[0]
    out, info = align_face(astronaut, face.landmarks68, output_size=S, transform_size=4 * S)
    Image.fromarray(out)  # a valid image
    five = five_from_68(face.landmarks68)
    want = [expected_aligned(p, five[0], five[1], five[3], five[4], S) for p in five[:2]]
    assert np.allclose(info["aligned_points"]["eye_left"], want[0], atol=0.5)
    assert np.allclose(info["aligned_points"]["eye_right"], want[1], atol=0.5)
    # FFHQ's canonical layout: eyes about 3/8 and 5/8 across, a little above the middle, nearly level
    assert abs(want[0][0] - 0.375 * S) < 3 and abs(want[1][0] - 0.625 * S) < 3
    assert abs(want[0][1] - 0.475 * S) < 3 and abs(want[0][1] - want[1][1]) < 2
    # the detector run again on the aligned image finds the eyes there
    again = detector.detect(out)
    assert len(again) >= 1
    eyes2 = five_from_68(again[0].landmarks68)[:2]
    assert np.allclose(eyes2[0], want[0], atol=2.5) and np.allclose(eyes2[1], want[1], atol=2.5)


# ---------------------------------------------------------------------------------------------------------------------
# Batch tool and CLI


@pytest.fixture()
def photos(tmp_path, astronaut):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(src / "astronaut.png")
    Image.fromarray(skdata.coffee()).save(src / "coffee.jpg")
    (src / "broken.png").write_bytes(b"this is not a png")
    (src / "notes.txt").write_text("not an image")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(src / "sub" / "mirrored.jpg", quality=95)
    return src


@needs_dlib
def test_cli_folder_outputs_warnings_and_resume(photos, tmp_path):
    out = tmp_path / "aligned"
    r = run(["-s", photos, "-d", out, "--size", "256"])
    assert r.exit_code == 0, r.output
    warns = warnings_in(r.output)
    assert any("coffee.jpg" in w and "no face" in w for w in warns), r.output
    assert any("broken.png" in w and "not a readable image" in w for w in warns), r.output
    assert not any("notes.txt" in w for w in warns)
    assert "aligned 2 of 4 photo(s)" in r.output and "1 non-image file(s) ignored" in r.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["astronaut.json", "astronaut.png", "sub/mirrored.json", "sub/mirrored.png"]
    assert Image.open(out / "astronaut.png").size == (256, 256)
    meta = json.loads((out / "astronaut.json").read_text())
    for k in ("source", "landmarks", "quad", "box", "score", "aligned_points"):
        assert k in meta
    assert Path(meta["source"]).name == "astronaut.png" and len(meta["landmarks"]) == 68 and len(meta["quad"]) == 4
    assert np.allclose(meta["box"], ASTRONAUT_FACE, atol=6)

    # rerun: finished photos are skipped, the others are tried again
    stamp = (out / "astronaut.png").stat().st_mtime_ns
    r = run(["-s", photos, "-d", out, "--size", "256"])
    assert r.exit_code == 0, r.output
    assert "2 already done" in r.output and (out / "astronaut.png").stat().st_mtime_ns == stamp
    # a photo whose JSON is missing is unfinished and gets redone; --overwrite redoes everything
    (out / "sub" / "mirrored.json").unlink()
    r = run(["-s", photos, "-d", out, "--size", "256"])
    assert "aligned 1 of 4" in r.output and (out / "sub" / "mirrored.json").exists()
    r = run(["-s", photos, "-d", out, "--size", "256", "--overwrite"])
    assert r.exit_code == 0 and "aligned 2 of 4" in r.output
    assert not list(out.rglob("*.tmp"))


@needs_dlib
def test_all_faces_writes_numbered_files_best_first(tmp_path, astronaut):
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    out = tmp_path / "out"
    # --min-score 0 keeps dlib's weak second box (the mission patch), so the numbering and resume are exercised
    r = run(["-s", src, "-d", out, "--size", "64", "--all-faces", "--no-padding", "--min-score", "0"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    n = len(names) // 2
    assert n == 2 and names[:2] == ["astronaut_01.json", "astronaut_01.png"]
    first = json.loads((out / "astronaut_01.json").read_text())
    assert np.allclose(first["box"], ASTRONAUT_FACE, atol=6)
    assert first["faces_written"] == n and first["padding"] is False
    # resume in this mode needs every numbered file
    res = align_images(src, out, size=64, all_faces=True, padding=False, detector=_NeverCalled())
    assert res.counts["skipped"] == 1
    (out / f"astronaut_{n:02d}.png").unlink()
    r = run(["-s", src, "-d", out, "--size", "64", "--all-faces", "--no-padding", "--min-score", "0"])
    assert r.exit_code == 0 and (out / f"astronaut_{n:02d}.png").exists()


@needs_dlib
def test_all_faces_drops_the_mission_patch_by_score(tmp_path, astronaut):
    """dlib scores the astronaut's face 1.16 and the mission patch on her suit 0.12: the default --min-score
    (0.3) keeps the face only and says, in one warning line, what it dropped and with which score."""
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    out = tmp_path / "out"
    r = run(["-s", src, "-d", out, "--size", "64", "--all-faces"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_01.json", "astronaut_01.png"]
    meta = json.loads((out / "astronaut_01.json").read_text())
    assert np.allclose(meta["box"], ASTRONAUT_FACE, atol=6) and meta["faces_written"] == 1
    dropped = [w for w in warnings_in(r.output) if "dropped" in w]
    assert len(dropped) == 1 and "astronaut.png" in dropped[0] and "score 0.12" in dropped[0], r.output
    assert "--min-score 0.3" in dropped[0]


class _ScoredFaces:
    """Stand-in detector: faces with the given scores (as boxes of decreasing size, so ranked in this order)."""

    name = "scored"

    def __init__(self, scores):
        self.scores = scores

    def detect(self, image):
        h, w = image.shape[:2]
        lm = synthetic_landmarks(0, min(h, w) / 240, shift=(w / 2, h / 2.3))
        return [lmmod.Face(box=(0.0, 0.0, w / (i + 1), h / (i + 1)), score=s, landmarks68=lm)
                for i, s in enumerate(self.scores)]


@pytest.mark.parametrize("scores,min_score,kept", [
    ([0.9, 0.5, 0.1], 0.3, [0.9, 0.5]),
    ([0.9, 0.5, 0.1], 0.0, [0.9, 0.5, 0.1]),
    ([0.05, 0.9], 0.3, [0.9]),      # a weak first box goes too when a real face is there
    ([0.1, 0.05], 0.3, [0.1]),      # none scores enough: the most prominent one, as without --all-faces
])
def test_min_score_filters_all_faces(tmp_path, scores, min_score, kept):
    src = tmp_path / "p.png"
    Image.fromarray(np.full((120, 100, 3), 90, np.uint8)).save(src)
    logs = []
    res = align_images(src, tmp_path / "out", size=32, all_faces=True, min_score=min_score,
                       detector=_ScoredFaces(scores), callback=notes_to(logs))
    got = [json.loads(p.with_suffix(".json").read_text())["score"] for p in res.written]
    assert got == kept
    dropped = [m for m in logs if "dropped" in m]
    assert len(dropped) == len(scores) - len(kept)
    for m, s in zip(dropped, [s for s in scores if s not in kept]):
        assert m.startswith("warning: ") and f"score {s:.2f}" in m


def test_help_states_the_default_min_score_and_the_size_bound():
    from styleforge.align.batch import DEFAULT_MIN_SCORE, MAX_SIZE

    out = " ".join(run(["--help"]).output.split())
    assert f"[default: {DEFAULT_MIN_SCORE:g};" in out and f"8 to {MAX_SIZE}" in out


def test_min_score_needs_all_faces(tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(np.full((50, 50, 3), 90, np.uint8)).save(src)
    one_line_error(run(["-s", src, "-d", tmp_path / "out", "--min-score", "0.5"]), "--min-score", "--all-faces")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", ["100000", "4097"])
def test_absurd_size_is_refused_up_front(tmp_path, size):
    """--size 100000 used to run for minutes (a 100000 px canvas); now one line names the bound and why."""
    src = tmp_path / "p.png"
    Image.fromarray(np.full((50, 50, 3), 90, np.uint8)).save(src)
    line = one_line_error(run(["-s", src, "-d", tmp_path / "out", "--size", size]), f"--size {size}", "4096", "1024")
    assert "memory" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(StyleforgeError, match="at most 4096"):
        align_images(src, tmp_path / "out", size=int(size), detector=_NeverCalled())


class _NeverCalled:
    name = "never"

    def detect(self, image):
        raise AssertionError("finished photos must not be detected again")


class _FakeDetector:
    """Deterministic stand-in for sharding tests: one synthetic face in the middle of every photo."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        lm = synthetic_landmarks(0, min(h, w) / 240, shift=(w / 2, h / 2.3))
        return [lmmod.Face(box=(0.0, 0.0, float(w), float(h)), score=1.0, landmarks68=lm)]


def test_shards_partition_the_photos_and_resume(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)).save(src / f"p{i}.png")
    out = tmp_path / "out"
    seen = []
    for i in range(3):
        det = _FakeDetector()
        res = align_images(src, out, size=32, shard=(i, 3), detector=det)
        assert res.counts["aligned"] == det.calls == res.images
        seen += [Path(p).name for p in res.aligned]
    assert sorted(seen) == [f"p{i}.png" for i in range(5)]  # every photo exactly once
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(5)]
    res = align_images(src, out, size=32, detector=_NeverCalled())
    assert res.counts == {"images": 5, "aligned": 0, "faces": 0, "skipped": 5, "no_face": 0, "failed": 0, "ignored": 0}
    # more shards than photos: an empty shard is not an error
    logs = []
    res = align_images(src, out, size=32, shard=(7, 8), detector=_NeverCalled(), callback=notes_to(logs))
    assert res.images == 0 and "no images" in logs[0]
    # the CLI parses --shard
    r = run(["-s", src, "-d", tmp_path / "o2", "--size", "32", "--shard", "5/3"])
    one_line_error(r, "--shard")


def test_output_folder_inside_the_source_is_not_read_back(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(src / "a.png")
    res = align_images(src, src / "aligned", size=32, detector=_FakeDetector())
    assert res.counts["aligned"] == 1
    res = align_images(src, src / "aligned", size=32, detector=_NeverCalled())
    assert res.images == 1 and res.counts["skipped"] == 1


@needs_dlib
def test_no_face_anywhere_is_an_error_after_warnings(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(src / "black.png")
    Image.fromarray(skdata.coffee()).save(src / "coffee.png")
    r = run(["-s", src, "-d", tmp_path / "out", "--size", "64"])
    one_line_error(r, "no face aligned", "2 without a face")
    assert len([w for w in warnings_in(r.output) if "no face found" in w]) == 2
    assert not list((tmp_path / "out").glob("*.png"))


@needs_dlib
def test_non_image_file_given_directly(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    r = run(["-s", txt, "-d", tmp_path / "out"])
    one_line_error(r, "no face aligned", "1 unreadable")
    assert any("notes.txt" in w and "not a readable image" in w for w in warnings_in(r.output))


def test_empty_folder_and_missing_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run(["-s", empty, "-d", tmp_path / "out"]), "no images found", str(empty))
    only_text = tmp_path / "texts"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x")
    one_line_error(run(["-s", only_text, "-d", tmp_path / "out"]), "no images found", "1 non-image")
    one_line_error(run(["-s", tmp_path / "nope", "-d", tmp_path / "out"]), "nope", "no such file or folder")
    r = run(["-s", empty, "-d", tmp_path / "out", "--detector", "mtcnn"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_missing_backends_name_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(StyleforgeError, match=r"pip install 'styleforge\[align\]'"):
        lmmod.DlibDetector()
    monkeypatch.setattr(lmmod, "_package_dir", lambda name: None)
    with pytest.raises(StyleforgeError, match=r"styleforge\[align\].*shape_predictor_68_face_landmarks\.dat"):
        lmmod.dlib_model_path()
    with pytest.raises(StyleforgeError, match=r"face-alignment detector is not installed: pip install 'styleforge\[align-fan\]'"):
        lmmod.FaceAlignmentDetector()


def test_face_alignment_offline_names_files_folder_and_urls(monkeypatch, tmp_path):
    """With the package present but no weights, the error says which file goes where (no download attempt)."""
    fake = types.ModuleType("face_alignment")
    fake.LandmarksType = types.SimpleNamespace(TWO_D=1)

    def _no(*a, **k):
        raise AssertionError("must not construct FaceAlignment without weights (it would try to download)")

    fake.FaceAlignment = _no
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    monkeypatch.setattr(lmmod, "_package_dir", lambda name: tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(lmmod, "_fan_urls", lambda: dict(lmmod._FAN_DEFAULT_URLS))
    folder = str(tmp_path / "th" / "hub" / "checkpoints")
    with pytest.raises(StyleforgeError) as ei:
        lmmod.FaceAlignmentDetector()
    msg = str(ei.value)
    assert "\n" not in msg and folder in msg
    for url in lmmod._FAN_DEFAULT_URLS.values():
        assert url in msg and url.rsplit("/", 1)[-1] in msg
    # one file present: only the other one is asked for
    Path(folder).mkdir(parents=True)
    (Path(folder) / "s3fd-619a316812.pth").write_bytes(b"x")
    assert [n for n, _ in lmmod.fan_missing_weights()] == ["2DFAN4-11f355bf06.pth.tar"]

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(src)
    one_line_error(run(["-s", src, "-d", tmp_path / "out", "--detector", "face-alignment"]),
                   "2DFAN4-11f355bf06.pth.tar", folder)


def test_script_wrapper_runs(tmp_path):
    import subprocess

    from conftest import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "align.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--all-faces" in r.stdout and "--detector" in r.stdout


def test_photos_are_read_upright_and_in_rgb(tmp_path):
    from styleforge.align.batch import load_photo

    img = np.zeros((60, 100, 3), np.uint8)
    img[:, :50] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    up = load_photo(tmp_path / "phone.jpg")
    assert up.shape == (100, 60, 3) and up[:40].mean() > 200 and up[60:].mean() < 50  # white half now on top
    Image.fromarray(np.full((30, 40), 7, np.uint8)).save(tmp_path / "gray.png")
    g = load_photo(tmp_path / "gray.png")
    assert g.shape == (30, 40, 3) and g.dtype == np.uint8
    with pytest.raises(StyleforgeError, match="shard"):
        align_images(tmp_path / "gray.png", tmp_path / "o", shard=(2, 2), detector=_NeverCalled())


def test_resume_into_a_folder_of_another_size_is_refused(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(src / "a.png")
    out = tmp_path / "out"
    align_images(src, out, size=32, detector=_FakeDetector())
    with pytest.raises(StyleforgeError) as e:
        align_images(src, out, size=64, detector=_NeverCalled())
    assert re.search(r"already holds 32px faces.*--overwrite", error_line(e.value, click.Context(align_cmd)))
    assert "or redo them (skip_existing=False)" in str(e.value)  # in Python the message names the argument
    res = align_images(src, out, size=64, detector=_FakeDetector(), skip_existing=False)
    assert res.counts["aligned"] == 1 and Image.open(out / "a.png").size == (64, 64)


def test_library_reports_through_the_callback_and_names_settings_not_flags(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(src / "a.png")
    (src / "b.png").write_bytes(b"not a png")
    events = []
    res = align_images(src, tmp_path / "out", size=32, detector=_FakeDetector(), callback=events.append)
    assert res.counts["aligned"] == 1 and res.counts["failed"] == 1
    assert [(e.kind, e.stage, e.total) for e in events if e.kind != "advance"][::2] == [
        ("begin", "align", 2), ("end", "align", None)]
    notes = [e for e in events if e.kind == "note"]
    assert len(notes) == 1 and notes[0].level == "warning" and "b.png: not a readable image" in notes[0].message
    assert events[-2].info == {"faces": 1}
    for kwargs, text in (({"size": 4}, "size 4: too small"), ({"size": 5000}, "size 5000: too large"),
                         ({"detector": "mtcnn"}, "detector 'mtcnn': unknown"), ({"shard": (3, 2)}, "shard 3/2: out")):
        with pytest.raises(StyleforgeError) as e:
            align_images(src, tmp_path / "o2", skip_existing=False, **kwargs)
        assert str(e.value).startswith(text) and "--" not in str(e.value), str(e.value)
    with pytest.raises(StyleforgeError) as e:
        align_images([], tmp_path / "o2")
    assert str(e.value) == "no sources given: pass folders or image files"
    assert error_line(e.value, click.Context(align_cmd)) == "error: no --source given: pass folders or image files"
    with pytest.raises(StyleforgeError, match=r"nope: no such file or folder \(source\)$"):
        align_images(tmp_path / "nope", tmp_path / "o2")
    assert capsys.readouterr() == ("", "")  # nothing printed
