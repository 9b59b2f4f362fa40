"""The ``styleforge`` console command: one click group, one subcommand per tool.

Each subcommand is the same click command as the matching ``scripts/<tool>.py``; both parse flags and call
one library function, then print where the results went.
"""

from __future__ import annotations

import click

from .commands.align import align_cmd
from .commands.calc_metrics import calc_metrics_cmd
from .commands.clip_direction import clip_direction_cmd
from .commands.clip_generate import clip_generate_cmd
from .commands.convert import convert_cmd, info_cmd
from .commands.dataset import dataset_tool_cmd
from .commands.edit import edit_cmd
from .commands.evaluate import evaluate_cmd
from .commands.fetch import fetch_cmd
from .commands.ganspace import ganspace_cmd
from .commands.generate import generate_cmd
from .commands.interpolate import interpolate_cmd
from .commands.learn_direction import learn_direction_cmd
from .commands.project import project_cmd
from .commands.sefa import sefa_cmd
from .commands.segan_compare import segan_compare_cmd
from .commands.segan_control import segan_control_cmd
from .commands.style_mixing import style_mixing_cmd
from .commands.submit import submit_cmd
from .commands.train import train_cmd
from .commands.train_baseline import train_baseline_cmd
from .commands.ui import ui_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleforge")
def main():
    """styleforge: StyleGAN2-ADA networks in pure PyTorch (generate, convert, project, edit, train, metrics)."""


main.add_command(generate_cmd, "generate")
main.add_command(convert_cmd, "convert")
main.add_command(info_cmd, "info")
main.add_command(dataset_tool_cmd, "dataset")
main.add_command(align_cmd, "align")
main.add_command(train_cmd, "train")
main.add_command(project_cmd, "project")
main.add_command(interpolate_cmd, "interpolate")
main.add_command(edit_cmd, "edit")
main.add_command(learn_direction_cmd, "learn-direction")
main.add_command(sefa_cmd, "sefa")
main.add_command(ganspace_cmd, "ganspace")
main.add_command(style_mixing_cmd, "style-mixing")
main.add_command(calc_metrics_cmd, "calc-metrics")
main.add_command(evaluate_cmd, "evaluate")
main.add_command(train_baseline_cmd, "train-baseline")
main.add_command(submit_cmd, "submit")
main.add_command(fetch_cmd, "fetch")
main.add_command(ui_cmd, "ui")
main.add_command(clip_generate_cmd, "clip-generate")
main.add_command(clip_direction_cmd, "clip-direction")
main.add_command(segan_control_cmd, "segan-control")
main.add_command(segan_compare_cmd, "segan-compare")

if __name__ == "__main__":
    main()
