#!/usr/bin/env python3
"""Thin wrapper: `python scripts/ganspace.py --help` (same as `styleforge ganspace`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.ganspace import ganspace_cmd

if __name__ == "__main__":
    ganspace_cmd()
