"""Hotwords (contextual biasing): invented names recognised with and without them, and what a
list of unrelated hotwords costs on ordinary sentences.

    python bench/hotwords.py --dev-only --json        # choose the weight on dev data
    python bench/hotwords.py --skip-dev --json        # the test runs, at --weight
    python bench/hotwords.py [--limit N] [--weights 5,6,7] [--json]    # both

The rare-name set (pipeline.evaluation.names): sentences with one invented name each, no word
of which the training text or the word list has, spoken in turn by the held-out voices. The
recogniser decodes with its defaults, without hotwords and with every name of the split as
hotwords (one list for the whole set, as a contact list would be). The name recognition rate
is the share of names whose words all appear in their sentence's transcript; WER is over every
word. On ordinary sentences (Harvard lists, the held-out voices; pipeline.evaluation.evalsets)
it decodes without hotwords and with the 100 invented names of the `distractors` split, none of
which the audio holds; `distractor_hits` counts transcripts with a word of theirs.

The weight is chosen on dev data alone: the `dev` names (disjoint from the test names) and the
dev Harvard lists (`--dev-lists`, 7-10) at each of `--weights`; `chosen_weight` is the one with
the lowest dev name WER among those whose dev distractor WER is within 5% (relative) of none.
The test names and the test Harvard lists (`--lists`, 1-6) are decoded at `--weight` (default:
RecognitionOptions' hotword_weight, set from that choice). One torch thread; `--limit N` keeps
the first N sentences of each set.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

import torch

from pipeline.evaluation.evalsets import (
    HELD_OUT_VOICES,
    EvalItem,
    harvard_lists,
    parse_lists,
    speak_set,
)
from pipeline.evaluation.judges import wer
from pipeline.evaluation.names import (
    hotwords_of,
    known_words,
    name_recognition,
    name_sentences,
    speak_names,
)
from pipeline.frontend.text import words_for_scoring
from pipeline.inference.options import RecognitionOptions
from pipeline.inference.recognizer import Recognizer


def _transcribe(recognizer: Recognizer, items: list[EvalItem],
                **options) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = [t.text for t in recognizer.transcribe_batch([i.audio for i in items], **options)]
    return texts, time.perf_counter() - start


def _names_run(recognizer, items, names, **options) -> dict:
    hyps, seconds = _transcribe(recognizer, items, **options)
    out = {"name_rate": round(name_recognition(names, hyps), 4),
           "wer": round(wer([i.text for i in items], hyps), 4), "seconds": round(seconds, 1)}
    by_voice = {}
    for voice in dict.fromkeys(i.voice for i in items):
        mine = [k for k, i in enumerate(items) if i.voice == voice]
        rate = name_recognition([names[k] for k in mine], [hyps[k] for k in mine])
        by_voice[voice] = round(rate, 4)
    out["name_rate_by_voice"] = by_voice
    return out


def names_split(recognizer, split: str, known: set[str], limit: int | None,
                weights: list[float]) -> dict:
    """Without hotwords, then with the split's names as hotwords at each weight."""
    sentences = name_sentences(split, known)[:limit]
    items, names = speak_names(sentences), [s.names for s in sentences]
    hotwords = hotwords_of(sentences)
    out = {"sentences": len(items), "hotwords": len(hotwords),
           "none": _names_run(recognizer, items, names)}
    for weight in weights:
        out[f"names_w{weight:g}"] = _names_run(recognizer, items, names, hotwords=hotwords,
                                               hotword_weight=weight)
    return out


def harvard_with_distractors(recognizer, lists: str, known: set[str], limit: int | None,
                             weights: list[float]) -> dict:
    """Harvard sentences without hotwords, then with the 100 distractors at each weight."""
    sentences = harvard_lists(parse_lists(lists))[:limit]
    items = [i for voice in HELD_OUT_VOICES for i in speak_set(sentences, voice)]
    refs = [i.text for i in items]
    distractors = hotwords_of(name_sentences("distractors", known))
    distractor_words = {w for d in distractors for w in words_for_scoring(d).split()}
    plain, plain_s = _transcribe(recognizer, items)
    none = wer(refs, plain)
    out = {"lists": lists, "clips": len(items), "distractors": len(distractors),
           "none": {"wer": round(none, 4), "seconds": round(plain_s, 1)}}
    for weight in weights:
        biased, seconds = _transcribe(recognizer, items, hotwords=distractors,
                                      hotword_weight=weight)
        with_them = wer(refs, biased)
        hits = sum(bool(distractor_words & set(words_for_scoring(h).split())) for h in biased)
        out[f"distractors_w{weight:g}"] = {
            "wer": round(with_them, 4), "seconds": round(seconds, 1), "distractor_hits": hits,
            "relative_change": round(with_them / none - 1, 4) if none else None}
    return out


def dev_sweep(recognizer, known: set[str], weights: list[float], lists: str,
              limit: int | None) -> dict:
    dev = names_split(recognizer, "dev", known, limit, weights)
    dev["harvard"] = harvard = harvard_with_distractors(recognizer, lists, known, limit, weights)
    safe = [w for w in weights if (harvard[f"distractors_w{w:g}"]["relative_change"] or 0) <= 0.05]
    dev["chosen_weight"] = min(safe, key=lambda w: dev[f"names_w{w:g}"]["wer"]) if safe else None
    return dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--weights", default="5,6,7", help="hotword weights tried on dev")
    parser.add_argument("--weight", type=float, default=RecognitionOptions.hotword_weight,
                        help="the weight of the test runs")
    parser.add_argument("--lists", default="1-6", help="test Harvard lists (distractor runs)")
    parser.add_argument("--dev-lists", default="7-10", help="dev Harvard lists (distractor runs)")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of each set")
    parser.add_argument("--skip-dev", action="store_true", help="the test runs alone")
    parser.add_argument("--dev-only", action="store_true", help="the dev runs alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    recognizer = Recognizer.load(args.model)
    known = known_words()
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "date": time.strftime("%Y-%m-%d"), "threads": 1, "weight": args.weight}
    if not args.skip_dev:
        weights = [float(w) for w in args.weights.split(",")]
        report["dev"] = dev_sweep(recognizer, known, weights, args.dev_lists, args.limit)
        print("dev", json.dumps(report["dev"]), flush=True)
    if not args.dev_only:
        _test_runs(report, recognizer, known, args)
    report["seconds"] = round(time.perf_counter() - start, 1)
    if not args.json:
        print(json.dumps(report, indent=2))
    print(json.dumps(report))


def _test_runs(report: dict, recognizer, known: set[str], args) -> None:
    test = names_split(recognizer, "test", known, args.limit, [args.weight])
    given = test[f"names_w{args.weight:g}"]
    test["name_rate_ratio"] = (round(given["name_rate"] / test["none"]["name_rate"], 2)
                               if test["none"]["name_rate"] else None)
    report["test"] = test
    print("test", json.dumps(test), flush=True)
    report["harvard"] = harvard_with_distractors(recognizer, args.lists, known, args.limit,
                                                 [args.weight])


if __name__ == "__main__":
    main()
