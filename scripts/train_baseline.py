#!/usr/bin/env python3
"""Thin wrapper: `python scripts/train_baseline.py --help` (same as `styleforge train-baseline`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.train_baseline import train_baseline_cmd

if __name__ == "__main__":
    train_baseline_cmd()
