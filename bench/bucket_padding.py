"""Padding waste of length-bucketed batches (pipeline.data.BucketBatchSampler) on a manifest.

Waste = padded frames / all frames in the padded batches (1 - real frames / batch slots), for
the TTS and ASR frame rates at a few batch sizes (frames per batch). Target: <= 15%.

    .venv/bin/python bench/bucket_padding.py --json
    .venv/bin/python bench/bucket_padding.py --manifest data/corpus/manifest.jsonl \
        --speaker flite-slt --json
"""

from __future__ import annotations

import sys
from pathlib import Path

# the repo root, not bench/, comes first: a bench/<name>.py must not shadow a stdlib module
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402

from pipeline.data.manifests import BucketBatchSampler, read_manifest  # noqa: E402
from pipeline.frontend.features import ASR_FEATURES, TTS_FEATURES  # noqa: E402

MAX_WASTE = 0.15


def padding_waste(lengths: list[int], max_total: int) -> dict:
    batches = list(BucketBatchSampler(lengths, max_total=max_total, shuffle=False))
    slots = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return {
        "waste": round(1 - sum(lengths) / slots, 4),
        "batches": len(batches),
        "mean_items": round(len(lengths) / len(batches), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default="data/corpus/manifest.jsonl")
    parser.add_argument("--speaker", default=None, help="only this speaker's utterances")
    parser.add_argument("--batch-frames", type=int, nargs="+", default=[6_000, 12_000, 24_000])
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line")
    args = parser.parse_args()

    utterances = [u for u in read_manifest(args.manifest)
                  if args.speaker is None or u.speaker == args.speaker]
    if not utterances:
        of = f" of {args.speaker}" if args.speaker else ""
        raise SystemExit(f"{args.manifest}: no utterances{of}")
    results = {}
    for name, config in (("tts", TTS_FEATURES), ("asr", ASR_FEATURES)):
        lengths = [config.num_frames(round(u.duration * config.sample_rate)) for u in utterances]
        results[name] = {str(n): padding_waste(lengths, n) for n in args.batch_frames}
        for n, r in results[name].items():
            print(f"{name} batch_frames={n:>6}: {r}", file=sys.stderr)
    worst = max(r["waste"] for rows in results.values() for r in rows.values())
    summary = {
        "manifest": args.manifest,
        "speaker": args.speaker,
        "utterances": len(utterances),
        "hours": round(sum(u.duration for u in utterances) / 3600, 2),
        "padding_waste": results,
        "worst_waste": worst,
        "max_waste": MAX_WASTE,
        "within_target": worst <= MAX_WASTE,
    }
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
