"""TTS intelligibility, robustness and speed, per model.

    python bench/tts_quality.py [--nat checkpoints/tts-nat.pt] [--ar dot=checkpoints/tts-ar-dot.pt,...]
                                [--asr checkpoints/asr.pt] [--lists 1-6] [--hard-runs 3]
                                [--voices all|slt,awb] [--json]

- Intelligibility: Harvard sentences (never in training text) synthesised by each model and
  read back by PocketSphinx (an independent recogniser) and by our ASR; the teacher voice's own
  recordings of the same sentences (flite slt) are read by PocketSphinx too, for the ratio.
- Robustness: hard sentences (repeated words, tongue twisters, number lists, a 40-word sentence).
  A failure is a decoder that hit its length cap, or an output whose duration is outside
  0.67-1.5x flite's for the same text (a skipped or repeated stretch changes the length),
  counted over `--hard-runs` passes with different seeds (AR prenet dropout stays on).
  Autoregressive models run with the monotonic constraint at inference and, for comparison,
  without it (`ar-NAME-unconstrained`).
- Voices (`--voices`, default every voice of the NAT model): each voice's Harvard sentences
  read by PocketSphinx, against the same flite voice's own recordings (the voice it learnt
  from), and by our ASR, with the real-time factor; the JSON's `voices` is what `speechq
  export --scores` stores and `speechq voices` shows.
- Alignment: the boundary error (ms) against flite's phone segmentation that each
  autoregressive checkpoint recorded at its last validation.
- Speed on this CPU, one thread: real-time factor with Griffin-Lim, mel generation (text in,
  mel out: the flite phone front-end included) and the decoder alone (phones already encoded).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py)

import torch  # noqa: E402

from models.tts import SynthesisOptions  # noqa: E402
from pipeline.checkpoints import default_checkpoint, load_checkpoint  # noqa: E402
from pipeline.evaluation.evalsets import harvard_lists, parse_lists, speak_set  # noqa: E402
from pipeline.evaluation.judges import pocketsphinx_transcribe, wer  # noqa: E402
from pipeline.frontend.audio import duration_seconds  # noqa: E402
from pipeline.inference.synthesizer import Synthesizer  # noqa: E402

HARD_SENTENCES = [
    "Buffalo buffalo Buffalo buffalo buffalo buffalo Buffalo buffalo.",
    "Peter Piper picked a peck of pickled peppers.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells for sure.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Red lorry, yellow lorry, red lorry, yellow lorry, red lorry, yellow lorry.",
    "The sixth sick sheik's sixth sheep's sick.",
    "Unique New York, unique New York, you know you need unique New York.",
    "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen.",
    "Call 555 0123, then 555 0199, then 555 0142, and finally 555 0187.",
    "The codes are 7, 14, 21, 28, 35, 42, 49, 56, 63 and 70.",
    "No no no no no, I said yes yes yes yes yes.",
    "Very very very very very very very good.",
    "The the the cat sat on on on the mat.",
    "Toy boat, toy boat, toy boat, toy boat, toy boat.",
    "Irish wristwatch, Swiss wristwatch, Irish wristwatch, Swiss wristwatch.",
    "In the early morning light, the old fisherman carefully prepared his small wooden boat, "
    "checked every knot of the tangled nets twice, whispered a quiet prayer for calm weather and "
    "a generous catch, and finally pushed off from the rocky shore toward the distant grey horizon.",
    "A.",
    "Hmm.",
    "Yes.",
    "Supercalifragilisticexpialidocious is a very long word indeed.",
]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def evaluate_model(synth: Synthesizer, sentences: list[str], recognizer, teacher_durations: dict,
                   hard_runs: int = 1) -> dict:
    results, seconds = _timed(lambda: [synth.synthesize(s) for s in sentences])
    audio = sum(r.duration for r in results)
    _, mel_seconds = _timed(lambda: [synth.mels([s]) for s in sentences])
    tokens = [torch.tensor(synth.frontend.encode(s))[None] for s in sentences]
    with torch.no_grad():  # the decoder alone: text already in model units
        _, decoder_seconds = _timed(lambda: [synth.generator.generate(t) for t in tokens])
    out = {
        "pocketsphinx_wer": round(wer(sentences, [pocketsphinx_transcribe(r.wav) for r in results]), 4),
        "rtf": round(seconds / audio, 4),
        "mel_seconds": round(mel_seconds, 3),
        "mel_rtf": round(mel_seconds / audio, 4),
        "decoder_seconds": round(decoder_seconds, 3),
        "cap_hits": sum(r.hit_length_cap for r in results),
    }
    if recognizer is not None:
        hyps = [t.text for t in recognizer.transcribe_batch([r.wav for r in results])]
        out["our_asr_wer"] = round(wer(sentences, hyps), 4)
    out["hard"] = hard_sentences(synth, teacher_durations, hard_runs)
    return out


def evaluate_voice(synth: Synthesizer, voice: str, sentences: list[str], recognizer) -> dict:
    """One voice of a (multi-speaker) model against the flite voice it learnt from."""
    teacher = speak_set(sentences, f"flite:{voice}")
    results, seconds = _timed(lambda: [synth.synthesize(s, voice=voice) for s in sentences])
    ours = wer(sentences, [pocketsphinx_transcribe(r.wav) for r in results])
    theirs = wer(sentences, [pocketsphinx_transcribe(i.audio) for i in teacher])
    out = {"pocketsphinx_wer": round(ours, 4), "teacher_pocketsphinx_wer": round(theirs, 4),
           "pocketsphinx_wer_ratio_to_teacher": round(ours / max(theirs, 1e-9), 3),
           "rtf": round(seconds / sum(r.duration for r in results), 4)}
    if recognizer is not None:
        out["our_asr_wer"] = round(wer(sentences, [
            t.text for t in recognizer.transcribe_batch([r.wav for r in results])]), 4)
    return out


def hard_sentences(synth: Synthesizer, teacher_durations: dict, runs: int = 1) -> dict:
    """Failures on the hard sentences over `runs` passes, each with its own seed: AR models
    keep prenet dropout at inference, so one pass is one draw of their noise."""
    failures = []
    for run in range(runs):
        torch.manual_seed(run)
        for text in HARD_SENTENCES:
            r = synth.synthesize(text)
            ratio = r.duration / teacher_durations[text]
            if r.hit_length_cap or not 0.67 <= ratio <= 1.5:
                failures.append({"run": run, "text": text, "hit_length_cap": r.hit_length_cap,
                                 "duration_ratio": round(ratio, 2)})
    return {"sentences": len(HARD_SENTENCES), "runs": runs, "failures": len(failures),
            "failures_per_run": [sum(f["run"] == run for f in failures) for run in range(runs)],
            "failed": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nat", type=Path, default=None, help="NAT checkpoint (default: shipped)")
    parser.add_argument("--ar", default="", help="attention=checkpoint,... for autoregressive models")
    parser.add_argument("--asr", type=Path, default=None, help="ASR checkpoint (default: shipped, if any)")
    parser.add_argument("--lists", default="1-6")
    parser.add_argument("--hard-runs", type=int, default=3,
                        help="passes over the hard sentences, each with its own dropout noise")
    parser.add_argument("--voices", default="all",
                        help="the NAT model's voices to score one by one: all, none, or a,b")
    parser.add_argument("--models", default=None,
                        help="score only these of nat, ar-NAME, ar-NAME-unconstrained "
                             "(comma-separated; default all, '' none: the voices only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sentences = harvard_lists(parse_lists(args.lists))
    teacher = speak_set(sentences, "flite:slt")
    teacher_hard = speak_set(HARD_SENTENCES, "flite:slt")
    teacher_durations = {i.text: duration_seconds(i.audio) for i in teacher_hard}
    result = {"harvard_lists": args.lists, "sentences": len(sentences), "threads": args.threads,
              "machine": platform.machine(),
              "teacher_flite_slt": {"pocketsphinx_wer": round(wer(
                  sentences, [pocketsphinx_transcribe(i.audio) for i in teacher]), 4)}}

    recognizer = None
    asr_path = args.asr or default_checkpoint("asr")
    if asr_path.exists():
        from pipeline.inference.recognizer import Recognizer

        recognizer = Recognizer.load(asr_path)
        # the ceiling for "our ASR reads our audio": the teacher voice the TTS imitates
        result["teacher_flite_slt"]["our_asr_wer"] = round(wer(
            sentences, [t.text for t in recognizer.transcribe_batch([i.audio for i in teacher])]), 4)

    # name -> (checkpoint, synthesis options); each AR model runs twice: with the monotonic
    # constraint at inference (the default) and without it (plain attention, for comparison)
    models = {"nat": (args.nat or default_checkpoint("tts-nat"), None)}
    for spec in filter(None, args.ar.split(",")):
        attention, _, path = spec.partition("=")
        models[f"ar-{attention}"] = (Path(path), SynthesisOptions(monotonic=True))
        models[f"ar-{attention}-unconstrained"] = (Path(path), SynthesisOptions(monotonic=False))
    result["models"] = {}
    nat = Synthesizer.load(models["nat"][0])
    voices = {"all": nat.voices, "none": []}.get(args.voices, args.voices.split(","))
    if voices:
        result["voices"] = {}
        result["voices_checkpoint"] = str(models["nat"][0])
    for voice in voices:
        result["voices"][voice] = evaluate_voice(nat, voice, sentences, recognizer)
        if not args.json:
            print(voice, json.dumps(result["voices"][voice]))
    chosen = models if args.models is None else {
        m: models[m] for m in filter(None, args.models.split(","))}
    for name, (path, options) in chosen.items():
        synth = Synthesizer.load(path, options=options)
        scores = evaluate_model(synth, sentences, recognizer, teacher_durations, args.hard_runs)
        scores["checkpoint"] = str(path)
        metrics = load_checkpoint(path).get("metrics") or {}
        if "boundary_error_ms" in metrics:
            scores["validation_boundary_error_ms"] = metrics["boundary_error_ms"]
        scores["pocketsphinx_wer_ratio_to_teacher"] = round(
            scores["pocketsphinx_wer"] / max(result["teacher_flite_slt"]["pocketsphinx_wer"], 1e-9), 3)
        result["models"][name] = scores
        if not args.json:
            print(name, json.dumps({k: v for k, v in scores.items() if k != "hard"}))
    ar = [m for m in result["models"] if m.startswith("ar-") and not m.endswith("-unconstrained")]
    if ar and "nat" in result["models"]:
        nat_mel = result["models"]["nat"]["mel_seconds"]
        result["nat_mel_speedup"] = {m: round(result["models"][m]["mel_seconds"] / nat_mel, 1) for m in ar}
        nat_decoder = result["models"]["nat"]["decoder_seconds"]
        result["nat_decoder_speedup"] = {
            m: round(result["models"][m]["decoder_seconds"] / nat_decoder, 1) for m in ar}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
