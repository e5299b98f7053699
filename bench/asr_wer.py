"""ASR word error rate and speed: our model against PocketSphinx on the same held-out audio.

    python bench/asr_wer.py [--model checkpoints/asr.pt] [--lm checkpoints/lm.pt] [--lists 1-6] [--json]
    python bench/asr_wer.py --lists 7-20 --sweep lm_weight=0,0.2,0.4 --json   # choose lm_weight
    python bench/asr_wer.py --set real [--fsdd-per-speaker 100] --json        # real recordings

Held-out audio: Harvard sentences (never in training text) spoken by voices no model trained
on (Festival's cmu_us_slt_arctic_hts and kal_diphone, espeak-ng's en-gb-x-gbclan), and the
five LibriVox clips of pocketsphinx-testdata (real read speech). Our model runs in batch mode
with joint CTC/attention beam search (plain, with its language model, with the language model
and the lexicon, and with those and the word n-gram model, where it has them; the last is the
default), the default once more with each clip heard in one view, not several (`_one_view`: no
test-time views), and with greedy CTC; the real-time factor is processing time over audio
time on this machine, one thread. The pooled row is computed from the per-voice transcripts.
`ctc_speedup_over_beam` is plain beam search's time over greedy CTC's on all the held-out
Harvard clips, each the best of `--repeat` runs taken in turn (timeit's rule: the least
disturbed run of each).

`--speaker-adapt STEPS` adds the default decoding adapted to each held-out voice
(`speaker_adapt_steps`: the clips of one voice are one call, taken as one speaker; unsupervised,
on the first pass's transcripts); the five LibriVox clips are consecutive sentences of one
chapter by one reader, one speaker too.

`--sweep NAME=V1,V2,...` instead reports only the beam-search WER, pooled and per voice, at
each value of one RecognitionOptions field (lm_weight, lexicon_weight, ctc_weight, beam_size,
...), the others at their defaults or flags: run it on lists the report does not use (7-20), so
nothing is tuned on the test.

`--snr DB` adds white noise at that SNR to every clip (seeded per clip, cached under
data/eval/snr-DB/) before either system hears it: how robust each is to a noise floor the
synthetic training voices never have.

`--set real` reports real recordings instead (`--set harvard --set real`: both): the Free
Spoken Digit Dataset's development speakers (8 kHz; each speaker one call, `--fsdd-per-speaker
N` keeps a speaker's first N clips, N/10 takes of every digit) and pooled, and
pocketsphinx-testdata's recorded clips (LibriVox, cards, goforward, tidigits) per group and
pooled; only the default decoding and PocketSphinx run on them. `--set NAME=VALUE` (with an
`=`) is something else: a RecognitionOptions field for every run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py)

import torch  # noqa: E402

from pipeline.evaluation.evalsets import (  # noqa: E402
    HELD_OUT_VOICES,
    EvalItem,
    fsdd_set,
    harvard_lists,
    librivox_set,
    noisy_set,
    parse_lists,
    pocketsphinx_clips,
    speak_set,
)
from pipeline.evaluation.judges import pocketsphinx_transcribe, wer  # noqa: E402
from pipeline.frontend.audio import duration_seconds  # noqa: E402
from pipeline.inference.options import SPEAKER_ADAPT_STEPS, RecognitionOptions  # noqa: E402
from pipeline.inference.recognizer import Recognizer  # noqa: E402

SETS = ("harvard", "real")  # --set NAME without "=": the audio reported; harvard by default


def _plain(options: dict) -> dict:
    """`options` for beam search alone: no language models, no lexicon."""
    return {**options, "lm_weight": 0.0, "lexicon_weight": 0.0, "word_lm_weight": 0.0}


def run_systems(items: list[EvalItem], recognizer: Recognizer, options: dict,
                speaker_adapt_steps: int = 0, default_only: bool = False) -> dict:
    """System name -> (transcripts, seconds) on `items`; `options`: RecognitionOptions fields.
    `speaker_adapt_steps`: also the default adapted to the items as one speaker (all one voice).
    `default_only`: only the default decoding and PocketSphinx."""
    audio = [i.audio for i in items]
    beam = options["beam_size"]
    plain = _plain(options)
    systems = {
        f"ours_beam{beam}": lambda: _texts(recognizer, audio, **plain),
        "ours_ctc_greedy": lambda: _texts(recognizer, audio, decoder="ctc"),
        "pocketsphinx": lambda: [pocketsphinx_transcribe(a) for a in audio],
    }
    name = f"ours_beam{beam}"
    if recognizer.lm is not None:
        name += "_lm"
        with_lm = {**options, "lexicon_weight": 0.0, "word_lm_weight": 0.0}
        systems[name] = lambda: _texts(recognizer, audio, **with_lm)
    if recognizer.lexicon is not None:
        name += "_lexicon"
        with_lexicon = {**options, "word_lm_weight": 0.0}
        systems[name] = lambda: _texts(recognizer, audio, **with_lexicon)
    if recognizer.word_lm is not None:
        name += "_wordlm"
        systems[name] = lambda: _texts(recognizer, audio, **options)
    chosen = RecognitionOptions(**options)
    if chosen.tempo_views or chosen.shift_views:  # the same decoding hearing the audio once
        one_view = {**options, "tempo_views": 0.0, "shift_views": 0}
        systems[name + "_one_view"] = lambda: _texts(recognizer, audio, **one_view)
    if speaker_adapt_steps and not chosen.speaker_adapt_steps:
        adapted = {**options, "speaker_adapt_steps": speaker_adapt_steps}
        systems[name + "_speaker_adapted"] = lambda: _texts(recognizer, audio, **adapted)
    if default_only:
        systems = {name: systems[name], "pocketsphinx": systems["pocketsphinx"]}
    out = {}
    for name, run in systems.items():
        start = time.perf_counter()
        hyps = run()
        out[name] = (hyps, time.perf_counter() - start)
    return out


def _texts(recognizer: Recognizer, audio: list, **options) -> list[str]:
    return [t.text for t in recognizer.transcribe_batch(audio, **options)]


def score(items: list[EvalItem], runs: dict) -> dict:
    """WER and real-time factor of each system's (transcripts, seconds) on `items`."""
    audio_seconds = sum(duration_seconds(i.audio) for i in items)
    out = {"utterances": len(items), "audio_seconds": round(audio_seconds, 1)}
    for name, (hyps, seconds) in runs.items():
        out[name] = {"wer": round(wer([i.text for i in items], hyps), 4),
                     "rtf": round(seconds / audio_seconds, 4)}
    return out


def _pool(per_voice: list[dict]) -> dict:
    return {name: ([h for runs in per_voice for h in runs[name][0]],
                   sum(runs[name][1] for runs in per_voice)) for name in per_voice[0]}


def _option_kind(name: str) -> type | None:
    """int or float for a numeric RecognitionOptions field, else None."""
    kind = type(getattr(RecognitionOptions, name, None))
    return kind if kind in (int, float) else None


def _sets(parser: argparse.ArgumentParser, specs: list[str]) -> list[str]:
    """The --set NAME flags (no "=") -> the sets to report, in SETS order; harvard if none."""
    names = [spec for spec in specs if "=" not in spec]
    for name in names:
        if name not in SETS:
            parser.error(f"--set: {name!r} is neither a set ({', '.join(SETS)}) nor NAME=VALUE")
    return [name for name in SETS if name in names] or ["harvard"]


def _settings(parser: argparse.ArgumentParser, specs: list[str]) -> dict:
    """--set NAME=VALUE flags -> {name: value}."""
    out = {}
    for spec in specs:
        if "=" not in spec:
            continue  # a set's name (`_sets`)
        name, _, value = spec.partition("=")
        kind = _option_kind(name)
        if kind is None or not value:
            parser.error(f"--set: {spec!r} is not NAME=VALUE for a numeric RecognitionOptions field")
        out[name] = kind(float(value))
    return out


def sweep(items: list[EvalItem], recognizer: Recognizer, options: dict,
          spec: str) -> tuple[dict, dict]:
    """Pooled WER at each value of one option (spec "NAME=V1,V2,..."), and each voice's; each
    voice's clips are one call (one speaker, for `speaker_adapt_steps`)."""
    name, _, values = spec.partition("=")
    kind = _option_kind(name)
    if kind is None or not values:
        raise SystemExit(f"--sweep: {spec!r} is not NAME=V1,V2,... over a numeric RecognitionOptions field")
    audio, refs = [i.audio for i in items], [i.text for i in items]
    voices: dict[str, list[int]] = {}  # voice -> its items' positions
    for k, item in enumerate(items):
        voices.setdefault(item.voice, []).append(k)
    pooled, by_voice = {}, {voice: {} for voice in voices}
    for value in values.split(","):
        hyps: list[str] = [""] * len(items)
        setting = {**options, name: kind(float(value))}
        for mine in voices.values():
            texts = _texts(recognizer, [audio[k] for k in mine], **setting)
            for k, text in zip(mine, texts):
                hyps[k] = text
        pooled[value] = round(wer(refs, hyps), 4)
        for voice, mine in voices.items():
            by_voice[voice][value] = round(wer([refs[k] for k in mine], [hyps[k] for k in mine]), 4)
    return pooled, by_voice


def _by_voice(items: list[EvalItem]) -> dict[str, list[EvalItem]]:
    """`items` grouped by voice, each group in its own order, groups in order of first item."""
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.voice, []).append(item)
    return groups


def score_groups(groups: dict[str, list[EvalItem]], run: Callable[[list[EvalItem]], dict],
                 show: bool = False) -> tuple[dict, list[EvalItem], dict]:
    """Each group's `score` of `run(items)`'s systems (one call per group: one speaker), the
    pooled items and the pooled runs; `show`: print each group's line as it is done."""
    scores, items, runs = {}, [], []
    for name, mine in groups.items():
        mine_runs = run(mine)
        scores[name] = score(mine, mine_runs)
        items, runs = items + mine, runs + [mine_runs]
        if show:
            print(name, json.dumps(scores[name]))
    return scores, items, _pool(runs)


def ctc_speedup(items: list[EvalItem], recognizer: Recognizer, options: dict, repeats: int) -> float:
    """Plain beam search's seconds over greedy CTC's on `items`, the best of `repeats` each."""
    audio = [i.audio for i in items]
    best = {"beam": float("inf"), "ctc": float("inf")}
    for _ in range(repeats):
        for name, decoding in (("beam", _plain(options)), ("ctc", {"decoder": "ctc"})):
            start = time.perf_counter()
            _texts(recognizer, audio, **decoding)
            best[name] = min(best[name], time.perf_counter() - start)
    return best["beam"] / best["ctc"]


def _write_transcripts(path: Path, sets: list[tuple[str, list[EvalItem], dict]]) -> None:
    with path.open("w") as f:
        for name, items, runs in sets:
            for system, (hyps, _) in runs.items():
                for item, hyp in zip(items, hyps):
                    f.write(json.dumps({"set": name, "system": system, "audio": Path(item.audio).name,
                                        "ref": item.text, "hyp": hyp}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lm", type=Path, default=None,
                        help="language model (default: the shipped one, where it fits the model)")
    parser.add_argument("--lm-weight", type=float, default=RecognitionOptions.lm_weight)
    parser.add_argument("--lexicon", type=Path, default=None, help="word list (default: the shipped one)")
    parser.add_argument("--lexicon-weight", type=float, default=RecognitionOptions.lexicon_weight)
    parser.add_argument("--word-lm", type=Path, default=None,
                        help="word n-gram model (default: pocketsphinx's English one)")
    parser.add_argument("--word-lm-weight", type=float, default=RecognitionOptions.word_lm_weight)
    parser.add_argument("--lists", default="1-6", help="Harvard lists, e.g. 1-6")
    parser.add_argument("--voices", default=",".join(HELD_OUT_VOICES))
    parser.add_argument("--beam", type=int, default=RecognitionOptions.beam_size)
    parser.add_argument("--sweep", default=None, help="NAME=V1,V2,...: pooled WER at each value")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE|SET",
                        help="another numeric RecognitionOptions field for every run, or (no "
                             f"'=') a set to report: {', '.join(SETS)} (default harvard); "
                             "repeatable")
    parser.add_argument("--fsdd-per-speaker", type=int, default=None, metavar="N",
                        help="--set real: each FSDD speaker's first N clips (N/10 takes of "
                             "every digit; default: all)")
    parser.add_argument("--snr", type=float, default=None,
                        help="add white noise at this SNR (dB) to every clip, for both systems")
    parser.add_argument("--speaker-adapt", type=int, default=SPEAKER_ADAPT_STEPS, metavar="STEPS",
                        help="also report the default adapted to each speaker (each held-out "
                             "voice, LibriVox's reader) with this many steps (speaker_adapt_steps; "
                             "0: not)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="timing runs of beam search and greedy CTC for ctc_speedup_over_beam")
    parser.add_argument("--transcripts", type=Path, default=None, metavar="JSONL",
                        help="also write every system's transcript of every clip here, one "
                             "{set, system, audio, ref, hyp} a line (to compare two revisions)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.fsdd_per_speaker is not None and args.fsdd_per_speaker < 1:
        parser.error("--fsdd-per-speaker must be at least 1")
    sets = _sets(parser, args.set)
    if args.sweep and sets != ["harvard"]:
        parser.error("--sweep runs on the Harvard lists only")
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, lm=args.lm, lexicon=args.lexicon, word_lm=args.word_lm)
    sentences = harvard_lists(parse_lists(args.lists))
    options = {"beam_size": args.beam, "lm_weight": args.lm_weight, "lexicon_weight": args.lexicon_weight,
               "word_lm_weight": args.word_lm_weight, **_settings(parser, args.set)}
    result = {"model": str(args.model or "shipped"), "lm": recognizer.checkpoint_info["lm"],
              "lexicon": recognizer.checkpoint_info["lexicon"],
              "word_lm": recognizer.checkpoint_info["word_lm"], **options,
              "harvard_lists": args.lists, "snr_db": args.snr, "threads": args.threads,
              "machine": platform.machine()}

    def clips(items: list[EvalItem]) -> list[EvalItem]:
        return items if args.snr is None else noisy_set(items, args.snr)

    if args.sweep:
        result["held_out"] = {}
        items = clips([i for voice in args.voices.split(",") for i in speak_set(sentences, voice)])
        pooled_wer, voice_wer = sweep(items, recognizer, options, args.sweep)
        result["sweep"] = {args.sweep.partition("=")[0]: pooled_wer}
        result["sweep_by_voice"] = voice_wer
        print(json.dumps(result) if args.json else json.dumps(result, indent=1))
        return
    transcripts = []
    if "harvard" in sets:
        voices = {voice: clips(speak_set(sentences, voice)) for voice in args.voices.split(",")}
        result["held_out"], pooled, pooled_runs = score_groups(
            voices, lambda items: run_systems(items, recognizer, options, args.speaker_adapt),
            show=not args.json)
        result["held_out_all"] = score(pooled, pooled_runs)
        librivox = clips(librivox_set())
        librivox_runs = run_systems(librivox, recognizer, options, args.speaker_adapt)
        result["librivox"] = score(librivox, librivox_runs)
        transcripts += [("held_out", pooled, pooled_runs), ("librivox", librivox, librivox_runs)]
        result["ctc_speedup_over_beam"] = round(ctc_speedup(pooled, recognizer, options, args.repeat), 2)
        result["timing_repeats"] = args.repeat
    if "real" in sets:
        def default_and_peer(items: list[EvalItem]) -> dict:
            return run_systems(items, recognizer, options, default_only=True)

        speakers = {speaker: clips(items[:args.fsdd_per_speaker])
                    for speaker, items in _by_voice(fsdd_set()).items()}
        result["fsdd_per_speaker"] = args.fsdd_per_speaker
        result["fsdd"], fsdd, fsdd_runs = score_groups(speakers, default_and_peer, show=not args.json)
        result["fsdd_all"] = score(fsdd, fsdd_runs)
        groups = _by_voice(clips(librivox_set() + pocketsphinx_clips()))
        result["recorded"], recorded, recorded_runs = score_groups(groups, default_and_peer,
                                                                   show=not args.json)
        result["recorded_all"] = score(recorded, recorded_runs)
        transcripts += [("fsdd", fsdd, fsdd_runs), ("recorded", recorded, recorded_runs)]
    if args.transcripts:
        _write_transcripts(args.transcripts, transcripts)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
