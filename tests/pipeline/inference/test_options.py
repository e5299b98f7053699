"""The one declaration of job options, and what is derived from it: click flags and their help."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import click
import pytest
from click.testing import CliRunner

from pipeline.cli.options import chosen, option_flags
from pipeline.inference.options import (
    RecognitionOptions,
    TTSOptions,
    job_fields,
    requested,
    spec,
    with_overrides,
)


def test_every_field_has_a_range_and_help_and_its_default_is_legal():
    for cls in (RecognitionOptions, TTSOptions):
        for f in fields(cls):
            s = spec(f)
            assert s.help and s.describe()
            assert s.allows(f.default), f.name
        cls()  # the defaults pass the class's own checks


@pytest.mark.parametrize("overrides, message", [
    ({"beam_size": 0}, "beam_size must be an integer from 1 to 16, not 0"),
    ({"beam_size": 2.0}, "beam_size must be an integer"),
    ({"ctc_weight": 1.5}, "ctc_weight must be a number from 0 to 1, not 1.5"),
    ({"tempo_views": 0.5}, "tempo_views must be a number from 0 to below 0.5"),
    ({"lm_weight": float("nan")}, "lm_weight must be a number"),
    ({"lm_weight": True}, "lm_weight must be a number"),
    ({"decoder": "greedy"}, "decoder must be one of 'attention', 'ctc', not 'greedy'"),
    ({"hotwords": "okonkwo"}, ("hotwords must be a list of at most 1000 strings, each of 1 to "
                               "100 characters, not 'okonkwo'")),
    ({"hotwords": ["okonkwo", " "]}, "hotwords must be a list .*, not ' '"),
    ({"hotwords": ["x" * 101]}, "hotwords must be a list"),
    ({"hotwords": ["a"] * 1001}, "hotwords must be a list .*, not 1001 of them"),
    ({"hotwords": [3]}, "hotwords must be a list .*, not 3"),
    ({"hotword_weight": 21}, "hotword_weight must be a number from 0 to 20, not 21"),
    ({"hotwords": ["okonkwo"], "decoder": "ctc"}, "hotwords need decoder 'attention'"),
])
def test_a_bad_value_is_refused_with_the_fields_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        RecognitionOptions(**overrides)


def test_tts_options_check_what_goes_together():
    assert TTSOptions(decoder="ar", attention="dot").attention == "dot"
    with pytest.raises(ValueError, match="attention applies to decoder 'ar'"):
        TTSOptions(attention="dot")
    with pytest.raises(ValueError, match="speed control needs decoder 'nat'"):
        TTSOptions(decoder="ar", speed=2.0)


def test_overrides_refuse_what_a_job_may_not_set_and_keep_what_the_client_set():
    base = RecognitionOptions(beam_size=4)
    assert with_overrides(base, {"tempo": 1, "lm_weight": None}) == RecognitionOptions(beam_size=4, tempo=1.0)
    with pytest.raises(ValueError, match="unknown option batch_frames"):
        with_overrides(base, {"batch_frames": 8})  # the worker's choice, not a job's
    with pytest.raises(ValueError, match="unknown options nope, other"):
        with_overrides(base, {"nope": 1, "other": 2})
    assert requested(RecognitionOptions, {"beam_size": 2, "tempo": None}) == {"beam_size": 2}
    with pytest.raises(ValueError, match="shift_views"):
        requested(RecognitionOptions, {"shift_views": 9})


def test_equal_options_hash_equal_so_jobs_batch_together():
    assert hash(RecognitionOptions(lm_weight=1)) == hash(RecognitionOptions(lm_weight=1.0))
    assert len({RecognitionOptions(), RecognitionOptions(beam_size=16), RecognitionOptions(tempo=1)}) == 2


def test_hotwords_are_a_tuple_whether_given_as_a_list_or_read_back_from_json():
    options = RecognitionOptions(hotwords=["okonkwo", "new york"])
    assert options.hotwords == ("okonkwo", "new york") and RecognitionOptions().hotwords == ()
    chosen = requested(RecognitionOptions, {"hotwords": ("okonkwo", "new york")})
    assert chosen == {"hotwords": ["okonkwo", "new york"]}  # as the job's JSON holds it
    stored = json.loads(json.dumps({"options": chosen}))["options"]
    assert with_overrides(RecognitionOptions(), stored) == options
    assert hash(with_overrides(RecognitionOptions(), stored)) == hash(options)  # they batch together


def test_the_declaration_loads_without_torch():
    code = "import sys, pipeline.inference.options, pipeline.cli.options; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _command(cls):
    @click.command()
    @option_flags(cls)
    def command(**kwargs):
        click.echo(repr(sorted(chosen(cls, kwargs).items())))
    return command


def test_flags_are_derived_with_their_ranges_and_real_defaults():
    runner = CliRunner()
    help_text = runner.invoke(_command(RecognitionOptions), ["--help"]).output
    for f in job_fields(RecognitionOptions):
        assert f"--{f.name.replace('_', '-')}" in help_text
    assert "--batch-frames" not in help_text  # not a job option
    assert "[default: 16; 1<=x<=16]" in help_text and "RecognitionOptions" not in help_text
    out = runner.invoke(_command(RecognitionOptions), ["--beam-size", "4", "--tempo", "1"])
    assert out.exit_code == 0 and out.output.strip() == "[('beam_size', 4), ('tempo', 1.0)]"
    assert runner.invoke(_command(RecognitionOptions), []).output.strip() == "[]"
    bad = runner.invoke(_command(RecognitionOptions), ["--beam-size", "17"])
    assert bad.exit_code == 2 and "1<=x<=16" in bad.output
    tts = runner.invoke(_command(TTSOptions), ["--decoder", "ar", "--attention", "dot"])
    assert tts.output.strip() == "[('attention', 'dot'), ('decoder', 'ar')]"


def test_a_list_option_is_comma_separated_flags_and_a_file_one_a_line(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(_command(RecognitionOptions), ["--help"]).output
    assert "--hotwords A,B,..." in help_text and "--hotwords-file PATH" in help_text
    (tmp_path / "names.txt").write_text("Okonkwo Achebe\n\n  zalbrentine  \n")
    out = runner.invoke(_command(RecognitionOptions),
                        ["--hotwords", "new york, okonkwo", "--hotwords", "ada",
                         "--hotwords-file", str(tmp_path / "names.txt")])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == ("[('hotwords', ('new york', 'okonkwo', 'ada', 'Okonkwo Achebe', "
                                  "'zalbrentine'))]")
    assert runner.invoke(_command(RecognitionOptions), ["--hotwords", " , "]).output.strip() == "[]"
    missing = runner.invoke(_command(RecognitionOptions), ["--hotwords-file", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
