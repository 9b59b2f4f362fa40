"""The ``styleforge`` command group: every subcommand reports usage errors in one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error
from styleforge.cli import main


@pytest.mark.parametrize("name", sorted(main.commands))
def test_usage_errors_are_one_line(name):
    r = CliRunner().invoke(main, [name, "--no-such-flag"])
    assert_one_line_error(r, "--no-such-flag", exit_code=2)


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_still_works(name):
    r = CliRunner().invoke(main, [name, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_train_outdir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["train", "--outdir", str(f), "--data", str(tmp_path), "--dry-run"])
    assert_one_line_error(r, str(f), exit_code=None)


def test_cuda_runs_exact_fp32_unless_tf32_is_allowed(monkeypatch):
    """cuDNN's default TF32 moves official images by ~1e-3 (measured on an H200); a CUDA device turns it off."""
    import torch

    from styleforge.utils import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        runtime.set_tf32(True)
        assert runtime.resolve_device("cuda").type == "cuda"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        runtime.resolve_device("cuda", allow_tf32=True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        runtime.resolve_device("cpu")  # the CPU leaves the CUDA settings alone
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
