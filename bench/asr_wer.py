"""ASR word error rate and speed: our model against PocketSphinx on the same held-out audio.

    python bench/asr_wer.py [--model checkpoints/asr.pt] [--lm checkpoints/lm.pt] [--lists 1-6] [--json]
    python bench/asr_wer.py --lists 7-10 --sweep-lm-weight 0,0.2,0.4 --json   # choose lm_weight

Held-out audio: Harvard sentences (never in training text) spoken by voices no model trained
on (Festival's cmu_us_slt_arctic_hts and kal_diphone, espeak-ng's en-gb-x-gbclan), and the
five LibriVox clips of pocketsphinx-testdata (real read speech). Our model runs in batch mode
with joint CTC/attention beam search, without and (where it has one) with its language model,
and with greedy CTC; the real-time factor is processing time over audio time on this machine,
one thread. The pooled row is computed from the per-voice transcripts.

`--sweep-lm-weight` instead reports only the pooled beam-search WER at each language-model
weight: run it on lists the report does not use (7-10), so the weight is not tuned on the test.
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

from pipeline.audio import duration_seconds  # noqa: E402
from pipeline.evalsets import HELD_OUT_VOICES, EvalItem, harvard_lists, librivox_set, speak_set  # noqa: E402
from pipeline.evaluate import pocketsphinx_transcribe, wer  # noqa: E402
from pipeline.recognizer import RecognitionOptions, Recognizer  # noqa: E402


def _parse_lists(spec: str) -> list[int]:
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def run_systems(items: list[EvalItem], recognizer: Recognizer, beam: int, lm_weight: float) -> dict:
    """System name -> (transcripts, seconds) on `items`."""
    audio = [i.audio for i in items]
    systems = {
        f"ours_beam{beam}": lambda: _texts(recognizer, audio, beam_size=beam, lm_weight=0.0),
        "ours_ctc_greedy": lambda: _texts(recognizer, audio, decoder="ctc"),
        "pocketsphinx": lambda: [pocketsphinx_transcribe(a) for a in audio],
    }
    if recognizer.lm is not None:
        systems[f"ours_beam{beam}_lm"] = lambda: _texts(recognizer, audio, beam_size=beam,
                                                        lm_weight=lm_weight)
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


def sweep_lm_weight(items: list[EvalItem], recognizer: Recognizer, beam: int, weights: list[float]) -> dict:
    audio = [i.audio for i in items]
    refs = [i.text for i in items]
    return {str(w): round(wer(refs, _texts(recognizer, audio, beam_size=beam, lm_weight=w)), 4)
            for w in weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lm", type=Path, default=None,
                        help="language model (default: the shipped one, where it fits the model)")
    parser.add_argument("--lm-weight", type=float, default=RecognitionOptions.lm_weight)
    parser.add_argument("--lists", default="1-6", help="Harvard lists, e.g. 1-6")
    parser.add_argument("--voices", default=",".join(HELD_OUT_VOICES))
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--sweep-lm-weight", default=None, help="comma-separated LM weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, lm=args.lm)
    sentences = harvard_lists(_parse_lists(args.lists))
    result = {"model": str(args.model or "shipped"), "lm": recognizer.checkpoint_info["lm"],
              "lm_weight": args.lm_weight, "harvard_lists": args.lists, "threads": args.threads,
              "machine": platform.machine(), "held_out": {}}
    if args.sweep_lm_weight:
        items = [i for voice in args.voices.split(",") for i in speak_set(sentences, voice)]
        weights = [float(w) for w in args.sweep_lm_weight.split(",")]
        result["wer_by_lm_weight"] = sweep_lm_weight(items, recognizer, args.beam, weights)
        print(json.dumps(result) if args.json else json.dumps(result, indent=1))
        return
    pooled: list[EvalItem] = []
    pooled_runs = []
    for voice in args.voices.split(","):
        items = speak_set(sentences, voice)
        runs = run_systems(items, recognizer, args.beam, args.lm_weight)
        pooled, pooled_runs = pooled + items, pooled_runs + [runs]
        result["held_out"][voice] = score(items, runs)
        if not args.json:
            print(voice, json.dumps(result["held_out"][voice]))
    result["held_out_all"] = score(pooled, _pool(pooled_runs))
    librivox = librivox_set()
    result["librivox"] = score(librivox, run_systems(librivox, recognizer, args.beam, args.lm_weight))
    beam_rtf = result["held_out_all"][f"ours_beam{args.beam}"]["rtf"]
    result["ctc_speedup_over_beam"] = round(beam_rtf / result["held_out_all"]["ours_ctc_greedy"]["rtf"], 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
