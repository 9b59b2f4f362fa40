#!/usr/bin/env python3
"""Thin wrapper: `python scripts/dataset_tool.py --help` (same as `styleforge dataset`)."""

import sys
from pathlib import Path

try:
    import styleforge  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from styleforge.commands.dataset import dataset_tool_cmd

if __name__ == "__main__":
    dataset_tool_cmd()
