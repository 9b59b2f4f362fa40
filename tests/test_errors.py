"""styleforge.errors: errors and warnings name the setting they are about; Python reads its name in words, a
command line its flag (commands.options), a web page whatever it passes to render()."""

from __future__ import annotations

import warnings

import click
import pytest
from click.testing import CliRunner

from styleforge.commands.options import command, error_line, message_text, user_errors
from styleforge.errors import NetworkFormatError, StyleforgeError, StyleforgeWarning


def test_a_setting_and_its_value_lead_the_message():
    e = StyleforgeError("out of range: the network has classes 0..9", param="class_idx", label="class", value=12)
    assert str(e) == "class 12: out of range: the network has classes 0..9"
    assert e.render({"class_idx": "--class"}) == "--class 12: out of range: the network has classes 0..9"
    assert e.param == "class_idx" and e.value == 12 and e.detail.startswith("out of range")
    # without a label the argument's name, in words; without a value only the name
    assert str(StyleforgeError("empty list", param="batch_size")) == "batch size: empty list"
    assert str(StyleforgeError("a plain message")) == "a plain message" and StyleforgeError("x").param is None


def test_placeholders_are_replaced_by_name_or_flag():
    e = StyleforgeError("{name} needs a W space", param="projected_w", label="a latent file")
    assert str(e) == "a latent file needs a W space"  # {name}: not prefixed again
    assert e.render({"projected_w": "--projected-w"}) == "--projected-w needs a W space"
    e = StyleforgeError("give either {from_w} or {from_seed}", also={"from_w": "a latent file", "from_seed": "a seed"})
    assert str(e) == "give either a latent file or a seed"
    assert e.render({"from_w": "--from"}) == "give either --from or a seed"  # a setting the front end lacks: its label
    assert e.render({"from_w": "--from", "from_seed": "--from-seed"}) == "give either --from or --from-seed"


def test_warnings_and_subclasses_render_the_same_way():
    w = StyleforgeWarning("{name} is ignored: the network is unconditional", param="class_idx", label="the class")
    assert isinstance(w, UserWarning) and str(w) == "the class is ignored: the network is unconditional"
    assert w.render({"class_idx": "--class"}) == "--class is ignored: the network is unconditional"
    e = NetworkFormatError("{name}: not a network", param="network", label="the file")
    assert isinstance(e, StyleforgeError) and str(e) == "the file: not a network"


@command()
@click.option("--class", "class_idx", type=int)
@click.argument("src")
@user_errors
def _cmd(class_idx, src):
    if class_idx is not None:
        raise StyleforgeError("out of range", param="class_idx", label="class", value=class_idx)
    warnings.warn(StyleforgeWarning("{name} and {src} are ignored", param="class_idx", also={"src": "the source"}))
    raise StyleforgeError("{src} is missing; pass {seeds}", also={"src": "the source", "seeds": "seeds"})


def test_the_command_line_names_its_flags_and_arguments():
    r = CliRunner().invoke(_cmd, ["--class", "12", "a"])
    assert r.exit_code == 1 and r.output == "error: --class 12: out of range\n"
    r = CliRunner().invoke(_cmd, ["a"])
    # an argument by its metavar; a setting the command has no option for by its label
    assert r.output.splitlines() == ["warning: --class and SRC are ignored", "error: SRC is missing; pass seeds"]
    ctx = click.Context(_cmd)
    e = StyleforgeError("out of range", param="class_idx", value=3)
    assert error_line(e, ctx) == "error: --class 3: out of range" and message_text("plain text", ctx) == "plain text"


def test_messages_are_one_line():
    e = StyleforgeError("first\n   second", param="seeds")
    assert message_text(e, click.Context(_cmd)) == "seeds: first second"


@pytest.mark.parametrize("make", [lambda: StyleforgeError("m", param="p"), lambda: StyleforgeWarning("m", param="p")])
def test_render_with_no_names_is_the_python_text(make):
    x = make()
    assert x.render({}) == str(x) == "p: m"
