"""ASR word error rate and speed: our model against PocketSphinx on the same held-out audio.

    python bench/asr_wer.py [--model checkpoints/asr.pt] [--lists 1-6] [--json]

Held-out audio: Harvard sentences (never in training text) spoken by voices no model trained
on (Festival's cmu_us_slt_arctic_hts and kal_diphone, espeak-ng's en-gb-x-gbclan), and the
five LibriVox clips of pocketsphinx-testdata (real read speech). Our model runs in batch mode
with joint CTC/attention beam search and with greedy CTC; the real-time factor is processing
time over audio time on this machine, one thread.
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
from pipeline.recognizer import Recognizer  # noqa: E402


def _parse_lists(spec: str) -> list[int]:
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def score(items: list[EvalItem], recognizer: Recognizer, beam: int) -> dict:
    refs = [i.text for i in items]
    audio_seconds = sum(duration_seconds(i.audio) for i in items)
    out = {"utterances": len(items), "audio_seconds": round(audio_seconds, 1)}
    systems = {
        f"ours_beam{beam}": lambda: [t.text for t in recognizer.transcribe_batch(
            [i.audio for i in items], beam_size=beam, decoder="attention")],
        "ours_ctc_greedy": lambda: [t.text for t in recognizer.transcribe_batch(
            [i.audio for i in items], decoder="ctc")],
        "pocketsphinx": lambda: [pocketsphinx_transcribe(i.audio) for i in items],
    }
    for name, run in systems.items():
        start = time.perf_counter()
        hyps = run()
        seconds = time.perf_counter() - start
        out[name] = {"wer": round(wer(refs, hyps), 4), "rtf": round(seconds / audio_seconds, 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lists", default="1-6", help="Harvard lists, e.g. 1-6")
    parser.add_argument("--voices", default=",".join(HELD_OUT_VOICES))
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model)
    sentences = harvard_lists(_parse_lists(args.lists))
    result = {"model": str(args.model or "shipped"), "harvard_lists": args.lists,
              "threads": args.threads, "machine": platform.machine(), "held_out": {}}
    pooled: list[EvalItem] = []
    for voice in args.voices.split(","):
        items = speak_set(sentences, voice)
        pooled += items
        result["held_out"][voice] = score(items, recognizer, args.beam)
        if not args.json:
            print(voice, json.dumps(result["held_out"][voice]))
    result["held_out_all"] = score(pooled, recognizer, args.beam)
    result["librivox"] = score(librivox_set(), recognizer, args.beam)
    beam_rtf = result["held_out_all"][f"ours_beam{args.beam}"]["rtf"]
    result["ctc_speedup_over_beam"] = round(beam_rtf / result["held_out_all"]["ours_ctc_greedy"]["rtf"], 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
