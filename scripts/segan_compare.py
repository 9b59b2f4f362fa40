#!/usr/bin/env python3
"""Thin wrapper: `python scripts/segan_compare.py --help` (same as `styleforge segan-compare`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.segan_compare import segan_compare_cmd

if __name__ == "__main__":
    segan_compare_cmd()
