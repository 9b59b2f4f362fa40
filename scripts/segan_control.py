#!/usr/bin/env python3
"""Thin wrapper: `python scripts/segan_control.py --help` (same as `styleforge segan-control`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.segan_control import segan_control_cmd

if __name__ == "__main__":
    segan_control_cmd()
