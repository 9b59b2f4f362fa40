#!/usr/bin/env python3
"""Thin wrapper: `python scripts/style_mixing.py --help` (same as `styleforge style-mixing`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.style_mixing import style_mixing_cmd

if __name__ == "__main__":
    style_mixing_cmd()
