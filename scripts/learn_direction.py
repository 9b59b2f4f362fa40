#!/usr/bin/env python3
"""Thin wrapper: `python scripts/learn_direction.py --help` (same as `styleforge learn-direction`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.learn_direction import learn_direction_cmd

if __name__ == "__main__":
    learn_direction_cmd()
