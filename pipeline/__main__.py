"""`python -m pipeline`: the `speechq` commands that need no queue (corpus, train, export,
asr, tts), for a training machine without the service's packages (Celery, Redis, FastAPI)."""

import click

from pipeline.cli.inference import COMMANDS as INFERENCE_COMMANDS
from pipeline.cli.train import COMMANDS


@click.group()
def main() -> None:
    """speechq's corpus, training and local inference commands."""


for _command in COMMANDS + INFERENCE_COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main(prog_name="python -m pipeline")
