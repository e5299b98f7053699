"""What mixed precision buys at inference: the shipped models in float32 against bf16 (or fp16)
autocast, in one process on one device.

    .venv/bin/python bench/precision.py --json                      # CPU: fp32 vs bf16
    python bench/precision.py --json --device cuda --precision bf16 # on a GPU

Synthesises Harvard sentences with the NAT and AR models and transcribes the NAT audio with the
ASR model, in a batch, once per precision (after a warm-up). Reported per precision: seconds for
each stage, the ASR WER against the prompts, and between the precisions the WER of the low
precision transcripts against the float32 ones and the mel difference (NAT, which is
deterministic). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

import torch  # noqa: E402

from pipeline.checkpoints import DEFAULT_NAMES  # noqa: E402
from pipeline.evaluation.evalsets import harvard_lists, parse_lists  # noqa: E402
from pipeline.evaluation.judges import wer  # noqa: E402
from pipeline.inference.recognizer import Recognizer  # noqa: E402
from pipeline.inference.synthesizer import Synthesizer  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def run(precision: str, device: str, sentences: list[str], checkpoints: Path | None, repeats: int) -> dict:
    ckpt = (lambda role: checkpoints / DEFAULT_NAMES[role]) if checkpoints else (lambda role: None)
    nat = Synthesizer.load(ckpt("tts-nat"), device, decoder="nat", precision=precision)
    ar = Synthesizer.load(ckpt("tts-ar"), device, decoder="ar", precision=precision)
    asr = Recognizer.load(ckpt("asr"), device, precision=precision)
    dev = nat.device
    nat.mels(sentences[:2]), ar.mels(sentences[:2])  # warm up (kernels, caches)
    asr.transcribe_batch([r.wav for r in nat.synthesize_batch(sentences[:2])])
    out = {"precision": nat.precision}
    best = {}
    for _ in range(repeats):
        mels, nat_s = _timed(dev, lambda: nat.mels(sentences))
        _, ar_s = _timed(dev, lambda: ar.mels(sentences))
        wavs = [r.wav for r in nat.synthesize_batch(sentences)]
        texts, asr_s = _timed(dev, lambda: [t.text for t in asr.transcribe_batch(wavs)])
        for k, v in (("nat_mel_seconds", nat_s), ("ar_mel_seconds", ar_s), ("asr_seconds", asr_s)):
            best[k] = min(best.get(k, v), v)
    out.update({k: round(v, 3) for k, v in best.items()})
    out["audio_seconds"] = round(sum(w.numel() for w in wavs) / nat.sample_rate, 2)
    out["asr_wer"] = round(wer(sentences, texts), 4)
    return out | {"_mels": [m.cpu() for m in mels], "_texts": texts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"], help="against fp32")
    p.add_argument("--lists", default="1-2", help="Harvard lists, e.g. 1-2")
    p.add_argument("--checkpoints", type=Path, default=None, help="folder of asr.pt, tts-*.pt")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per precision; best kept")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sentences = harvard_lists(parse_lists(a.lists))
    full = run("fp32", a.device, sentences, a.checkpoints, a.repeats)
    low = run(a.precision, a.device, sentences, a.checkpoints, a.repeats)
    diffs = [(m1 - m2).abs().mean().item() for m1, m2 in zip(full["_mels"], low["_mels"])
             if m1.shape == m2.shape]
    report = {
        "machine": platform.node(), "device": a.device,
        "gpu": torch.cuda.get_device_name(0) if torch.device(a.device).type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "sentences": len(sentences),
        "fp32": {k: v for k, v in full.items() if not k.startswith("_")},
        a.precision: {k: v for k, v in low.items() if not k.startswith("_")},
        "speedup": {k: round(full[k] / low[k], 2) for k in ("nat_mel_seconds", "ar_mel_seconds", "asr_seconds")},
        "asr_wer_against_fp32": round(wer(full["_texts"], low["_texts"]), 4),
        "nat_same_length": len(diffs),
        "nat_mel_mean_abs_diff_max": round(max(diffs), 4) if diffs else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if not a.json:
        for k, v in report.items():
            print(f"{k}: {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
