"""Evaluation tools: word error rate, a reference recogniser, and held-out Festival voices.

`wer` scores on `words_for_scoring` text, so "Dr. Smith paid $5" and "doctor smith paid five
dollars" are the same words. `pocketsphinx_transcribe` is an independent recogniser (its own
English acoustic model, language model and dictionary) for judging synthetic speech.
`festival_speak` renders text with Festival voices, which no training corpus may use: they are
the held-out speakers a model is tested on.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.frontend.audio import load_audio
from pipeline.frontend.text import words_for_scoring

POCKETSPHINX_RATE = 16_000  # the rate of pocketsphinx's bundled en-us acoustic model
# Festival voice -> the Scheme call that selects it (Debian festvox-us-slt-hts, festvox-kallpc16k)
FESTIVAL_VOICES = {
    "cmu_us_slt_arctic_hts": "(voice_cmu_us_slt_arctic_hts)",
    "kal_diphone": "(voice_kal_diphone)",
}


class EvaluationError(RuntimeError):
    pass


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate (total edits / total reference words) on normalised words."""
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs = [words_for_scoring(r) for r in refs]
    hyps = [words_for_scoring(h) for h in hyps]
    if not any(refs):
        raise ValueError("the references hold no words")
    # jiwer rejects empty references; score each pair and pool the counts instead
    errors = words = 0
    for ref, hyp in zip(refs, hyps):
        n = len(ref.split())
        if n == 0:
            errors += len(hyp.split())  # every hypothesis word is an insertion
            continue
        out = jiwer.process_words(ref, hyp if hyp else "")
        errors += out.substitutions + out.deletions + out.insertions
        words += n
    return errors / words


def spectral_convergence(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """||M_ref - g M_est||_F / ||M_ref||_F on mel magnitudes, g the least-squares gain.

    The gain makes the score blind to overall level (vocoders peak-normalise their output);
    frames beyond the shorter of the two are ignored.

    Args:
        reference, estimate: (T, n_mels) log-mel frames (natural log, as `LogMel` gives).
    """
    frames = min(reference.size(0), estimate.size(0))
    ref = reference[:frames].double().exp()
    est = estimate[:frames].double().exp()
    gain = (ref * est).sum() / (est * est).sum().clamp_min(1e-12)
    return float((ref - gain * est).norm() / ref.norm().clamp_min(1e-12))


@functools.cache
def _pocketsphinx_decoder():
    from pocketsphinx import Decoder

    return Decoder(samprate=POCKETSPHINX_RATE, loglevel="FATAL")


def pocketsphinx_transcribe(audio: str | os.PathLike | torch.Tensor | np.ndarray,
                            sample_rate: int = POCKETSPHINX_RATE) -> str:
    """Recognise one utterance with PocketSphinx's bundled US English models.

    Args:
        audio: a file path (checked and resampled by `load_audio`), or a (N,) float waveform
            in [-1, 1] at `sample_rate`.
    Returns:
        Lower-case words, fillers and silence markers dropped ("" when nothing was heard).
    """
    if isinstance(audio, (str, os.PathLike)):
        wav = load_audio(audio, POCKETSPHINX_RATE)
    else:
        wav = torch.as_tensor(audio, dtype=torch.float32).flatten()
        if sample_rate != POCKETSPHINX_RATE:
            import torchaudio.functional as AF

            wav = AF.resample(wav, sample_rate, POCKETSPHINX_RATE)
    pcm = (wav.clamp(-1.0, 1.0) * 32767).round().to(torch.int16).numpy()
    decoder = _pocketsphinx_decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.lower().strip() if hyp is not None else ""


def festival_speak(text: str, voice: str, out_wav: str | os.PathLike, timeout: float = 120) -> Path:
    """Speak `text` with a Festival voice into `out_wav` (the voice's own rate, 16-bit mono).

    Args:
        voice: a key of `FESTIVAL_VOICES` (with or without the `voice_` prefix).
    """
    voice = voice.removeprefix("voice_")
    if voice not in FESTIVAL_VOICES:
        raise EvaluationError(
            f"unknown Festival voice {voice!r}; choose from {sorted(FESTIVAL_VOICES)}")
    if shutil.which("text2wave") is None:
        raise EvaluationError("Festival is not installed (apt-get install festival)")
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(
            ["text2wave", "-eval", FESTIVAL_VOICES[voice], "-o", str(out_wav), f.name],
            capture_output=True, text=True, timeout=timeout,
        )
    # text2wave exits 0 even when the voice is missing; it says so on stderr and writes nothing
    if "unbound variable" in proc.stderr:
        out_wav.unlink(missing_ok=True)
        raise EvaluationError(f"Festival voice {voice} is not installed: {proc.stderr.strip()}")
    if proc.returncode != 0 or not out_wav.is_file() or out_wav.stat().st_size <= 44:
        raise EvaluationError(f"Festival could not speak with {voice}: {proc.stderr.strip()}")
    return out_wav
