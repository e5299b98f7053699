"""`speechq` commands that need no queue: corpus building, training, local inference.

The `speechq` group itself lives in `workers.cli`, which adds the service commands.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.command("text-corpus")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="text file to write")
@click.option("--min-words", default=3, show_default=True)
@click.option("--max-words", default=24, show_default=True)
@click.option("--glosses", is_flag=True,
              help="add WordNet's definitions (text for the language model, not prompts)")
@click.option("--cover", type=click.Path(exists=True, path_type=Path), default=None,
              help="write only lines (examples and definitions) that teach the words this text has "
                   "fewer than --target times")
@click.option("--target", default=3, show_default=True, help="with --cover: occurrences to reach")
@click.option("--limit", default=None, type=int, help="with --cover: at most this many lines")
@click.option("--short", default=None, type=click.IntRange(min=1),
              help="write this many short utterances instead (a word alone, two neighbouring "
                   "words, a number, a string of digits), made from the sentences' words")
def text_corpus_cmd(out: Path, min_words: int, max_words: int, glosses: bool, cover: Path | None,
                    target: int, limit: int | None, short: int | None) -> None:
    """Write the training text: WordNet example sentences, disjoint from the Harvard sentences."""
    from pipeline.data import corpus

    if cover is None and limit is not None:
        raise click.BadParameter("--limit needs --cover", param_hint="--limit")
    if short is not None and cover is not None:
        raise click.BadParameter("--short and --cover write different texts: give one",
                                 param_hint="--short")
    lines = corpus.build_training_text(corpus.read_harvard(), min_words, max_words,
                                       glosses or cover is not None)
    if short is not None:
        lines = corpus.short_utterances(lines, short)
    elif cover is not None:
        lines = corpus.cover_vocabulary(lines, cover.read_text().splitlines(), target=target, limit=limit)
    corpus.write_lines(out, lines)
    click.echo(json.dumps({"out": str(out), **corpus.corpus_stats(lines)}))


@click.command("lexicon")
@click.option("--text", "text_files", type=click.Path(exists=True, path_type=Path), multiple=True,
              required=True, help="training text, one sentence a line (repeatable)")
@click.option("--dictionary", "dictionaries", type=click.Path(exists=True, path_type=Path),
              multiple=True, help="a pronouncing dictionary to add (default: CMUdict from pocketsphinx)")
@click.option("--no-cmudict", is_flag=True, help="the text's words only")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="word list to write")
def lexicon_cmd(text_files: tuple[Path, ...], dictionaries: tuple[Path, ...], no_cmudict: bool,
                out: Path) -> None:
    """Write the recogniser's word list: the training text's words with their counts, and a
    dictionary's (count 0: rare words to the recogniser)."""
    from pipeline.data import lexicon

    given = dictionaries
    try:
        if not dictionaries and not no_cmudict:
            dictionaries = (lexicon.cmudict_path(),)
        lines = [line for path in text_files for line in path.read_text().splitlines()]
        words = lexicon.build_lexicon(lines, dictionaries)
    except lexicon.LexiconError as e:
        raise click.ClickException(str(e)) from None
    command = ["speechq lexicon", *(f"--text {t}" for t in text_files),
               *(f"--dictionary {d}" for d in given), *(["--no-cmudict"] if no_cmudict else []),
               f"--out {out}"]
    provenance = {"command": " ".join(command),
                  "sources": ", ".join([*map(str, text_files), *map(lexicon.describe_source, dictionaries)]),
                  "made": time.strftime("%Y-%m-%d %H:%M %Z")}
    n = lexicon.write_lexicon(out, words, provenance)
    click.echo(json.dumps({"out": str(out), "words": n, "dictionary_only": sum(c == 0 for c in words.values()),
                           "dictionaries": [str(d) for d in dictionaries]}))


@click.command("corpus")
@click.option("--text", "text_file", type=click.Path(exists=True, path_type=Path), required=True,
              help="one sentence a line")
@click.option("--voices", default=",".join(("slt", "awb", "rms", "kal16", "en-us", "en-gb+f2")),
              show_default=True,
              help="comma-separated: flite kal16/awb/rms/slt, espeak-ng en-us[+variant] or its "
                   "MBROLA voices mb-us1/us2/us3/en1, SVOX Pico pico:en-US/en-GB")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--limit", type=int, default=None, help="use only the first N lines")
@click.option("--offset", type=int, default=0, show_default=True, help="skip the first N lines")
@click.option("--spread", is_flag=True, help="one voice per line (round robin) instead of every voice per line")
@click.option("--prosody", "prosody_spread", default=0.0, show_default=True,
              help="vary each utterance's tempo and mean pitch by factors up to 1+S either way")
@click.option("--workers", default=2, show_default=True)
def corpus_cmd(text_file: Path, voices: str, out: Path, limit: int | None, offset: int,
               spread: bool, prosody_spread: float, workers: int) -> None:
    """Speak a text file with espeak-ng, flite and Pico voices into wavs and manifest.jsonl."""
    from pipeline.data import corpus

    try:
        chosen = [corpus.Voice.parse(v.strip()) for v in voices.split(",") if v.strip()]
    except corpus.CorpusError as e:
        raise click.UsageError(str(e)) from None
    lines = [s.strip() for s in text_file.read_text().splitlines() if s.strip()]
    lines = lines[offset: None if limit is None else offset + limit]
    try:
        manifest, written = corpus.build_corpus(lines, chosen, out, spread=spread, workers=workers,
                                                progress=sys.stderr.isatty(),
                                                prosody_spread=prosody_spread)
    except corpus.CorpusError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"manifest": str(manifest), "written": written}))


@click.command("recorded-corpus")
@click.option("--source", type=click.Choice(["asterisk"]), default="asterisk", show_default=True,
              help="the collection of recorded speech (pipeline.data.recorded)")
@click.option("--out", type=click.Path(path_type=Path), required=True)
def recorded_corpus_cmd(source: str, out: Path) -> None:
    """Write a manifest of recorded human speech that a Debian package ships (its audio stays
    where the package put it)."""
    from pipeline.data import recorded
    from pipeline.data.manifests import read_manifest

    try:
        manifest = recorded.write_manifest(source, out)
    except recorded.RecordedError as e:
        raise click.ClickException(str(e)) from None
    utterances = read_manifest(manifest)
    click.echo(json.dumps({"manifest": str(manifest), "utterances": len(utterances),
                           "hours": round(sum(u.duration for u in utterances) / 3600, 3)}))


def _train_options(f):
    """Options every `speechq train` recipe shares (pipeline.train.loop.TrainConfig)."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory"),
        click.option("--max-steps", default=20_000, show_default=True),
        click.option("--max-minutes", type=float, default=None, help="stop after this much wall time"),
        click.option("--lr", "peak_lr", default=1e-3, show_default=True, help="peak learning rate"),
        click.option("--warmup", "warmup_steps", default=1_000, show_default=True),
        click.option("--eval-every", default=500, show_default=True),
        click.option("--save-every", default=500, show_default=True),
        click.option("--keep-snapshots", is_flag=True,
                     help="also keep each save's weights as OUT/snapshots/step-N.pt (for `speechq average`)"),
        click.option("--device", default="cpu", show_default=True),
        click.option("--threads", type=int, default=None, help="torch CPU threads"),
        click.option("--seed", default=0, show_default=True),
        click.option("--no-resume", is_flag=True, help="start over even if OUT holds a checkpoint"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _train_config(kwargs: dict):
    from pipeline.train.loop import TrainConfig

    keys = ("max_steps", "max_minutes", "peak_lr", "warmup_steps", "eval_every", "save_every",
            "keep_snapshots", "device", "threads", "seed")
    return TrainConfig(**{k: kwargs.pop(k) for k in keys})


@click.group("train")
def train_group() -> None:
    """Train a model with one of the recipes."""


@train_group.command("tts-nat")
@click.option("--manifest", type=click.Path(exists=True), required=True)
@click.option("--speaker", default="flite-slt", show_default=True,
              help="the voice; several, comma-separated, train one multi-speaker model")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="take durations from this autoregressive model's attention instead of flite's phones")
@click.option("--batch-frames", default=12_000, show_default=True)
@click.option("--limit", type=int, default=None, help="train on the first N utterances only")
@click.option("--init-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="start from this NAT checkpoint's weights and normalisation (the same units "
                   "and sizes; new speakers start as its voice)")
@_train_options
def train_tts_nat_cmd(manifest, speaker, teacher, batch_frames, limit, init_from, out, no_resume,
                      **kwargs):
    """Train the non-autoregressive (FastSpeech) TTS model."""
    from pipeline.checkpoints import load_checkpoint
    from pipeline.train.loop import Trainer
    from pipeline.train.tts_data import TTSDataConfig
    from pipeline.train.tts_nat import FastSpeechTask

    config = _train_config(kwargs)
    data = TTSDataConfig(manifest=manifest, speaker=speaker, max_batch_frames=batch_frames, limit=limit)
    init = load_checkpoint(init_from, kinds=("tts-nat",)) if init_from is not None else None
    try:
        task = FastSpeechTask(data, seed=config.seed, device=config.device, teacher=teacher,
                              init=init)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    metrics = Trainer(task, config, out).fit(resume=not no_resume)
    click.echo(json.dumps({"out": str(out), "eval": metrics, **task.duration_source}))


@train_group.command("tts")
@click.option("--manifest", type=click.Path(exists=True), required=True)
@click.option("--speaker", default="flite-slt", show_default=True)
@click.option("--attention", type=click.Choice(["dot", "location", "monotonic"]), default="dot",
              show_default=True, help="the decoder's cross-attention")
@click.option("--units", type=click.Choice(["phones", "chars"]), default="phones",
              show_default=True, help="flite phones or characters in")
@click.option("--reduction", "-r", default=2, show_default=True, help="mel frames per decoder step")
@click.option("--d-model", type=int, default=None, help="model width (TTSDims default if unset)")
@click.option("--layers", type=int, default=None, help="encoder and decoder layers each")
@click.option("--heads", type=int, default=None)
@click.option("--guided-weight", default=1.0, show_default=True,
              help="guided attention loss weight")
@click.option("--guided-sigma", default=0.2, show_default=True, help="its diagonal band width g")
@click.option("--scheduled-sampling", default=0.0, show_default=True,
              help="final rate of feeding back the model's own frames (0 = teacher forcing only)")
@click.option("--sampling-start", default=4_000, show_default=True)
@click.option("--batch-frames", default=12_000, show_default=True)
@click.option("--limit", type=int, default=None, help="train on the first N utterances only")
@click.option("--init-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="start from this AR checkpoint's weights (its units and sizes; --attention may "
                   "differ: a dot model warm-starts a monotonic one)")
@_train_options
def train_tts_cmd(manifest, speaker, attention, units, reduction, d_model, layers, heads,
                  guided_weight, guided_sigma, scheduled_sampling, sampling_start, batch_frames,
                  limit, init_from, out, no_resume, **kwargs):
    """Train the autoregressive Transformer-TTS model; attention plots go to OUT/attention."""
    import dataclasses

    import torch

    from models.tts import TTSDims, TTSLossOptions
    from pipeline.checkpoints import load_checkpoint
    from pipeline.train.loop import Trainer
    from pipeline.train.tts_ar import ARTrainOptions, TransformerTTSTask, default_dims
    from pipeline.train.tts_data import TTSDataConfig

    config = _train_config(kwargs)
    last = Path(out) / "last.pt"
    resuming = not no_resume and last.exists()
    start = load_checkpoint(init_from, kinds=("tts-ar",)) if init_from is not None else None
    try:
        # noisy energies push the monotonic variant's stay/move decisions towards 0 or 1
        attention_options = {"noise_std": 1.0} if attention == "monotonic" else {}
        if start is not None:  # the sizes are the starting checkpoint's
            dims = dataclasses.replace(TTSDims(**start["dims"]), cross_attention=attention,
                                       attention_options=attention_options)
        else:
            dims = default_dims(units, reduction=reduction, d_model=d_model, n_heads=heads,
                                n_encoder_layers=layers, n_decoder_layers=layers,
                                cross_attention=attention, attention_options=attention_options)
        loss = TTSLossOptions(guided_weight=guided_weight, guided_sigma=guided_sigma)
        options = ARTrainOptions(loss, scheduled_sampling=scheduled_sampling,
                                 sampling_start=sampling_start)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    data = TTSDataConfig(manifest=manifest, speaker=speaker, max_batch_frames=batch_frames,
                         limit=limit)
    try:
        task = TransformerTTSTask(data, dims, options, seed=config.seed, device=config.device,
                                  plot_dir=Path(out) / "attention", init=None if resuming else start)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if resuming:  # a warm-started run keeps its record
        task.init_record = torch.load(last, map_location="cpu", weights_only=False).get("initialised_from")
    metrics = Trainer(task, config, out).fit(resume=not no_resume)
    click.echo(json.dumps({"out": str(out), "eval": metrics}))


SHARE = click.FloatRange(0.0, 1.0)


def _snr_range(spec: str | None, flag: str = "--noise-augment") -> tuple[float, float] | None:
    if spec is None:
        return None
    try:
        low, high = (float(v) for v in spec.split(","))
    except ValueError:
        raise click.BadParameter(f"{spec!r} is not LOW,HIGH in dB", param_hint=flag) from None
    if low > high:
        raise click.BadParameter(f"LOW {low} is above HIGH {high}", param_hint=flag)
    return low, high


@train_group.command("asr")
@click.option("--manifest", "manifests", type=click.Path(exists=True), required=True, multiple=True,
              help="a corpus manifest (repeatable: the corpora are trained on together)")
@click.option("--text", type=click.Path(exists=True), default=None,
              help="tokenizer training text (default: the manifests' transcripts)")
@click.option("--vocab-size", default=500, show_default=True)
@click.option("--speakers", default=None, help="comma-separated speakers to train on (default: all)")
@click.option("--batch-frames", default=10_000, show_default=True, help="padded 10 ms frames per batch")
@click.option("--max-seconds", default=20.0, show_default=True,
              type=click.FloatRange(0.0, min_open=True),
              help="leave out utterances longer than this (recorded prompts far longer than the "
                   "corpus's sentences fill batches of their own and train poorly)")
@click.option("--attention", type=click.Choice(["dot", "location", "monotonic"]), default="dot",
              show_default=True)
@click.option("--d-model", default=192, show_default=True)
@click.option("--conv-channels", default=64, show_default=True, help="subsampling convolution width")
@click.option("--encoder-layers", default=8, show_default=True)
@click.option("--decoder-layers", default=3, show_default=True)
@click.option("--ctc-weight", default=0.3, show_default=True)
@click.option("--channel-augment", "channel_db", default=0.0, show_default=True,
              help="random equaliser per training utterance, up to this many dB (0: off)")
@click.option("--silence-augment", "silence_seconds", default=0.0, show_default=True,
              help="give each training utterance random leading and trailing silences of up to this "
                   "many seconds (0: keep the corpus's own)")
@click.option("--noise-augment", "noise_snr", default=None, metavar="LOW,HIGH",
              help="add coloured noise to a share (--noise-share) of the training utterances at an "
                   "SNR (mel power, dB) drawn from LOW-HIGH, e.g. 10,50 (default: none)")
@click.option("--noise-share", "noise_prob", default=0.5, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="the share of training utterances that --noise-augment adds noise to")
@click.option("--vtlp-augment", "vtlp", default=0.0, show_default=True,
              help="vocal tract length perturbation: scale each training utterance's frequency axis "
                   "by a random factor within 1 +- this (e.g. 0.1; 0: off)")
@click.option("--speed-augment", "speed", default=0.0, show_default=True,
              help="speed perturbation: each training utterance as if resampled to play at a random "
                   "speed within 1 +- this, pitch and formants with it (e.g. 0.1; 0: off)")
@click.option("--trim-augment", "trim_share", default=0.0, show_default=True, type=SHARE,
              help="share of training utterances whose leading and trailing silence is cut to "
                   "0-50 ms, so onsets are heard without a pause before them")
@click.option("--wave-speed", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="resample each training utterance's audio to play at a speed within 1 +- this")
@click.option("--pitch-augment", "pitch", default=0.0, show_default=True,
              type=click.FloatRange(0.0, 12.0),
              help="shift each training utterance's pitch by up to +- this many semitones, its "
                   "length kept (0: off)")
@click.option("--reverb-augment", "reverb_share", default=0.0, show_default=True, type=SHARE,
              help="share of training utterances heard in a generated room (RT60 0.15-0.8 s)")
@click.option("--wave-noise", "wave_noise_share", default=0.0, show_default=True, type=SHARE,
              help="share of training utterances given additive noise in the waveform, at an SNR "
                   "from --wave-snr: coloured noise, or babble of other utterances (--babble-share)")
@click.option("--wave-snr", default="5,30", show_default=True, metavar="LOW,HIGH",
              help="SNR range (dB) of --wave-noise")
@click.option("--babble-share", default=0.5, show_default=True, type=SHARE,
              help="of the utterances --wave-noise reaches, those whose noise is babble")
@click.option("--telephone-augment", "telephone_share", default=0.0, show_default=True, type=SHARE,
              help="share of training utterances sent through a telephone channel (300-3400 Hz, "
                   "8 kHz, a codec drawn from mu-law, A-law, GSM 06.10 and G.721 ADPCM)")
@click.option("--gain-augment", "gain_db", default=0.0, show_default=True, type=click.FloatRange(0.0, 40.0),
              help="random gain within +- this many dB before clipping (0: off)")
@click.option("--clip-augment", "clip_share", default=0.0, show_default=True, type=SHARE,
              help="share of training utterances clipped at 30-90%% of their peak")
@click.option("--repeat", "repeats", type=click.IntRange(1), multiple=True,
              help="per --manifest, in order: how many times an epoch its utterances are heard "
                   "(default 1 each; a small corpus of real speech beside a large synthetic one)")
@click.option("--loader-workers", default=0, show_default=True, type=click.IntRange(0, 64),
              help="processes that make the training batches (read, augment, featurise) beside "
                   "the training loop, for a GPU that waits on them; 0: the loop makes them")
@click.option("--reverse-weight", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="train a right-to-left decoder beside the other, with this share of the "
                   "attention loss; the recogniser rescores its hypotheses with it (0: none)")
@click.option("--r2l-only", is_flag=True,
              help="with --init-from: add a right-to-left decoder (a copy of the left-to-right "
                   "one) and train only it, the rest of the model frozen")
@click.option("--init-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="fine-tune this ASR checkpoint (its units, dims and weights) instead of starting fresh")
@click.option("--distil-weight", default=0.0, show_default=True, type=click.FloatRange(0.0),
              help="with --init-from: keep that model's outputs on the first --manifest's "
                   "utterances (speech it was trained on), adding this weight times the "
                   "divergence from them to the loss, while the others teach new speech (0: off)")
@_train_options
def train_asr_cmd(manifests, text, vocab_size, speakers, batch_frames, max_seconds, attention,
                  d_model, conv_channels, encoder_layers, decoder_layers, ctc_weight, channel_db,
                  silence_seconds, noise_snr, noise_prob, vtlp, speed, trim_share, wave_speed,
                  pitch, reverb_share, wave_noise_share, wave_snr, babble_share, telephone_share,
                  gain_db, clip_share, repeats, loader_workers, reverse_weight, r2l_only,
                  init_from, distil_weight, out, no_resume, **kwargs):
    """Train the joint CTC/attention Speech-Transformer."""
    from pipeline.train.asr import ASRDataConfig, ASRTask
    from pipeline.train.augment import WaveAugment
    from pipeline.train.loop import Trainer

    config = _train_config(kwargs)
    if repeats and len(repeats) != len(manifests):
        raise click.UsageError(f"--repeat: one per --manifest ({len(manifests)}), got {len(repeats)}")
    wave = WaveAugment(trim_share=trim_share, speed=wave_speed, pitch=pitch,
                       reverb_share=reverb_share, noise_share=wave_noise_share,
                       snr=_snr_range(wave_snr, "--wave-snr"),
                       babble_share=babble_share, telephone_share=telephone_share, gain_db=gain_db,
                       clip_share=clip_share)
    data = ASRDataConfig(manifest=manifests[0] if len(manifests) == 1 else manifests, text=text,
                         vocab_size=vocab_size,
                         speakers=tuple(speakers.split(",")) if speakers else None,
                         max_batch_frames=batch_frames, max_utterance_seconds=max_seconds,
                         ctc_weight=ctc_weight, channel_db=channel_db,
                         silence_seconds=silence_seconds, noise_snr=_snr_range(noise_snr),
                         noise_prob=noise_prob, vtlp=vtlp, speed=speed, wave=wave,
                         repeats=tuple(repeats) if repeats else None,
                         loader_workers=loader_workers,
                         reverse_weight=reverse_weight, r2l_only=r2l_only,
                         distil_weight=distil_weight)
    if r2l_only and init_from is None and not (Path(out) / "last.pt").exists():
        raise click.UsageError("--r2l-only trains a decoder for a trained model: give --init-from")
    if distil_weight > 0 and init_from is None:  # on resuming too: the teacher is that model
        raise click.UsageError("--distil-weight keeps the outputs of the --init-from model: "
                               "give it")
    import torch
    from pipeline.checkpoints import load_checkpoint

    tokenizer, init, init_record = None, None, None
    resuming = not no_resume and (Path(out) / "last.pt").exists()
    if resuming:
        from pipeline.frontend.tokenizer import SubwordTokenizer

        last = torch.load(Path(out) / "last.pt", map_location="cpu", weights_only=False)
        tokenizer = SubwordTokenizer.from_dict(last["tokenizer"])  # resume with the same units
        if "initialised_from" in last:  # a fine-tuning run keeps its stats and its record
            init, init_record = last, last["initialised_from"]
    elif init_from is not None:
        init = load_checkpoint(init_from, kinds=("asr",))
    teacher = None
    if distil_weight > 0:  # the --init-from model, which a resumed run's `init` no longer is
        teacher = load_checkpoint(init_from, kinds=("asr",)) if resuming else init
    try:
        task = ASRTask(data, seed=config.seed, device=config.device, tokenizer=tokenizer,
                       init=init, init_record=init_record, teacher=teacher,
                       dims_overrides=dict(d_model=d_model, conv_channels=conv_channels,
                                           n_encoder_layers=encoder_layers,
                                           n_decoder_layers=decoder_layers,
                                           cross_attention=attention))
    except ValueError as e:  # a corpus the recipe cannot train on
        raise click.ClickException(str(e)) from None
    metrics = Trainer(task, config, out).fit(resume=not no_resume)
    click.echo(json.dumps({"out": str(out), "eval": metrics}))


@train_group.command("lm")
@click.option("--text", type=click.Path(exists=True), required=True,
              help="training text, one sentence a line (data/text/train.txt)")
@click.option("--asr", "asr_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="the ASR checkpoint whose units the LM learns (default: the shipped one)")
@click.option("--batch-tokens", default=16_000, show_default=True, help="padded tokens per batch")
@click.option("--d-model", default=384, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--dropout", default=0.2, show_default=True)
@click.option("--limit", type=int, default=None, help="train on the first N lines only")
@_train_options
def train_lm_cmd(text, asr_path, batch_tokens, d_model, layers, dropout, limit, out, no_resume,
                 **kwargs):
    """Train the subword LSTM language model that `speechq asr` fuses into beam search."""
    from pipeline.checkpoints import default_checkpoint, load_checkpoint
    from pipeline.train.lm import LMDataConfig, LMTask
    from pipeline.train.loop import Trainer

    config = _train_config(kwargs)
    asr = load_checkpoint(asr_path or default_checkpoint("asr"), kinds=("asr",))
    task = LMTask(LMDataConfig(text=text, max_batch_tokens=batch_tokens, limit=limit), asr,
                  dims_overrides=dict(d_model=d_model, n_layers=layers, dropout=dropout),
                  seed=config.seed, device=config.device)
    metrics = Trainer(task, config, out).fit(resume=not no_resume)
    click.echo(json.dumps({"out": str(out), "eval": metrics}))


@click.command("export")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--command", "commands", multiple=True,
              help="the training command, for runs whose checkpoint does not record it")
@click.option("--scores", type=click.Path(exists=True, path_type=Path), default=None,
              help="a benchmark's JSON output to record as the checkpoint's scores")
@click.option("--fp32", is_flag=True, help="keep float32 weights (default: fp16)")
def export_cmd(src: Path, dst: Path, commands: tuple[str, ...], scores: Path | None, fp32: bool) -> None:
    """Turn a training checkpoint into a shippable one: no optimizer state, fp16 weights, and
    how it was made (commands, machine, hours, data) and what it scored."""
    import torch

    from pipeline.train.loop import describe_machine, export_checkpoint

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    provenance = dict(ckpt.get("provenance") or {})
    if commands:
        provenance["commands"] = list(commands)
    provenance.setdefault("machine", describe_machine())  # runs that predate the record
    if "progress" in ckpt:  # an average has none: its inputs' hours are in averaged_from
        provenance["training_hours"] = round(ckpt["progress"].get("elapsed_seconds", 0) / 3600, 2)
    extra = {"provenance": provenance}
    if scores is not None:
        lines = scores.read_text().strip().splitlines()
        extra["scores"] = json.loads(lines[-1])
    export_checkpoint(src, dst, half=not fp32, **extra)
    size = dst.stat().st_size / 2**20
    click.echo(json.dumps({"out": str(dst), "mb": round(size, 1), "provenance": provenance,
                           "metrics": ckpt.get("metrics")}))


@click.command("average")
@click.argument("dst", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--weights", default=None, help="comma-separated, one per source (default: equal)")
@click.option("--fp32", is_flag=True, help="keep float32 weights (default: fp16)")
def average_cmd(dst: Path, sources: tuple[Path, ...], weights: str | None, fp32: bool) -> None:
    """Write the weighted average of SOURCES' weights to DST: checkpoints of one model (a run's
    snapshots, or a model and its fine-tuned descendants), recording each as `averaged_from`."""
    import torch

    from pipeline.checkpoints import CheckpointError, average_checkpoints, load_checkpoint
    from pipeline.train.loop import (
        command_line,
        describe_machine,
        inference_checkpoint,
        save_checkpoint,
    )

    try:
        shares = [float(w) for w in weights.split(",")] if weights else None
        averaged = average_checkpoints([load_checkpoint(p) for p in sources], shares)
    except (CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    for record, path in zip(averaged["averaged_from"], sources):
        record["file"] = str(path)
    averaged["provenance"] = {"commands": [command_line()], "machine": describe_machine(),
                              "torch": str(torch.__version__)}
    save_checkpoint(dst, inference_checkpoint(averaged, half=not fp32))
    click.echo(json.dumps({"out": str(dst), "mb": round(dst.stat().st_size / 2**20, 1),
                           "weights": [r["weight"] for r in averaged["averaged_from"]]}))


COMMANDS = [text_corpus_cmd, lexicon_cmd, corpus_cmd, recorded_corpus_cmd, train_group, export_cmd, average_cmd]
