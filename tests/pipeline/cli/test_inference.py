"""`speechq asr` and `speechq tts` on tiny random checkpoints: formats, line files, bad input."""

import json

import soundfile as sf
from click.testing import CliRunner

from pipeline.cli.inference import asr_cmd, tts_cmd
from pipeline.inference.options import RecognitionOptions
from tests.helpers import make_tiny_asr_checkpoint, make_tiny_tts_checkpoint, write_noise_wav


def test_asr_jsonl_reports_bad_files_and_transcribes_the_rest(tmp_path):
    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    good = [write_noise_wav(tmp_path / f"{i}.wav", seconds=1.0 + i, seed=i) for i in range(2)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    result = CliRunner().invoke(asr_cmd, [str(good[0]), str(bad), str(good[1]), "--model", str(model),
                                          "--format", "jsonl", "--beam-size", "2"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["audio"] for line in lines] == [str(good[0]), str(bad), str(good[1])]
    assert "error" in lines[1] and "text" not in lines[1]
    for line in (lines[0], lines[2]):
        assert {"text", "words", "duration"} <= set(line)
        times = [(w["start"], w["end"]) for w in line["words"]]
        assert all(0 <= a <= b <= line["duration"] + 0.1 for a, b in times)


def test_asr_writes_subtitles_per_input(tmp_path):
    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    wav = write_noise_wav(tmp_path / "clip.wav", seconds=2.0)
    out = tmp_path / "subs"
    result = CliRunner().invoke(asr_cmd, [str(wav), "--model", str(model), "--format", "vtt",
                                          "--decoder", "ctc", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "clip.vtt").read_text().startswith("WEBVTT")


def test_tts_text_and_line_file(tmp_path):
    model = make_tiny_tts_checkpoint(tmp_path / "tts.pt")
    runner = CliRunner()
    result = runner.invoke(tts_cmd, ["Hello there.", "-o", str(tmp_path / "one.wav"), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "one.wav")).duration > 0.1

    lines = tmp_path / "lines.txt"
    lines.write_text("First line.\n\nThird line here.\n")
    out = tmp_path / "wavs"
    result = runner.invoke(tts_cmd, ["--file", str(lines), "--out-dir", str(out), "--model", str(model)])
    assert result.exit_code == 1  # line 2 is empty
    assert sorted(p.name for p in out.glob("*.wav")) == ["0001.wav", "0003.wav"]
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert "empty" in records[1]["error"]


def test_tts_refuses_empty_and_over_long_text(tmp_path):
    model = make_tiny_tts_checkpoint(tmp_path / "tts.pt")
    runner = CliRunner()
    empty = runner.invoke(tts_cmd, ["   ", "-o", str(tmp_path / "x.wav"), "--model", str(model)])
    assert empty.exit_code != 0 and "empty" in empty.output
    long = runner.invoke(tts_cmd, ["word " * 1000, "-o", str(tmp_path / "x.wav"), "--model", str(model)])
    assert long.exit_code != 0 and "limit" in long.output


def test_asr_lexicon_flags(tmp_path):
    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    wav = write_noise_wav(tmp_path / "clip.wav", seconds=1.0)
    (tmp_path / "lex.txt").write_text("cat\ndog\n")
    for flags in (["--lexicon", str(tmp_path / "lex.txt"), "--lexicon-weight", "2", "--rare-word-weight", "1"],
                  ["--no-lexicon"]):
        result = CliRunner().invoke(asr_cmd, [str(wav), "--model", str(model), "--beam-size", "2", *flags])
        assert result.exit_code == 0, result.output
    (tmp_path / "empty.txt").write_text("# made: never\n")
    result = CliRunner().invoke(asr_cmd, [str(wav), "--model", str(model), "--lexicon", str(tmp_path / "empty.txt")])
    assert result.exit_code == 1 and "empty lexicon" in result.output


def test_asr_view_and_rescoring_flags_reach_the_recogniser(tmp_path, monkeypatch):
    from pipeline.inference.recognizer import Recognizer

    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    wav = write_noise_wav(tmp_path / "clip.wav", seconds=1.0)
    seen = []
    transcribe = Recognizer.transcribe_batch
    monkeypatch.setattr(Recognizer, "transcribe_batch",
                        lambda self, audios, options: seen.append(options) or transcribe(self, audios, options))
    runner = CliRunner()
    result = runner.invoke(asr_cmd, [str(wav), "--model", str(model), "--beam-size", "2", "--tempo-views", "0",
                                     "--shift-views", "2", "--r2l-weight", "0.4"])
    assert result.exit_code == 0, result.output
    assert seen[-1].tempo_views == 0 and seen[-1].shift_views == 2 and seen[-1].r2l_weight == 0.4
    assert seen[-1].beam_size == 2 and seen[-1].tempo == RecognitionOptions.tempo  # not given
    bad = runner.invoke(asr_cmd, [str(wav), "--model", str(model), "--tempo-views", "0.5"])
    assert bad.exit_code == 2 and "tempo-views" in bad.output


def test_asr_speaker_adapt_decodes_every_input_in_one_adapted_call(tmp_path, monkeypatch):
    from pipeline.cli.inference import asr_cmd
    from pipeline.inference.recognizer import Recognizer

    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    wavs = [str(write_noise_wav(tmp_path / f"clip{i}.wav", seconds=1.0, seed=i)) for i in range(3)]
    calls = []
    transcribe = Recognizer.transcribe_batch
    monkeypatch.setattr(Recognizer, "transcribe_batch", lambda self, audios, options:
                        calls.append((len(audios), options)) or transcribe(self, audios, options))
    args = [*wavs, "--model", str(model), "--beam-size", "2", "--batch-size", "2", "--format", "jsonl"]
    result = CliRunner().invoke(asr_cmd, args + ["--speaker-adapt-steps", "7"])
    assert result.exit_code == 0, result.output
    assert [n for n, _ in calls] == [3]
    assert calls[0][1].speaker_adapt_steps == 7
    assert [json.loads(line)["audio"] for line in result.output.splitlines()] == wavs
    calls.clear()
    assert CliRunner().invoke(asr_cmd, args).exit_code == 0
    assert [n for n, _ in calls] == [2, 1] and calls[0][1].speaker_adapt_steps == 0


def test_asr_hotwords_flags_reach_the_recogniser(tmp_path, monkeypatch):
    from pipeline.inference.recognizer import Recognizer

    runner = CliRunner()
    help_text = runner.invoke(asr_cmd, ["--help"]).output
    assert "--hotwords A,B,..." in help_text and "--hotwords-file PATH" in help_text
    assert "--hotword-weight" in help_text
    model = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    wav = write_noise_wav(tmp_path / "clip.wav", seconds=1.0)
    (tmp_path / "names.txt").write_text("Okonkwo\nnew york\n")
    seen = []
    transcribe = Recognizer.transcribe_batch
    monkeypatch.setattr(Recognizer, "transcribe_batch",
                        lambda self, audios, options: seen.append(options) or transcribe(self, audios, options))
    result = runner.invoke(asr_cmd, [str(wav), "--model", str(model), "--beam-size", "2",
                                     "--hotwords", "birch,canoe", "--hotwords-file", str(tmp_path / "names.txt"),
                                     "--hotword-weight", "4"])
    assert result.exit_code == 0, result.output
    assert seen[-1].hotwords == ("birch", "canoe", "Okonkwo", "new york") and seen[-1].hotword_weight == 4
    bad = runner.invoke(asr_cmd, [str(wav), "--model", str(model), "--decoder", "ctc", "--hotwords", "birch"])
    assert bad.exit_code == 2 and "hotwords need decoder 'attention'" in bad.output


def test_tts_writes_the_format_and_voice_asked_for(tmp_path):
    from pipeline.cli.inference import voices_cmd

    model = make_tiny_tts_checkpoint(tmp_path / "multi.pt", speakers=["flite-slt", "flite-awb"])
    out = tmp_path / "hi.mp3"
    result = CliRunner().invoke(tts_cmd, ["Hello there.", "--model", str(model), "--voice", "awb",
                                          "--format", "mp3", "--sample-rate", "24000", "-o", str(out)])
    assert result.exit_code == 0, result.output
    info = sf.info(out)
    assert info.format == "MP3" and info.samplerate == 24000
    result = CliRunner().invoke(tts_cmd, ["Hello there.", "--model", str(model), "--voice", "rms"])
    assert result.exit_code != 0 and "voice must be one of slt, awb" in result.output
    result = CliRunner().invoke(tts_cmd, ["Hi.", "--model", str(model), "--format", "opus",
                                          "--sample-rate", "22050"])
    assert result.exit_code != 0 and "opus" in result.output

    lines = CliRunner().invoke(voices_cmd, ["--model", str(model)]).output.splitlines()
    assert [line.split()[0] for line in lines] == ["slt", "awb"]
    listed = json.loads(CliRunner().invoke(voices_cmd, ["--model", str(model), "--json"]).output)
    assert [v["voice"] for v in listed] == ["slt", "awb"]
