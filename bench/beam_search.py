"""Joint CTC/attention beam search: the CTC pre-beam against full CTC scoring, and wider beams.

    python bench/beam_search.py [--model checkpoints/asr.pt] [--lists 7-20] [--json]

The shipped recogniser (LM and lexicon as by default) decodes the held-out voices' Harvard
sentences in batch mode, one thread, once per setting: beam 4 with CTC prefix scores over the
whole vocabulary (`pre_beam_ratio` 0, the baseline), and beams 4, 6 and 8 with the pre-beam
(CTC scores only the best ceil(1.5 x beam) tokens per hypothesis). Each setting reports WER,
the real-time factor, and its time as a ratio to the baseline's, all runs in this process on
the same audio. Lists 7-20 are the dev lists the decoding weights are chosen on; the held-out
WERs of record come from bench/asr_wer.py on lists 1-6. The last line with --json is
{"settings": {"beam4_full": {"wer", "rtf", "time_ratio"}, ...}, ...}.
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

from pipeline.evaluation.evalsets import HELD_OUT_VOICES, harvard_lists, parse_lists, speak_set  # noqa: E402
from pipeline.evaluation.judges import wer  # noqa: E402
from pipeline.frontend.audio import duration_seconds  # noqa: E402
from pipeline.inference.recognizer import Recognizer  # noqa: E402

SETTINGS = {  # name -> RecognitionOptions overrides
    "beam4_full": {"beam_size": 4, "pre_beam_ratio": 0.0},
    "beam4": {"beam_size": 4},
    "beam6": {"beam_size": 6},
    "beam8": {"beam_size": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lists", default="7-20", help="Harvard lists, e.g. 7-20")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model)
    sentences = harvard_lists(parse_lists(args.lists))
    items = [i for voice in HELD_OUT_VOICES for i in speak_set(sentences, voice)]
    audio, refs = [i.audio for i in items], [i.text for i in items]
    audio_seconds = sum(duration_seconds(a) for a in audio)
    recognizer.transcribe_batch(audio[:4])  # warm up
    results = {}
    for name, overrides in SETTINGS.items():
        start = time.perf_counter()
        hyps = [t.text for t in recognizer.transcribe_batch(audio, **overrides)]
        seconds = time.perf_counter() - start
        results[name] = {"wer": round(wer(refs, hyps), 4), "rtf": round(seconds / audio_seconds, 4),
                         "seconds": round(seconds, 2)}
        if not args.json:
            print(name, json.dumps(results[name]))
    base = results["beam4_full"]["seconds"]
    for r in results.values():
        r["time_ratio"] = round(r["seconds"] / base, 3)
    report = {"model": str(args.model or "shipped"), "harvard_lists": args.lists,
              "utterances": len(items), "audio_seconds": round(audio_seconds, 1),
              "threads": args.threads, "machine": platform.machine(), "settings": results}
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
