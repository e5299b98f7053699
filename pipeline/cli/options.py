"""Click flags derived from a job kind's options (pipeline.inference.options).

    @click.command()
    @option_flags(RecognitionOptions)
    def asr(files, **kwargs):
        options = chosen(RecognitionOptions, kwargs)   # only the flags given: {"beam_size": 4}

Each job field becomes `--field-name` with the field's type, range, help text and default; only
the flags given on the command line (or through the environment) count as set, so the options
say only what the user chose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from pipeline.inference.options import OptionSpec, default_of, job_fields, spec


def _click_type(s: OptionSpec) -> click.ParamType:
    if s.choices is not None:
        return click.Choice(s.choices)
    if s.kind is int:
        return click.IntRange(None if s.low is None else int(s.low),
                              None if s.high is None else int(s.high))
    return click.FloatRange(s.low, s.high, max_open=s.high_open)


def option_flags(cls: type) -> Callable:
    """A decorator adding one flag per job field of `cls`."""
    def decorate(f: Callable) -> Callable:
        for fld in reversed(job_fields(cls)):
            f = click.option(f"--{fld.name.replace('_', '-')}", fld.name,
                             type=_click_type(spec(fld)), default=default_of(fld),
                             show_default=True, help=spec(fld).help)(f)
        return f
    return decorate


def chosen(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop `cls`'s flags from a command's keyword arguments: those the user gave."""
    ctx = click.get_current_context()
    values = {fld.name: kwargs.pop(fld.name) for fld in job_fields(cls) if fld.name in kwargs}
    return {k: v for k, v in values.items()
            if ctx.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)}
