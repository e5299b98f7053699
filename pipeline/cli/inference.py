"""`speechq asr` and `speechq tts`: local inference without the queue."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli.options import chosen, option_flags
from pipeline.frontend.codecs import SUFFIXES, EncoderError
from pipeline.inference.formats import render
from pipeline.inference.options import RecognitionOptions, TTSOptions, with_overrides


def _echo_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


@click.command("asr")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="ASR checkpoint (default: the shipped one)")
@click.option("--lm", "lm_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="language model for beam search (default: the shipped one, where it fits the model)")
@click.option("--no-lm", is_flag=True, help="decode without a language model")
@click.option("--lexicon", "lexicon_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="word list for beam search (default: the shipped one)")
@click.option("--no-lexicon", is_flag=True, help="decode without a word list")
@click.option("--word-lm", "word_lm_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="word n-gram model, ARPA or Sphinx binary (default: pocketsphinx's English one)")
@click.option("--no-word-lm", is_flag=True, help="decode without a word n-gram model")
@option_flags(RecognitionOptions)
@click.option("--format", "fmt", type=click.Choice(["txt", "jsonl", "srt", "vtt"]), default="txt",
              show_default=True)
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="write <stem>.<format> per input here instead of printing")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", default=16, show_default=True,
              help="inputs decoded together (with --speaker-adapt-steps: all of them)")
def asr_cmd(files, model, lm_path, no_lm, lexicon_path, no_lexicon, word_lm_path, no_word_lm, fmt,
            output_dir, device, batch_size, **decoding):
    """Transcribe audio files. A file that cannot be read is reported and the others still run;
    the exit status is 1 if any failed."""
    from pipeline.checkpoints import CheckpointError
    from pipeline.data.lexicon import LexiconError
    from pipeline.frontend.audio import AudioError
    from pipeline.inference.recognizer import Recognizer
    from pipeline.inference.wordlm import WordLMError

    try:
        options = with_overrides(RecognitionOptions(), chosen(RecognitionOptions, decoding))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        recognizer = Recognizer.load(model, device=device, lm=False if no_lm else lm_path,
                                     lexicon=False if no_lexicon else lexicon_path,
                                     word_lm=False if no_word_lm else word_lm_path)
    except (CheckpointError, LexiconError, WordLMError) as e:
        raise click.ClickException(str(e)) from None
    if options.speaker_adapt_steps:
        batch_size = len(files)  # one call: the adaptation learns from every input
    failed = 0
    for start in range(0, len(files), batch_size):
        chunk = files[start: start + batch_size]
        loaded = {}
        for path in chunk:
            try:
                loaded[path] = recognizer.load_audio(path)
            except AudioError as e:
                loaded[path] = e
        good = [p for p in chunk if not isinstance(loaded[p], Exception)]
        transcripts = dict(zip(good, recognizer.transcribe_batch([loaded[p] for p in good], options)))
        for path in chunk:
            if path in transcripts:
                _emit(path, transcripts[path].to_dict(), fmt, output_dir, len(files))
            else:
                failed += 1
                if fmt == "jsonl":
                    click.echo(json.dumps({"audio": str(path), "error": str(loaded[path])}))
                _echo_error(str(loaded[path]))
    sys.exit(1 if failed else 0)


def _emit(path: Path, transcript: dict, fmt: str, output_dir: Path | None, n_inputs: int) -> None:
    record = {"audio": str(path), **transcript}
    if fmt == "jsonl":
        text = json.dumps(record) + "\n"
    else:
        text = render(transcript, fmt)
        if fmt == "txt" and n_inputs > 1 and output_dir is None:
            text = f"{path}\t{text}"
    if output_dir is None:
        click.echo(text, nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{path.stem}.{'json' if fmt == 'jsonl' else fmt}").write_text(text)


@click.command("tts")
@click.argument("text", required=False)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="file to write for TEXT (default: out.wav, or out.<format>)")
@click.option("--file", "lines_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="synthesise every line of this file instead")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="with --file: DIR/0001.wav ... (1-based line numbers, the --format's "
                   "suffix) and DIR/manifest.jsonl")
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="TTS checkpoint (default: the shipped one for --decoder and --attention)")
@option_flags(TTSOptions)
@click.option("--griffin-lim-iters", default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def tts_cmd(text, output, lines_file, out_dir, model, griffin_lim_iters, device, **synthesis):
    """Synthesise TEXT into a wav, or every line of --file into --out-dir."""
    from pipeline.checkpoints import CheckpointError
    from pipeline.frontend.text import TextError
    from pipeline.inference.synthesizer import Synthesizer

    if (text is None) == (lines_file is None):
        raise click.UsageError("give either TEXT or --file")
    if lines_file is not None and out_dir is None:
        raise click.UsageError("--file needs --out-dir")
    try:
        options = with_overrides(TTSOptions(), chosen(TTSOptions, synthesis))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        synth = Synthesizer.load(model, device, griffin_lim_iters, decoder=options.decoder,
                                 attention=options.attention)
        synth.voice_index(options.voice)
    except (CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if text is not None:
        output = output or Path("out" + SUFFIXES[options.format])
        try:
            result = synth.synthesize(text, options.speed, options.voice)
            _write_audio(output, result, options)
        except (TextError, ValueError, EncoderError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps({"audio": str(output), "duration": round(result.duration, 3),
                               "hit_length_cap": result.hit_length_cap}))
        return
    failed = _synthesize_lines(synth, lines_file, out_dir, options)
    sys.exit(1 if failed else 0)


def _write_audio(path: Path, result, options: TTSOptions) -> None:
    """The synthesis in the options' format and rate, written whole (a rename) or not at all."""
    from pipeline.frontend.codecs import encode

    data = encode(result.wav.numpy(), result.sample_rate, options.format, options.sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@click.command("voices")
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="TTS checkpoint (default: the shipped NAT model)")
@click.option("--json", "as_json", is_flag=True, help="one JSON list instead of lines")
def voices_cmd(model, as_json):
    """The voices, one a line: the name, then its measured intelligibility (PocketSphinx WER
    on the Harvard sentences, and that of the voice it learnt from), from the checkpoint."""
    from pipeline.checkpoints import CheckpointError, default_checkpoint, load_checkpoint
    from pipeline.inference.synthesizer import voice_records

    try:
        ckpt = load_checkpoint(model or default_checkpoint("tts-nat"), kinds=("tts-nat", "tts-ar"))
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
    records = voice_records(ckpt)
    if as_json:
        click.echo(json.dumps(records))
        return
    for r in records:
        scores = " ".join(f"{k}={v}" for k, v in r.items() if k != "voice" and v is not None)
        click.echo(f"{r['voice']}\t{scores}".rstrip())


def _synthesize_lines(synth, lines_file: Path, out_dir: Path, options: TTSOptions) -> int:
    from pipeline.frontend.text import TextError

    out_dir.mkdir(parents=True, exist_ok=True)
    records, failed = [], 0
    for number, line in enumerate(lines_file.read_text().splitlines(), 1):
        wav_path = out_dir / f"{number:04d}{SUFFIXES[options.format]}"
        try:
            result = synth.synthesize(line, options.speed, options.voice)
            _write_audio(wav_path, result, options)
        except (TextError, ValueError, EncoderError) as e:
            failed += 1
            records.append({"line": number, "text": line, "error": str(e)})
            _echo_error(f"line {number}: {e}")
            continue
        records.append({"line": number, "text": line, "audio": wav_path.name,
                        "duration": round(result.duration, 3), "hit_length_cap": result.hit_length_cap})
    (out_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return failed


COMMANDS = [asr_cmd, tts_cmd, voices_cmd]
