"""FFHQ face alignment as a pure function: image + landmarks in, aligned square crop + geometry out.

The geometry follows the procedure used to build the FFHQ dataset (NVlabs ffhq-dataset,
``recreate_aligned_images``), re-implemented here from its description:

* eye centres = mean of the six contour points of each eye (68-point iBUG layout: 36-41, 42-47);
  mouth corners = points 48 and 54;
* the oriented crop square ("quad") has half-side ``max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``,
  is rotated so the eyes end up level and is centred at ``eye_avg + 0.1 * eye_to_mouth``;
* large photos are first shrunk by an integer factor (antialiased), then cropped to the quad plus a border;
* where the quad sticks out of the photo the canvas is reflect-padded; the padding is blurred
  (Gaussian, sigma = 2 % of the quad size) and faded towards the median colour at the outer edge;
* the quad is mapped to a ``transform_size`` square with a bilinear QUAD transform and resized to
  ``output_size`` with Lanczos.

Coordinates are pixel-index coordinates (x, y): the centre of pixel (i, j) is at (i, j). Use
:func:`points_to_aligned` to find where any point of the photo lands in the aligned image.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = [
    "align_face",
    "align_face_5",
    "align_face_points",
    "ffhq_quad",
    "five_from_68",
    "points_to_aligned",
]

# 68-point iBUG layout (as produced by dlib's and FAN's 68-point predictors)
LEFT_EYE = slice(36, 42)   # the eye on the image's left (the subject's right eye)
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT = 48
MOUTH_RIGHT = 54
NOSE_TIP = 30


def _as_points(a, n: int, what: str) -> np.ndarray:
    p = np.asarray(a, dtype=np.float64)
    if p.shape != (n, 2):
        raise ValueError(f"{what} must have shape [{n}, 2] (x, y), got {list(p.shape)}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return p


def five_from_68(landmarks68) -> np.ndarray:
    """The five points [left eye, right eye, nose tip, mouth left, mouth right] from 68 iBUG landmarks.

    Eyes are the means of their six contour points (as FFHQ uses them); left/right mean the image's left/right.
    """
    lm = _as_points(landmarks68, 68, "landmarks68")
    return np.stack([
        lm[LEFT_EYE].mean(axis=0), lm[RIGHT_EYE].mean(axis=0), lm[NOSE_TIP], lm[MOUTH_LEFT], lm[MOUTH_RIGHT],
    ])


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right) -> Tuple[np.ndarray, float]:
    """The FFHQ crop square for the given eye centres and mouth corners.

    Returns ``(quad, qsize)``: ``quad`` [4, 2] holds the corners that become the aligned image's top-left,
    bottom-left, bottom-right and top-right corners (PIL QUAD order); ``qsize`` is its side length.
    """
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    mouth_left, mouth_right = np.asarray(mouth_left, np.float64), np.asarray(mouth_right, np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # x: along the eye line, corrected by the eye-to-mouth direction turned by 90 degrees
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = math.hypot(x[0], x[1])
    scale = max(2.0 * math.hypot(*eye_to_eye), 1.8 * math.hypot(*eye_to_mouth))
    if norm < 1e-9 or scale < 1e-9:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / norm * scale
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, 2.0 * scale


def points_to_aligned(points, quad, output_size: int) -> np.ndarray:
    """Map photo points [N, 2] to pixel coordinates in the aligned image made from ``quad``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q = np.asarray(quad, dtype=np.float64)
    ex = q[3] - q[0]  # direction of the aligned image's x axis (top edge), in photo pixels
    ey = q[1] - q[0]  # direction of its y axis (left edge)
    # (u, v) in [0, 1]^2 across the quad; the corners are pixel edges, so output index = u * size - 0.5
    uv = np.linalg.solve(np.stack([ex, ey], axis=1), (p - q[0]).T).T
    return uv * output_size - 0.5


def _resample(name: str):
    import PIL.Image

    return getattr(PIL.Image.Resampling, name)


def align_face_points(
    image: np.ndarray,
    eye_left,
    eye_right,
    mouth_left,
    mouth_right,
    output_size: int = 1024,
    transform_size: int = 4096,
    enable_padding: bool = True,
) -> Tuple[np.ndarray, Dict]:
    """FFHQ-align ``image`` given the two eye centres and the two mouth corners (each (x, y))."""
    import PIL.Image

    img_arr = _as_image(image)
    if int(output_size) < 1 or int(transform_size) < 1:
        raise ValueError("output_size and transform_size must be positive")
    output_size, transform_size = int(output_size), int(transform_size)
    pts = {k: _as_points(np.reshape(v, (1, 2)), 1, k)[0] for k, v in
           (("eye_left", eye_left), ("eye_right", eye_right), ("mouth_left", mouth_left), ("mouth_right", mouth_right))}
    quad0, qsize0 = ffhq_quad(pts["eye_left"], pts["eye_right"], pts["mouth_left"], pts["mouth_right"])

    img = PIL.Image.fromarray(img_arr)
    quad = quad0.copy()
    qsize = qsize0

    # 1. Shrink big photos by an integer factor (antialiased) so the crop is at most ~4x the output.
    shrink = int(math.floor(qsize / output_size * 0.5))
    if shrink > 1:
        w0, h0 = img.size
        new_size = (max(1, int(round(w0 / shrink))), max(1, int(round(h0 / shrink))))
        img = img.resize(new_size, _resample("LANCZOS"))
        # exact per-axis scale of the resize, in pixel-edge coordinates
        sx, sy = new_size[0] / w0, new_size[1] / h0
        quad = (quad + 0.5) * np.array([sx, sy]) - 0.5
        qsize = qsize * math.sqrt(sx * sy)

    # 2. Crop to the quad's bounding box plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, img.size[0]), min(hi[1] + border, img.size[1]))
    cropped = None
    if crop[2] > crop[0] and crop[3] > crop[1] and (crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]):
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], dtype=np.float64)
        cropped = [int(v) for v in crop]

    # 3. Reflect-pad where the quad (plus border) sticks out of the photo; blur and fade the padding.
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = [max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0)]
    padded = None
    if enable_padding and max(pad) > border - 4:
        p = max(int(np.rint(qsize * 0.3)), 1)
        pad = [max(v, p) for v in pad]
        img, quad = _pad_blur(img, pad, quad, qsize)
        padded = [int(v) for v in pad]

    # 4. Oriented crop (supersampled), then antialiased resize to the output size.
    img = img.transform((transform_size, transform_size), PIL.Image.Transform.QUAD,
                        tuple((quad + 0.5).flatten()), _resample("BILINEAR"))
    if transform_size != output_size:
        img = img.resize((output_size, output_size), _resample("LANCZOS"))
    out = np.asarray(img, dtype=np.uint8)

    info = {
        "quad": quad0.tolist(),
        "qsize": float(qsize0),
        "output_size": output_size,
        "transform_size": transform_size,
        "shrink": shrink if shrink > 1 else 1,
        "crop": cropped,
        "pad": padded,
        "eye_left": pts["eye_left"].tolist(),
        "eye_right": pts["eye_right"].tolist(),
        "mouth_left": pts["mouth_left"].tolist(),
        "mouth_right": pts["mouth_right"].tolist(),
        "aligned_points": {
            k: v.tolist() for k, v in zip(
                ("eye_left", "eye_right", "mouth_left", "mouth_right"),
                points_to_aligned(np.stack([pts["eye_left"], pts["eye_right"], pts["mouth_left"], pts["mouth_right"]]),
                                  quad0, output_size),
            )
        },
    }
    return out, info


def _pad_blur(img, pad: Sequence[int], quad: np.ndarray, qsize: float):
    """Reflect-pad (left, top, right, bottom), blur towards the padded edges and fade to the median colour."""
    import PIL.Image

    try:
        from scipy.ndimage import gaussian_filter
    except ImportError:
        from ..errors import StyleforgeError

        raise StyleforgeError("padding the crop needs scipy: pip install 'styleforge[align]', or align without "
                              "padding ({padding})", also={"padding": "padding=False"}) from None
    a = np.asarray(img, dtype=np.float32)
    pl, pt, pr, pb = (int(v) for v in pad)
    mode = "reflect" if min(a.shape[0], a.shape[1]) > 1 else "edge"
    a = np.pad(a, ((pt, pb), (pl, pr), (0, 0)), mode)
    h, w = a.shape[:2]
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    # 1 at the outer edge of the padding, 0 at the photo's edge, negative inside the photo
    mx = 1.0 - np.minimum(xs / max(pl, 1), (w - 1 - xs) / max(pr, 1))
    my = 1.0 - np.minimum(ys / max(pt, 1), (h - 1 - ys) / max(pb, 1))
    mask = np.maximum(mx, my)[:, :, None]
    sigma = qsize * 0.02
    a += (gaussian_filter(a, [sigma, sigma, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
    img = PIL.Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)))
    return img, quad + np.array([pl, pt], dtype=np.float64)


def _as_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be HxWx3 uint8, got shape {list(np.shape(image))}")
    return np.ascontiguousarray(a)


def align_face(
    image: np.ndarray,
    landmarks68,
    output_size: int = 1024,
    transform_size: int = 4096,
    enable_padding: bool = True,
) -> Tuple[np.ndarray, Dict]:
    """FFHQ-align one face.

    ``image``: HxWx3 uint8 RGB photo. ``landmarks68``: [68, 2] (x, y) iBUG landmarks of the face in it.
    Returns ``(aligned, info)``: ``aligned`` is an ``output_size`` square HxWx3 uint8 image; ``info`` holds
    ``quad`` (the crop square in photo coordinates: top-left, bottom-left, bottom-right, top-right corners),
    ``qsize``, ``shrink``, ``crop`` and ``pad`` (what was done to the photo, None if nothing), the eye
    centres and mouth corners used, and ``aligned_points`` (where those land in the output).

    ``transform_size`` is the supersampling canvas (4096 as in FFHQ); ``4 * output_size`` gives the same
    quality for smaller outputs at a fraction of the cost.
    """
    five = five_from_68(landmarks68)
    return align_face_points(image, five[0], five[1], five[3], five[4], output_size=output_size,
                             transform_size=transform_size, enable_padding=enable_padding)


def align_face_5(
    image: np.ndarray,
    landmarks5,
    output_size: int = 1024,
    transform_size: int = 4096,
    enable_padding: bool = True,
) -> Tuple[np.ndarray, Dict]:
    """FFHQ-align from five points, for detectors that only give eyes, nose and mouth corners.

    ``landmarks5`` is [5, 2] in the MTCNN / RetinaFace order: left eye, right eye, nose, mouth left,
    mouth right (left = the image's left). The nose is not used. Eye *centres* from such detectors are
    pupil-like points, close to (but not exactly) the 6-point eye means of the 68-point layout.
    """
    five = _as_points(landmarks5, 5, "landmarks5")
    return align_face_points(image, five[0], five[1], five[3], five[4], output_size=output_size,
                             transform_size=transform_size, enable_padding=enable_padding)

