"""styleforge.utils.progress (the one callback of long-running library functions) and its command-line front
end, commands.progress.cli_callback (tqdm bars and one-line notes on stderr)."""

from __future__ import annotations

import click
import pytest

from styleforge.commands.progress import cli_callback, note_line
from styleforge.errors import StyleforgeError, StyleforgeWarning
from styleforge.utils.progress import Event, Reporter, reporter


def test_reporter_sends_stages_advances_and_notes():
    events = []
    rep = Reporter(events.append)
    with rep.stage("generate", total=3, unit="img") as advance:
        advance()
        advance(2, skipped=1)
    rep.note("mp4 writing is unavailable")
    w = StyleforgeWarning("{name} is ignored", param="class_idx")
    rep.note(w, level="warning")
    assert [(e.kind, e.stage, e.total, e.n, e.info) for e in events[:4]] == [
        ("begin", "generate", 3, 0, {}), ("advance", "generate", None, 1, {}),
        ("advance", "generate", None, 2, {"skipped": 1}), ("end", "generate", None, 0, {})]
    assert events[0].unit == "img" and not events[0].transient
    assert (events[4].kind, events[4].message, events[4].level) == ("note", "mp4 writing is unavailable", "info")
    assert events[5].message is w and events[5].level == "warning"


def test_a_stage_ends_however_its_block_ends():
    events = []
    with pytest.raises(KeyboardInterrupt):
        with Reporter(events.append).stage("align", total=2, transient=True):
            raise KeyboardInterrupt
    assert [e.kind for e in events] == ["begin", "end"] and events[0].transient


def test_no_callback_is_silent_and_a_reporter_passes_through():
    with Reporter().stage("x", total=1) as advance:  # nothing to call: no error
        advance()
    Reporter(None).note("ignored")
    events = []
    rep = Reporter(events.append)
    assert reporter(rep) is rep and reporter(None).callback is None
    inner = reporter(rep)  # a function hands its reporter on as a callback
    Reporter(inner).note("from a callee")
    rep(Event("note", message="direct"))
    assert [e.message for e in events] == ["from a callee", "direct"]


def test_cli_callback_draws_bars_and_writes_notes_on_stderr(capsys):
    cb = cli_callback()
    rep = Reporter(cb)
    with rep.stage("interpolate", total=5, unit="frame") as advance:
        advance(2)
        rep.note(StyleforgeWarning("{name} applies to seeds only", param="truncation_psi", label="truncation"),
                 "warning")
        advance(3)
    out = capsys.readouterr()
    assert out.out == ""
    assert "interpolate" in out.err and "0/5" in out.err and "5/5" in out.err
    # the note is one line of its own, above the bar; no flag to name outside a command: the label
    assert "\nwarning: truncation applies to seeds only\n" in "\n" + out.err.replace("\r", "\n")
    rep.note("proj.mp4 is skipped", "info")
    rep.note(StyleforgeError("x.png: not a readable image"), "failed")
    assert capsys.readouterr().err == "note: proj.mp4 is skipped\nfailed: x.png: not a readable image\n"


def test_cli_callback_without_bars_and_with_byte_counts(capsys):
    rep = Reporter(cli_callback(enabled=False))
    with rep.stage("generate", total=2) as advance:
        advance(2)
        rep.note("a note")
    assert capsys.readouterr().err == "note: a note\n"  # no bar at all
    rep = Reporter(cli_callback())
    with rep.stage("vgg16.pt", total=3 << 20, unit="B") as advance:
        advance(3 << 20)
    assert "3.15M" in capsys.readouterr().err  # bytes are scaled (tqdm's SI units)


def test_notes_name_the_running_commands_flags():
    @click.command()
    @click.option("--trunc", "truncation_psi", type=float)
    def cmd(truncation_psi):
        pass

    e = Event("note", message=StyleforgeWarning("{name} applies to seeds only", param="truncation_psi"),
              level="warning")
    assert note_line(e, click.Context(cmd)) == "warning: --trunc applies to seeds only"
    assert note_line(e) == "warning: truncation psi applies to seeds only"
    assert note_line(Event("note", message="plain", level="failed")) == "failed: plain"
