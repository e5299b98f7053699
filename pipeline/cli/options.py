"""Click flags derived from a job kind's options (pipeline.inference.options).

    @click.command()
    @option_flags(RecognitionOptions)
    def asr(files, **kwargs):
        options = chosen(RecognitionOptions, kwargs)   # only the flags given: {"beam_size": 4}

Each job field becomes `--field-name` with the field's type, range, help text and default; only
the flags given on the command line (or through the environment) count as set, so the options
say only what the user chose. A list option (hotwords) is `--hotwords "okonkwo,new york"`
(comma-separated, repeatable) and `--hotwords-file PATH` (one a line), which add up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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


def _list_flags(name: str, s: OptionSpec) -> list[Callable]:
    """`--name a,b` (repeatable) and `--name-file PATH`, one item a line."""
    flag = name.replace("_", "-")
    limits = f"at most {s.max_items}, each of at most {s.max_chars} characters"
    return [click.option(f"--{flag}", name, multiple=True, metavar="A,B,...",
                         help=f"{s.help}: comma-separated, repeatable ({limits})"),
            click.option(f"--{flag}-file", f"{name}_file", metavar="PATH",
                         type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help=f"--{flag} from a file, one a line")]


def option_flags(cls: type) -> Callable:
    """A decorator adding one flag per job field of `cls` (two for a list option)."""
    def decorate(f: Callable) -> Callable:
        for fld in reversed(job_fields(cls)):
            s = spec(fld)
            if s.kind is tuple:
                for flag in reversed(_list_flags(fld.name, s)):
                    f = flag(f)
                continue
            f = click.option(f"--{fld.name.replace('_', '-')}", fld.name, type=_click_type(s),
                             default=default_of(fld), show_default=True, help=s.help)(f)
        return f
    return decorate


def chosen(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop `cls`'s flags from a command's keyword arguments: those the user gave."""
    ctx = click.get_current_context()
    values = {}
    for fld in job_fields(cls):
        if spec(fld).kind is tuple:
            items = _list_items(kwargs.pop(fld.name, ()), kwargs.pop(f"{fld.name}_file", None))
            if items:
                values[fld.name] = items
        elif fld.name in kwargs and ctx.get_parameter_source(fld.name) not in (
                None, ParameterSource.DEFAULT):
            values[fld.name] = kwargs.pop(fld.name)
        else:
            kwargs.pop(fld.name, None)
    return values


def _list_items(given: tuple[str, ...], path: Path | None) -> tuple[str, ...]:
    """The items of comma-separated flag values and of a file, one a line, blanks skipped."""
    items = [item for value in given for item in value.split(",")]
    if path is not None:
        items += path.read_text(encoding="utf-8").splitlines()
    return tuple(item.strip() for item in items if item.strip())
