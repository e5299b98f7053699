"""Recognition batch size: time, peak memory and transcripts at each `batch_frames`.

    python bench/asr_batch_frames.py [--values 2000,4000,8000,15000,60000] [--voice V]
                                     [--lists 7-20] [--repeat N] [--json]

`RecognitionOptions.batch_frames` caps the padded feature frames of the pieces decoded together.
Each value decodes the same clips (one held-out voice's Harvard sentences, in one
`transcribe_batch` call, the default decoding otherwise) in a process of its own, so that the
peak resident memory reported is that value's; time is the best of `--repeat` runs, one thread.
The ratios are against the last value, the baseline (60,000: the default until the sixteenth
session), and `same_transcripts` says whether a value's transcripts are the baseline's.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

import torch  # noqa: E402

from pipeline.evaluation.evalsets import harvard_lists, parse_lists, speak_set  # noqa: E402
from pipeline.inference.recognizer import Recognizer  # noqa: E402


def measure(batch_frames: int, voice: str, lists: list[int], repeat: int) -> dict:
    """Seconds (best of `repeat`), this process's peak RSS and the transcripts at one value."""
    torch.set_num_threads(1)
    recognizer = Recognizer.load()
    audio = [item.audio for item in speak_set(harvard_lists(lists), voice)]
    best, texts = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        texts = [t.text for t in recognizer.transcribe_batch(audio, batch_frames=batch_frames)]
        best = min(best, time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"batch_frames": batch_frames, "clips": len(audio), "seconds": round(best, 2),
            "peak_rss_mb": round(peak_mb), "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", default="2000,4000,8000,15000,60000",
                        help="comma-separated batch_frames; the last is the baseline")
    parser.add_argument("--voice", default="festival:kal_diphone")
    parser.add_argument("--lists", default="7-20", help="Harvard lists, e.g. 7-20")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child's value
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lists = parse_lists(args.lists)
    if args.one is not None:
        print(json.dumps(measure(args.one, args.voice, lists, args.repeat)))
        return
    runs = []
    for value in (int(v) for v in args.values.split(",")):
        command = [sys.executable, __file__, "--one", str(value), "--voice", args.voice,
                   "--lists", args.lists, "--repeat", str(args.repeat)]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        runs.append(json.loads(child.stdout.splitlines()[-1]))
        if not args.json:
            print({k: v for k, v in runs[-1].items() if k != "texts"}, file=sys.stderr)
    base, base_texts = runs[-1], runs[-1]["texts"]
    for run in runs:
        run["speedup_over_baseline"] = round(base["seconds"] / run["seconds"], 2)
        run["memory_ratio_to_baseline"] = round(run["peak_rss_mb"] / base["peak_rss_mb"], 2)
        run["same_transcripts"] = run.pop("texts") == base_texts
    result = {"voice": args.voice, "harvard_lists": args.lists, "repeat": args.repeat,
              "machine": platform.machine(), "baseline_batch_frames": base["batch_frames"],
              "runs": runs}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
