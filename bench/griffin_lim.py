"""Griffin-Lim vocoder: intelligibility, spectral convergence and speed of each route.

flite's slt voice speaks Harvard sentences (lists 1-3 by default); each utterance goes to the
TTS log-mel (pipeline.frontend.features.TTS_FEATURES) and back through Griffin-Lim. PocketSphinx reads
the original and every resynthesis; the acceptance bar is a resynthesis WER within 1.2x of the
original's. Spectral convergence is measured on the mel -> Griffin-Lim -> mel round trip.

    .venv/bin/python bench/griffin_lim.py --json
"""

from __future__ import annotations

import sys
from pathlib import Path

# the repo root, not bench/, comes first: a bench/<name>.py must not shadow a stdlib module
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from pipeline.data.corpus import Voice, read_harvard, speak  # noqa: E402
from pipeline.evaluation.judges import pocketsphinx_transcribe, spectral_convergence, wer  # noqa: E402
from pipeline.frontend.audio import load_audio  # noqa: E402
from pipeline.frontend.features import DEFAULT_VOCODER, TTS_FEATURES, VOCODERS, LogMel  # noqa: E402

MAX_WER_RATIO = 1.2


def _speak_all(sentences: list[str], voice: Voice, folder: Path) -> list[torch.Tensor]:
    wavs = []
    for i, text in enumerate(sentences):
        path = folder / f"{i:03d}.wav"
        speak(voice, text, path)
        wavs.append(load_audio(path, TTS_FEATURES.sample_rate))
    return wavs


def _measure(route: str, n_iter: int, wavs: list[torch.Tensor], refs: list[str],
             original_wer: float) -> dict:
    logmel = LogMel(TTS_FEATURES)
    vocoder = VOCODERS[route](TTS_FEATURES, n_iter=n_iter)
    seconds, convergence, hyps = 0.0, [], []
    for wav in wavs:
        mel = logmel(wav)[0][0]  # (T, n_mels)
        start = time.perf_counter()
        resynth = vocoder(mel)
        seconds += time.perf_counter() - start
        convergence.append(spectral_convergence(mel, logmel(resynth)[0][0]))
        hyps.append(pocketsphinx_transcribe(resynth, TTS_FEATURES.sample_rate))
    audio_seconds = sum(w.numel() for w in wavs) / TTS_FEATURES.sample_rate
    route_wer = wer(refs, hyps)
    return {
        "wer": round(route_wer, 4),
        "wer_ratio": round(route_wer / original_wer, 3) if original_wer else None,
        "spectral_convergence_mean": round(sum(convergence) / len(convergence), 4),
        "spectral_convergence_max": round(max(convergence), 4),
        "rtf": round(seconds / audio_seconds, 4),
    }


def _machine() -> str:
    """CPU model, core count and load: run times on a busy machine are not comparable."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        model = names[0] if names else model
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=30, help="first N Harvard sentences")
    parser.add_argument("--voice", default="slt", help="flite voice")
    parser.add_argument("--iters", type=int, nargs="+", default=[32, 60])
    parser.add_argument("--routes", nargs="+", default=sorted(VOCODERS), choices=sorted(VOCODERS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    refs = read_harvard()[: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        wavs = _speak_all(refs, Voice("flite", args.voice), Path(tmp))
    original_wer = wer(refs, [pocketsphinx_transcribe(w) for w in wavs])
    print(f"original WER {original_wer:.4f} over {len(refs)} sentences", file=sys.stderr)

    routes: dict[str, dict[str, dict]] = {}
    for route in args.routes:
        for n_iter in args.iters:
            result = _measure(route, n_iter, wavs, refs, original_wer)
            routes.setdefault(route, {})[str(n_iter)] = result
            print(f"{route:>10} n_iter={n_iter:<3} {result}", file=sys.stderr)

    # better = lower WER (the acceptance measure), then lower spectral convergence
    def score(route: str) -> tuple[float, float]:
        rows = routes[route].values()
        return (min(r["wer"] for r in rows), min(r["spectral_convergence_mean"] for r in rows))

    summary = {
        "voice": f"flite:{args.voice}",
        "sentences": len(refs),
        "audio_seconds": round(sum(w.numel() for w in wavs) / TTS_FEATURES.sample_rate, 2),
        "original_wer": round(original_wer, 4),
        "routes": routes,
        "best_route": min(routes, key=score),
        "default_route": DEFAULT_VOCODER,
        "max_wer_ratio": MAX_WER_RATIO,
        "default_within_bar": all(
            r["wer_ratio"] is not None and r["wer_ratio"] <= MAX_WER_RATIO
            for r in routes.get(DEFAULT_VOCODER, {}).values()
        ),
        "threads": args.threads,
        "machine": _machine(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
