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
