"""The `speechq` console command."""

from __future__ import annotations

import click

from pipeline.cli import COMMANDS as PIPELINE_COMMANDS


@click.group()
@click.version_option(package_name="speechq")
def main() -> None:
    """speechq: Transformer TTS and ASR, trained here and served by Celery workers over Redis."""


for _command in PIPELINE_COMMANDS:
    main.add_command(_command)
