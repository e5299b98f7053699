"""`speechq` commands that need no queue: corpus building, training, local inference.

The `speechq` group itself lives in `workers.cli`, which adds the service commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("text-corpus")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="text file to write")
@click.option("--min-words", default=3, show_default=True)
@click.option("--max-words", default=24, show_default=True)
def text_corpus_cmd(out: Path, min_words: int, max_words: int) -> None:
    """Write the training text: WordNet example sentences, disjoint from the Harvard sentences."""
    from pipeline import corpus

    lines = corpus.build_training_text(corpus.read_harvard(), min_words, max_words)
    corpus.write_lines(out, lines)
    click.echo(json.dumps({"out": str(out), **corpus.corpus_stats(lines)}))


@click.command("corpus")
@click.option("--text", "text_file", type=click.Path(exists=True, path_type=Path), required=True,
              help="one sentence a line")
@click.option("--voices", default=",".join(("slt", "awb", "rms", "kal16", "en-us", "en-gb+f2")),
              show_default=True, help="comma-separated: flite kal16/awb/rms/slt, espeak-ng en-us[+variant]")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--limit", type=int, default=None, help="use only the first N lines")
@click.option("--offset", type=int, default=0, show_default=True, help="skip the first N lines")
@click.option("--spread", is_flag=True, help="one voice per line (round robin) instead of every voice per line")
@click.option("--workers", default=2, show_default=True)
def corpus_cmd(text_file: Path, voices: str, out: Path, limit: int | None, offset: int,
               spread: bool, workers: int) -> None:
    """Speak a text file with espeak-ng and flite voices into wavs and manifest.jsonl."""
    from pipeline import corpus

    try:
        chosen = [corpus.Voice.parse(v.strip()) for v in voices.split(",") if v.strip()]
    except corpus.CorpusError as e:
        raise click.UsageError(str(e)) from None
    lines = [s.strip() for s in text_file.read_text().splitlines() if s.strip()]
    lines = lines[offset: None if limit is None else offset + limit]
    try:
        manifest, written = corpus.build_corpus(lines, chosen, out, spread=spread, workers=workers,
                                                progress=sys.stderr.isatty())
    except corpus.CorpusError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"manifest": str(manifest), "written": written}))


def _train_options(f):
    """Options every `speechq train` recipe shares (pipeline.training.TrainConfig)."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory"),
        click.option("--max-steps", default=20_000, show_default=True),
        click.option("--max-minutes", type=float, default=None, help="stop after this much wall time"),
        click.option("--lr", "peak_lr", default=1e-3, show_default=True, help="peak learning rate"),
        click.option("--warmup", "warmup_steps", default=1_000, show_default=True),
        click.option("--eval-every", default=500, show_default=True),
        click.option("--save-every", default=500, show_default=True),
        click.option("--device", default="cpu", show_default=True),
        click.option("--threads", type=int, default=None, help="torch CPU threads"),
        click.option("--seed", default=0, show_default=True),
        click.option("--no-resume", is_flag=True, help="start over even if OUT holds a checkpoint"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _train_config(kwargs: dict):
    from pipeline.training import TrainConfig

    keys = ("max_steps", "max_minutes", "peak_lr", "warmup_steps", "eval_every", "save_every",
            "device", "threads", "seed")
    return TrainConfig(**{k: kwargs.pop(k) for k in keys})


@click.group("train")
def train_group() -> None:
    """Train a model with one of the recipes."""


@train_group.command("tts-nat")
@click.option("--manifest", type=click.Path(exists=True), required=True)
@click.option("--speaker", default="flite-slt", show_default=True)
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="take durations from this autoregressive model's attention instead of flite's phones")
@click.option("--batch-frames", default=12_000, show_default=True)
@click.option("--limit", type=int, default=None, help="train on the first N utterances only")
@_train_options
def train_tts_nat_cmd(manifest, speaker, teacher, batch_frames, limit, out, no_resume, **kwargs):
    """Train the non-autoregressive (FastSpeech) TTS model."""
    from pipeline.train_tts import FastSpeechTask, TTSDataConfig
    from pipeline.training import Trainer

    config = _train_config(kwargs)
    if teacher:
        raise click.UsageError("--teacher needs the autoregressive model (not built yet)")
    data = TTSDataConfig(manifest=manifest, speaker=speaker, max_batch_frames=batch_frames, limit=limit)
    task = FastSpeechTask(data, seed=config.seed, device=config.device)
    metrics = Trainer(task, config, out).fit(resume=not no_resume)
    click.echo(json.dumps({"out": str(out), "eval": metrics}))


COMMANDS = [text_corpus_cmd, corpus_cmd, train_group]
