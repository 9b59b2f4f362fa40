"""Animations from frames: looping GIFs (Pillow only) and H.264 MP4s (``pip install 'styleforge[video]'``).

Frames are HWC uint8 arrays (1 or 3 channels). Both writers are atomic and give the file the umask's normal
mode, like every other output (:mod:`styleforge.utils.fileio`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from .utils.fileio import file_mode, atomic_path

PathLike = Union[str, os.PathLike]


def ffmpeg_available() -> Optional[str]:
    """None if MP4 writing works here, else the reason (with the install command)."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # ImportError, or no ffmpeg binary
        return f"{type(e).__name__}: {e}; pip install imageio imageio-ffmpeg"
    return None


def write_mp4(frames: Iterable[np.ndarray], path: PathLike, fps: float = 10, bitrate: str = "16M") -> Path:
    """Write HWC uint8 frames to an H.264 MP4 (imageio + libx264), atomically. Frames are consumed one at a
    time, so a generator keeps memory flat."""
    import imageio.v2 as imageio

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)  # imageio needs .mp4
    os.close(fd)
    try:
        writer = imageio.get_writer(tmp, mode="I", fps=fps, codec="libx264", bitrate=bitrate,
                                    macro_block_size=1, ffmpeg_log_level="error")
        try:
            for fr in frames:
                if fr.ndim == 3 and fr.shape[2] == 1:
                    fr = np.repeat(fr, 3, axis=2)
                writer.append_data(fr)
        finally:
            writer.close()
        os.chmod(tmp, file_mode())  # mkstemp made it private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_gif(frames: Sequence, path: PathLike, fps: float = 10, max_side: Optional[int] = None) -> Path:
    """Write frames (HWC uint8 arrays or PIL images) as a looping GIF, atomically. ``max_side``: frames larger
    than this are scaled down (bilinear) to keep the file small."""
    import PIL.Image

    ims = []
    for f in frames:
        im = f if isinstance(f, PIL.Image.Image) else PIL.Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f)
        if max_side and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(int(im.size[0] * s), 1), max(int(im.size[1] * s), 1)), PIL.Image.BILINEAR)
        ims.append(im)
    with atomic_path(path) as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
    return Path(path)
