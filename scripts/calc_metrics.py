#!/usr/bin/env python3
"""Thin wrapper: `python scripts/calc_metrics.py --help` (same as `styleforge calc-metrics`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.calc_metrics import calc_metrics_cmd

if __name__ == "__main__":
    calc_metrics_cmd()
