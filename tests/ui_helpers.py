"""What the web UI's API tests share (tests/test_ui.py, tests/test_ui_baselines.py): PNG decoding and the check of
a 4xx JSON error."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode(png: bytes) -> np.ndarray:
    """[H, W, C] uint8 of a PNG (grayscale gets its channel axis)."""
    a = np.asarray(Image.open(io.BytesIO(png)))
    return a[:, :, None] if a.ndim == 2 else a


def bad(r, status: int, *words: str) -> dict:
    """``r`` is an error answer with ``status``, a JSON body of ``error`` (+ ``param``) naming every word."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) <= {"error", "param"} and body["error"], body
    for w in words:
        assert w in body["error"], body
    return body
