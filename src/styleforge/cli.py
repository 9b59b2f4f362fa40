"""The ``styleforge`` console command: one click group, one subcommand per tool.

Each subcommand is the same click command as the matching ``scripts/<tool>.py``; both parse flags and call
one library function, then print where the results went.
"""

from __future__ import annotations

import click

from .commands.align import align_cmd
from .commands.convert import convert_cmd, info_cmd
from .commands.dataset import dataset_tool_cmd
from .commands.generate import generate_cmd
from .commands.interpolate import interpolate_cmd
from .commands.project import project_cmd
from .commands.train import train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleforge")
def main():
    """styleforge: StyleGAN2-ADA networks in pure PyTorch (generate, convert, project, edit, train)."""


main.add_command(generate_cmd, "generate")
main.add_command(convert_cmd, "convert")
main.add_command(info_cmd, "info")
main.add_command(dataset_tool_cmd, "dataset")
main.add_command(align_cmd, "align")
main.add_command(train_cmd, "train")
main.add_command(project_cmd, "project")
main.add_command(interpolate_cmd, "interpolate")

if __name__ == "__main__":
    main()
