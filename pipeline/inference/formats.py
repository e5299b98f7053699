"""Transcripts as text, JSON, SubRip (srt) and WebVTT (vtt).

A transcript is the dict an ASR job returns: `{"text", "words": [{"word", "start", "end",
"confidence"}], "duration"}`, times in seconds. Subtitle cues group words up to a length and a
duration, so a line stays readable.
"""

from __future__ import annotations

import json

FORMATS = ("txt", "json", "srt", "vtt")
MEDIA_TYPES = {"txt": "text/plain", "json": "application/json", "srt": "application/x-subrip",
               "vtt": "text/vtt"}


def cues(transcript: dict, max_chars: int = 42, max_seconds: float = 5.0) -> list[tuple[float, float, str]]:
    """(start, end, text) subtitle cues from the word times."""
    words = transcript.get("words") or []
    if not words:
        text = transcript.get("text", "").strip()
        return [(0.0, float(transcript.get("duration") or 0.0), text)] if text else []
    out, current = [], []
    for w in words:
        if current and (len(" ".join(x["word"] for x in current + [w])) > max_chars
                        or w["end"] - current[0]["start"] > max_seconds):
            out.append((current[0]["start"], current[-1]["end"], " ".join(x["word"] for x in current)))
            current = []
        current.append(w)
    out.append((current[0]["start"], current[-1]["end"], " ".join(x["word"] for x in current)))
    return out


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(transcript: dict) -> str:
    blocks = [f"{i}\n{_timestamp(a, ',')} --> {_timestamp(b, ',')}\n{text}\n"
              for i, (a, b, text) in enumerate(cues(transcript), 1)]
    return "\n".join(blocks)


def to_vtt(transcript: dict) -> str:
    blocks = [f"{_timestamp(a, '.')} --> {_timestamp(b, '.')}\n{text}\n" for a, b, text in cues(transcript)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(transcript: dict, fmt: str) -> str:
    if fmt == "txt":
        return transcript.get("text", "") + "\n"
    if fmt == "json":
        return json.dumps(transcript) + "\n"
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    raise ValueError(f"unknown transcript format {fmt!r}; one of {FORMATS}")
