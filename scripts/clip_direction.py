#!/usr/bin/env python3
"""Thin wrapper: `python scripts/clip_direction.py --help` (same as `styleforge clip-direction`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.clip_direction import clip_direction_cmd

if __name__ == "__main__":
    clip_direction_cmd()
