"""The synthetic training corpus: English text from WordNet, spoken by espeak-ng, flite and Pico.

Text: the example sentences of WordNet 3.0 (Debian `wordnet-base`, Princeton WordNet licence,
free to use and redistribute with its notice), filtered to plain sentences of 3-24 words and
made disjoint from the Harvard sentences, which are kept for evaluation.

Speech: every line is spoken by the chosen voices into 16 kHz mono wavs. flite voices also give
their phone segmentation (`flite -psdur`), ground truth for alignment and duration models.
SVOX Pico (`pico2wave`, Debian's non-free `libttspico-utils`) adds another engine's two voices.
Festival voices are deliberately not offered: they are the held-out test.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import soxr

from pipeline.data.manifests import Utterance, read_manifest, write_manifest

CORPUS_SAMPLE_RATE = 16_000
WORDNET_DIR = Path("/usr/share/wordnet")
# a copy of ../shared/data/harvard-sentences.txt (public domain), so a clone is self-contained
HARVARD = Path(__file__).resolve().parents[1] / "resources" / "harvard-sentences.txt"

FLITE_VOICES = ("kal16", "awb", "rms", "slt")
# espeak-ng voices: a language plus an optional variant (+m3, +f2, ...)
ESPEAK_LANGUAGES = ("en-us", "en-us-nyc", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd")
# espeak-ng's front-end with MBROLA's diphone back-end (Debian's non-free mbrola-us1, -us2, -us3
# and -en1): concatenative voices, a kind of synthesis the formant and statistical voices lack
ESPEAK_MBROLA = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
# SVOX Pico's English voices (`pico2wave -l`): one female speaker each, US and British
PICO_VOICES = ("en-US", "en-GB")
# each engine's program and the Debian package that has it (Pico's is non-free: make corpus-voices)
_PROGRAMS = {"flite": ("flite", "flite"), "espeak-ng": ("espeak-ng", "espeak-ng"),
             "pico": ("pico2wave", "libttspico-utils")}
# spoken only in evaluation (pipeline.evaluation.evalsets), never in a training corpus
ESPEAK_HELD_OUT = ("en-gb-x-gbclan",)
DEFAULT_VOICES = ("slt", "awb", "rms", "kal16", "en-us", "en-gb+f2", "en-us+m3", "en-gb-x-rp+f3")
# each flite voice's own mean F0 in Hz (measured here; kal16's is in its source), which
# `int_f0_target_mean` replaces; rms ignores that feature, so it varies only in tempo
FLITE_F0_MEAN = {"slt": 170.0, "awb": 130.0, "kal16": 105.0}
ESPEAK_WPM, ESPEAK_PITCH = 175, 50  # espeak-ng's defaults for -s and -p


class CorpusError(ValueError):
    pass


# ---------------------------------------------------------------- text


def normalize_for_match(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def read_harvard(path: Path = HARVARD) -> list[str]:
    """The Harvard sentences, one a line, comments dropped."""
    lines = path.read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


def _wordnet_glosses_raw(wordnet_dir: Path) -> Iterator[str]:
    """The gloss field (definitions and quoted examples, after '|') of every synset line."""
    files = sorted(wordnet_dir.glob("data.*"))
    if not files:
        raise CorpusError(f"no WordNet data in {wordnet_dir}: install Debian's wordnet-base")
    for f in files:
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header lines start with two spaces
            yield line.split("|", 1)[1]


def _unique(items: Iterable[str]) -> list[str]:
    """Non-empty items, first occurrence only, in order."""
    return [x for x in dict.fromkeys(items) if x]


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Quoted example sentences from WordNet's data files, in file order, deduplicated."""
    return _unique(example.strip().strip(";,").strip()
                   for gloss in _wordnet_glosses_raw(wordnet_dir)
                   for example in re.findall(r'"([^"]+)"', gloss))


def wordnet_glosses(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """WordNet's definitions ("a small rowboat ..."), without their quoted examples, in file
    order, deduplicated: text for a language model, not prompts to speak."""
    return _unique(part.strip() for gloss in _wordnet_glosses_raw(wordnet_dir)
                   for part in gloss.split(";") if '"' not in part)


_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9 ,.'?!-]*$")


def build_training_text(
    exclude: Iterable[str] = (), min_words: int = 3, max_words: int = 24, glosses: bool = False,
) -> list[str]:
    """WordNet example sentences usable as TTS/ASR prompts, none of them in `exclude`; with
    `glosses`, WordNet's definitions too (language-model text: they are phrases, not sentences).

    A sentence is dropped if it matches an excluded one after normalisation, or contains
    one (so a Harvard sentence never hides inside a longer line). The order is shuffled with
    a fixed seed: WordNet's own order groups sentences by part of speech and topic, and a
    corpus built from the first N lines should be a fair sample.
    """
    excluded = {normalize_for_match(s) for s in exclude}
    out = []
    for s in wordnet_examples() + (wordnet_glosses() if glosses else []):
        if not _PLAIN.match(s) or "--" in s:
            continue
        n = len(s.split())
        if not min_words <= n <= max_words:
            continue
        key = normalize_for_match(s)
        if key in excluded or any(e and e in key for e in excluded if len(e) > 20):
            continue
        out.append(s[0].upper() + s[1:])
    random.Random(0).shuffle(out)
    return out


def short_utterances(lines: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """`n` utterances of one to seven words, made from `lines` (the training text): a word
    alone, two neighbouring words, a number, or a string of digits said one by one.

    Sentences are all a text corpus holds, but people also say a word or a number alone (a
    command, an answer, a name, a code), and a recogniser that has only heard sentences turns a
    lone word into a phrase. Words are drawn by the square root of their count (everyday words
    often, rare ones sometimes; only words the text uses at least three times), numbers below a
    hundred and digit strings of two to seven digits in equal parts with the rest. Lines repeat
    where `n` exceeds what can be drawn; the draw is fixed by `seed`.
    """
    from num2words import num2words

    keys = [normalize_for_match(line).split() for line in lines]
    counts = Counter(w for words in keys for w in words)
    vocab = [w for w, c in counts.items() if c >= 3 and w.isalpha()]
    if not vocab:
        raise CorpusError("the text has no word used three times: no short utterances to make")
    weights = [math.sqrt(counts[w]) for w in vocab]
    pairs = [words for words in keys if len(words) >= 2]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0 or (kind == 1 and not pairs):
            text = rng.choices(vocab, weights)[0]
        elif kind == 1:
            words = rng.choice(pairs)
            start = rng.randrange(len(words) - 1)
            text = " ".join(words[start: start + 2])
        elif kind == 2:
            text = num2words(rng.randrange(100)).replace("-", " ")
        else:
            text = " ".join(num2words(rng.randrange(10)) for _ in range(rng.randint(2, 7)))
        out.append(text[0].upper() + text[1:])
    return out


def cover_vocabulary(candidates: Sequence[str], known: Sequence[str], target: int = 3,
                     min_uses: int = 3, limit: int | None = None) -> list[str]:
    """Lines of `candidates` that teach the words `known` (the training text) has fewer than
    `target` times, in the candidates' order: a line is taken while one of its words is short of
    `target`, counting the lines taken before it; at most `limit` lines.

    Only words the candidates use at least `min_uses` times count: WordNet's definitions name
    thousands of genera and chemicals once each, and everyday words several times.

    A recogniser that learns spelling from its transcripts spells a word it has heard twice
    the way it sounds ("doon" for dune, "yot" for yacht); its lexicon then picks the nearest
    common word. Speaking these lines gives such words audio of their own, and counting them
    tells the lexicon (pipeline.data.lexicon) which of CMUdict's words are everyday words, not names.
    """
    known_keys = [normalize_for_match(line) for line in known]
    counts = Counter(w for key in known_keys for w in key.split())
    seen = set(known_keys)
    fresh = {line: key.split() for line in dict.fromkeys(candidates)
             if (key := normalize_for_match(line)) not in seen}  # line -> its words
    uses = Counter(w for words in fresh.values() for w in words)
    out = []
    for line, words in fresh.items():
        if any(counts[w] < target and uses[w] >= min_uses for w in words):
            out.append(line)
            counts.update(words)
            if limit is not None and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    engine: str  # "flite", "espeak-ng" or "pico"
    name: str  # flite voice name, espeak-ng voice (language[+variant]) or Pico language

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.engine}-{self.name}".lower()).strip("-")

    @staticmethod
    def parse(spec: str) -> "Voice":
        """'slt' or 'flite:slt' -> flite; 'en-us+m3' or 'espeak-ng:en-us+m3' -> espeak-ng;
        'pico:en-US' (or 'pico:en-us') -> Pico."""
        engine, _, name = spec.rpartition(":")
        engine = engine or ("flite" if spec in FLITE_VOICES else "espeak-ng")
        if engine.startswith("festival") or "festival" in name:
            raise CorpusError("Festival voices are held out for evaluation; do not train on them")
        if engine == "flite":
            if name not in FLITE_VOICES:
                raise CorpusError(f"unknown flite voice {name!r}; choose from {FLITE_VOICES}")
        elif engine == "espeak-ng":
            language = name.split("+")[0]
            if language in ESPEAK_HELD_OUT:
                raise CorpusError(f"espeak-ng {name!r} is held out for evaluation; do not train on it")
            if language not in ESPEAK_LANGUAGES + ESPEAK_MBROLA:
                raise CorpusError(f"unknown espeak-ng voice {name!r}; languages: {ESPEAK_LANGUAGES}, "
                                  f"MBROLA voices: {ESPEAK_MBROLA}")
            if language in ESPEAK_MBROLA and name != language:
                raise CorpusError(f"MBROLA voice {name!r}: MBROLA voices take no variant")
        elif engine == "pico":
            known = {v.lower(): v for v in PICO_VOICES}
            if name.lower() not in known:
                raise CorpusError(f"unknown Pico voice {name!r}; choose from {PICO_VOICES}")
            name = known[name.lower()]
        else:
            raise CorpusError(f"unknown engine {engine!r} (flite, espeak-ng or pico)")
        return Voice(engine, name)


@dataclass(frozen=True)
class Prosody:
    """How one utterance departs from its voice's own delivery: `stretch` multiplies durations
    (1.2 is 20% slower) and `pitch` the mean F0. Synthetic voices speak every line with the
    same prosody; a recogniser trained on that meets another engine's (Festival's) intonation
    and timing for the first time at test."""

    stretch: float = 1.0
    pitch: float = 1.0

    @staticmethod
    def sample(rng: random.Random, spread: float) -> "Prosody":
        """Factors drawn log-uniformly within [1/(1+spread), 1+spread]."""
        _check_prosody_spread(spread)
        bound = math.log1p(spread)
        return Prosody(stretch=round(math.exp(rng.uniform(-bound, bound)), 3),
                       pitch=round(math.exp(rng.uniform(-bound, bound)), 3))

    def flite_args(self, voice_name: str) -> list[str]:
        args = ["--setf", f"duration_stretch={self.stretch}"]
        if voice_name in FLITE_F0_MEAN:
            args += ["--setf", f"int_f0_target_mean={FLITE_F0_MEAN[voice_name] * self.pitch:.1f}"]
        return args

    def espeak_args(self) -> list[str]:
        # -p is espeak-ng's 0-99 pitch setting: measured here, 20 points move the mean F0 ~20%
        pitch = min(99, max(0, round(ESPEAK_PITCH + 100 * (self.pitch - 1))))
        return ["-s", str(round(ESPEAK_WPM / self.stretch)), "-p", str(pitch)]

    def pico_markup(self, text: str) -> str:
        """`text` inside Pico's speed and pitch tags (percent of the voice's own, measured here
        to move duration and F0 as asked)."""
        speed, pitch = round(100 / self.stretch), round(100 * self.pitch)
        return f"<speed level='{speed}'><pitch level='{pitch}'>{text}</pitch></speed>"


def _check_prosody_spread(spread: float) -> None:
    if not 0.0 <= spread < 1.0:
        raise CorpusError(f"prosody spread must be in [0, 1), got {spread}")


def speak(voice: Voice, text: str, out_wav: Path, prosody: Prosody | None = None) -> list[tuple[str, float]]:
    """Synthesise `text` into a 16 kHz mono wav; return flite's (phone, end seconds) or []."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice.engine == "flite":
            extra = prosody.flite_args(voice.name) if prosody else []
            cmd = ["flite", "-voice", voice.name, *extra, "-psdur", "-t", text, "-o", str(raw)]
        elif voice.engine == "pico":
            if "<" in text:  # markup of its own would change how Pico reads the line
                raise CorpusError(f"Pico reads '<' as markup: {text!r}")
            spoken = prosody.pico_markup(text) if prosody else text
            cmd = ["pico2wave", "-l", voice.name, "-w", str(raw), "--", spoken]
        else:
            extra = prosody.espeak_args() if prosody else []
            cmd = ["espeak-ng", "-v", voice.name, *extra, "-w", str(raw), "--", text]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not raw.exists():
            raise CorpusError(f"{voice.engine} failed on {text!r}: {proc.stderr.strip()}")
        data, rate = sf.read(str(raw), dtype="float32")
        if rate != CORPUS_SAMPLE_RATE:
            data = soxr.resample(data, rate, CORPUS_SAMPLE_RATE, quality="HQ").clip(-1.0, 1.0)
        tmp_out = out_wav.with_name(f".{out_wav.name}.tmp")  # not matched by wavs/*/*.wav
        sf.write(str(tmp_out), data, CORPUS_SAMPLE_RATE, subtype="PCM_16", format="WAV")
        tmp_out.replace(out_wav)
    return parse_psdur(proc.stdout) if voice.engine == "flite" else []


def parse_psdur(output: str) -> list[tuple[str, float]]:
    """'pau:0.184 dh:0.236 ...' -> [('pau', 0.184), ('dh', 0.236), ...]."""
    phones = []
    for item in output.split():
        phone, _, end = item.rpartition(":")
        if phone:
            phones.append((phone, float(end)))
    return phones


# ---------------------------------------------------------------- corpus


def utterance_id(voice: Voice, text: str, prosody_spread: float = 0.0) -> str:
    """Voice slug plus a hash of the text (and of the prosody spread, when there is one)."""
    key = text if not prosody_spread else f"{text}\nprosody={prosody_spread}"
    return f"{voice.slug}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def utterance_prosody(uid: str, prosody_spread: float) -> Prosody | None:
    """The prosody an utterance is spoken with: drawn from its id, so a resumed or rebuilt
    corpus speaks every line as before."""
    if not prosody_spread:
        return None
    return Prosody.sample(random.Random(uid), prosody_spread)


def _job(args: tuple[Voice, str, str, float]) -> dict:
    """Speak one line unless its wav exists; return its manifest record."""
    voice, text, out_dir, prosody_spread = args
    uid = utterance_id(voice, text, prosody_spread)
    wav = Path(out_dir) / "wavs" / voice.slug / f"{uid}.wav"
    phones_file = wav.with_suffix(".phones")
    # a flite wav without its phones (a run stopped between the two writes) is spoken again
    if not wav.exists() or (voice.engine == "flite" and not phones_file.exists()):
        wav.parent.mkdir(parents=True, exist_ok=True)
        phones = speak(voice, text, wav, utterance_prosody(uid, prosody_spread))
        if phones:
            tmp = phones_file.with_name(f".{phones_file.name}.tmp")
            tmp.write_text(" ".join(f"{p}:{t:.3f}" for p, t in phones))
            tmp.replace(phones_file)
    phones = parse_psdur(phones_file.read_text()) if phones_file.exists() else None
    duration = sf.info(str(wav)).duration
    return Utterance(
        id=uid,
        audio=str(wav.relative_to(out_dir)),
        text=text,
        duration=round(duration, 4),
        speaker=voice.slug,
        phones=phones,
    ).to_dict()


def assign_voices(n_lines: int, voices: Sequence[Voice], spread: bool) -> list[tuple[int, Voice]]:
    """Which voice speaks which line: all voices every line, or (spread) one voice per line."""
    if spread:
        return [(i, voices[i % len(voices)]) for i in range(n_lines)]
    return [(i, v) for i in range(n_lines) for v in voices]


def build_corpus(
    lines: Sequence[str],
    voices: Sequence[Voice],
    out_dir: Path,
    spread: bool = False,
    workers: int = 2,
    progress: bool = True,
    prosody_spread: float = 0.0,
) -> tuple[Path, int]:
    """Speak `lines` into `out_dir`; merge into `out_dir/manifest.jsonl`.

    Deterministic (ids hash voice and text) and resumable (existing wavs are kept).
    With `prosody_spread` s > 0 each utterance gets its own tempo and mean pitch, factors in
    [1/(1+s), 1+s] (`Prosody`), and ids of their own.
    Returns the manifest path and the number of wavs written by this call.
    """
    _check_prosody_spread(prosody_spread)
    for engine in {v.engine for v in voices}:
        program, package = _PROGRAMS[engine]
        if shutil.which(program) is None:
            raise CorpusError(f"{program} is not installed (apt-get install {package})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a line repeated in the text is one utterance per voice, spoken once (same id, same wav)
    pairs = dict.fromkeys((v, lines[i]) for i, v in assign_voices(len(lines), voices, spread))
    jobs = [(v, text, str(out_dir), prosody_spread) for v, text in pairs]
    before = sum(1 for _ in out_dir.glob("wavs/*/*.wav"))
    records = _run_jobs(jobs, workers, progress)
    written = sum(1 for _ in out_dir.glob("wavs/*/*.wav")) - before
    manifest = out_dir / "manifest.jsonl"
    merged = {u.id: u for u in read_manifest(manifest)} if manifest.exists() else {}
    merged.update((r["id"], Utterance.from_dict(r)) for r in records)
    ordered = sorted(merged.values(), key=lambda u: (u.speaker, u.id))
    if not manifest.exists() or [u.to_dict() for u in read_manifest(manifest)] != [
        u.to_dict() for u in ordered
    ]:
        write_manifest(manifest, ordered)
    return manifest, written


def _run_jobs(jobs: list, workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="utt", disable=not progress, desc="corpus")
    records = []
    if workers <= 1:
        for job in jobs:
            records.append(_job(job))
            bar.update()
    else:
        # forked workers must not call torch: once the parent's thread pool has run (a test
        # session, a notebook), a forked child's first parallel torch op can deadlock. Speaking
        # needs only flite/espeak-ng, soundfile and soxr; spawn would be safe but re-imports
        # torch in every worker.
        with ProcessPoolExecutor(workers) as pool:
            for record in pool.map(_job, jobs, chunksize=16):
                records.append(record)
                bar.update()
    bar.close()
    return records


def write_lines(path: Path, lines: Iterable[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = list(lines)
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def corpus_stats(lines: Sequence[str]) -> dict:
    words = {w for line in lines for w in normalize_for_match(line).split()}
    return {"sentences": len(lines), "distinct_words": len(words)}
