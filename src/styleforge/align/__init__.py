"""FFHQ-style face alignment: landmark detection, the alignment itself, and a batch tool.

* :func:`align_face` / :func:`align_face_5` — pure functions: photo + landmarks -> aligned crop + geometry.
* :func:`get_detector` — ``dlib`` (default) or ``face-alignment`` landmark detectors (imported lazily).
* :func:`align_images` — folders/files in, ``<name>.png`` + ``<name>.json`` out (resumable, shardable).
"""

from .ffhq import align_face, align_face_5, align_face_points, ffhq_quad, five_from_68, points_to_aligned
from .landmarks import Face, get_detector
from .batch import AlignResult, align_images

__all__ = [
    "align_face", "align_face_5", "align_face_points", "ffhq_quad", "five_from_68", "points_to_aligned",
    "Face", "get_detector", "AlignResult", "align_images",
]
