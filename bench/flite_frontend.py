"""The TTS phone front-end alone: one `flite` process a sentence against libflite in process.

    .venv/bin/python bench/flite_frontend.py [--lists 1-6] [--repeats 3] [--json]

Both routes read the same normalised Harvard sentences (`normalize_text` runs before the timing);
the figure is the median over repeats of the time for all sentences, and `identical` counts the
sentences whose phone lists the two routes agree on exactly. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py)

from pipeline.evaluation.evalsets import harvard_lists, parse_lists  # noqa: E402
from pipeline.frontend.flite import flite_front_end  # noqa: E402
from pipeline.frontend.text import flite_phones, libflite_phones, normalize_text  # noqa: E402


def _median_seconds(fn, texts: list[str], repeats: int) -> tuple[float, list[list[str]]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(t) for t in texts]
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", default="1-6", help="Harvard lists, e.g. 1-6")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if flite_front_end() is None:
        sys.exit("libflite is not loadable here; nothing to compare")

    texts = [normalize_text(s) for s in harvard_lists(parse_lists(args.lists))]
    libflite_phones(texts[0])  # load the voice outside the timing
    command_s, command = _median_seconds(flite_phones, texts, args.repeats)
    libflite_s, in_process = _median_seconds(libflite_phones, texts, args.repeats)
    result = {
        "harvard_lists": args.lists, "sentences": len(texts), "repeats": args.repeats,
        "machine": platform.machine(), "processor": platform.processor(),
        "command_seconds": round(command_s, 4),
        "libflite_seconds": round(libflite_s, 4),
        "command_ms_per_sentence": round(command_s / len(texts) * 1e3, 2),
        "libflite_ms_per_sentence": round(libflite_s / len(texts) * 1e3, 3),
        "speedup": round(command_s / libflite_s, 1),
        "identical": sum(a == b for a, b in zip(command, in_process)),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
