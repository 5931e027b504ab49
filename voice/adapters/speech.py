"""Speech for recordings and local prompts: speech to text behind :class:`Transcriber`, text to speech behind
:class:`Synthesizer`.

Live calls never come through here: production speech capture stays with Twilio's ``<Gather input="speech">``.
This module is for audio Warmline holds itself — voicemail and any other ``<Record>`` (see
:mod:`voice.adapters.recordings`) — and for speaking prompts locally (tests, demos, the emulator).

Why PocketSphinx with a *domain* language model by default
    It is the only English recogniser that installs offline from PyPI (Vosk and Whisper download models at run
    time), so it is the only default that works on a locked-down host and in CI. Its general language model loses
    the words that decide a department on telephone audio (8 kHz µ-law, 300-3400 Hz), a quarter of the time on
    this project's measurements. A small n-gram model built from the flow's own phrases (department examples and
    names, prompts, common caller words) puts those words back: the decoder mostly chooses among words a caller of
    *this* flow is likely to say. The 3,000 most frequent English words ride along as bare unigrams so that a word
    the flow never mentions lands on an everyday word rather than on a department keyword (see
    :func:`build_domain_model`). The cost is a closed vocabulary: names, street names and rare words come out as
    the nearest known words. Routing a message is what the transcript is for; the recording itself is always kept
    (:mod:`voice.adapters.recordings`), so a rep can listen to the exact words.

    The model files are keyed by a hash of what goes into them, so editing the flow builds new files and an
    unchanged flow reuses the old ones across restarts and processes.

Why one cached decoder
    Loading the acoustic model takes ~0.4 s; SpeechRecognition's ``recognize_sphinx`` does it on every call.
    :class:`SphinxTranscriber` builds one decoder on first use and reuses it. A PocketSphinx decoder is not
    re-entrant, so a lock serialises utterances: at 0.25-0.35 s for a two-second message (p50 measured on a busy
    2-core host, ``bench/speech_routing.py``) that is fine for voicemail; create more transcribers (one decoder
    each, ~40 MB) if it ever is not.

Other engines
    :class:`SpeechRecognitionTranscriber` exposes any ``Recognizer.recognize_<engine>`` of SpeechRecognition
    (vosk, whisper, google, ...) for ``config.yaml``; they need models or network access this module does not
    provide, so none of them is the default or used in tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import string
import struct
import sys
import tempfile
import threading
import time
import unicodedata
import wave
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ivr_flows import Flow

__all__ = [
    "COMMON_CALLER_PHRASES",
    "DEFAULT_ENGINE",
    "Pyttsx3Synthesizer",
    "SpeechRecognitionTranscriber",
    "SphinxTranscriber",
    "SynthesisFailed",
    "Synthesizer",
    "Transcriber",
    "Transcript",
    "TranscriptionFailed",
    "decode_wav",
    "domain_phrases",
    "make_transcriber",
    "normalise_text",
]

log = logging.getLogger(__name__)

#: Engine used when ``config.yaml`` names none: offline, no model download.
DEFAULT_ENGINE = "sphinx"

#: The acoustic model (PocketSphinx's bundled US-English model) is trained on 16 kHz audio.
MODEL_RATE = 16_000
#: Sample rates accepted from a WAV header: from narrow-band telephony to studio audio.
MIN_RATE, MAX_RATE = 4_000, 192_000

#: What callers say around the words that decide a department, and what a voicemail is made of, so that "hi I'm
#: calling because ..." has n-grams of its own instead of being forced onto example words. Kept generic on purpose:
#: none of it is tuned to bench/speech_routing.py's phrases (that would flatter the benchmark).
COMMON_CALLER_PHRASES: tuple[str, ...] = (
    "yes",
    "no",
    "yeah",
    "okay",
    "please",
    "thank you",
    "thanks",
    "hello",
    "hi",
    "bye",
    "goodbye",
    "I want to",
    "I need to",
    "I would like to",
    "I'd like to",
    "I'm calling about",
    "I'm calling because",
    "I have a question about",
    "can you help me",
    "can I",
    "how do I",
    "my account",
    "my name is",
    "my number is",
    "my phone number is",
    "please call me back",
    "call me back",
    "speak to someone",
    "it's not working",
    "I don't know",
    "today",
    "tomorrow",
    "this morning",
    "this afternoon",
    "zero one two three four five six seven eight nine",
)

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CLAUSE_BREAK_RE = re.compile(r"[.?!,;:\n\"()\[\]]+")
_NOT_WORD_RE = re.compile(r"[^a-z0-9' ]+")
_DIGITS_RE = re.compile(r"\d")


# --- results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """What an engine heard. ``text`` is lower-case words, "" when it heard no words at all (silence, noise)."""

    text: str
    #: Engine name as ``config.yaml`` spells it ("sphinx", "vosk", ...): says how far to trust ``text``.
    engine: str
    #: Engine's own confidence in [0, 1], or None when the engine gives none. Not comparable across engines.
    confidence: float | None


class TranscriptionFailed(Exception):
    """The audio could not be transcribed; ``str(exc)`` is a reason fit for a rep's screen and the logs."""


class SynthesisFailed(RuntimeError):
    """The text-to-speech engine produced no usable audio."""


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text for a whole recording."""

    def transcribe(self, wav: bytes) -> Transcript:
        """Transcribe a WAV file's bytes; raise :class:`TranscriptionFailed` with a reason if impossible."""
        ...


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech for local prompts."""

    def synthesize(self, text: str) -> bytes:
        """The bytes of a WAV file speaking ``text``."""
        ...


# --- audio --------------------------------------------------------------------------------------------------------

_WAVE_PCM, _WAVE_FLOAT, _WAVE_ALAW, _WAVE_MULAW, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE


def _g711_tables() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """µ-law and A-law byte -> sample tables (ITU-T G.711), scaled to [-1, 1].

    Written out rather than taken from ``audioop``: that module is deprecated and gone in Python 3.13, and
    µ-law is what a telephone recording is made of.
    """
    codes = np.arange(256, dtype=np.int64)
    u = ~codes & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    mulaw = np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.float64) / 32768.0
    a = codes ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    alaw_mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    alaw = np.where(a & 0x80, alaw_mag, -alaw_mag).astype(np.float64) / 32768.0
    return mulaw, alaw


_MULAW_TABLE, _ALAW_TABLE = _g711_tables()


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TranscriptionFailed("not a WAV file (no RIFF/WAVE header)")
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]  # a recorder cut short, or size 0xFFFFFFFF: take what is there
        yield chunk_id, body
        pos += 8 + size + (size & 1)


def decode_wav(wav: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Mono samples in [-1, 1] and the sample rate of a WAV file's bytes.

    Reads PCM (8/16/24/32-bit), 32/64-bit float, µ-law and A-law, mono or multi-channel (averaged: a two-party
    recording has one speaker per channel). The stdlib ``wave`` module reads only PCM, while a phone recording
    may well arrive as the µ-law it was carried in (sox, Asterisk and others write such WAVs), so this parses the
    RIFF chunks itself.
    """
    fmt: bytes | None = None
    payload: bytes | None = None
    for chunk_id, body in _riff_chunks(wav):
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data" and fmt is not None:
            payload = body
            break
    if fmt is None or len(fmt) < 16:
        raise TranscriptionFailed("WAV file has no valid format chunk")
    if payload is None:
        raise TranscriptionFailed("WAV file has no audio data chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if channels < 1 or block_align < 1:
        raise TranscriptionFailed(f"WAV format chunk is inconsistent ({channels} channels, block {block_align})")
    if not MIN_RATE <= rate <= MAX_RATE:  # also keeps a corrupt header from asking for a huge resampling
        raise TranscriptionFailed(f"unsupported sample rate {rate} Hz (expected {MIN_RATE}-{MAX_RATE})")
    width = block_align // channels
    frames = len(payload) // block_align
    raw = payload[: frames * block_align]
    samples: npt.NDArray[np.float64]
    if tag == _WAVE_PCM and width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == _WAVE_PCM and width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif tag == _WAVE_PCM and width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        packed = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = np.where(packed >= 1 << 23, packed - (1 << 24), packed).astype(np.float64) / float(1 << 23)
    elif tag == _WAVE_PCM and width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    elif tag == _WAVE_FLOAT and width in (4, 8):
        samples = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
    elif tag == _WAVE_MULAW and width == 1:
        samples = _MULAW_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    elif tag == _WAVE_ALAW and width == 1:
        samples = _ALAW_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    else:
        raise TranscriptionFailed(f"unsupported WAV encoding (format tag {tag:#06x}, {bits} bits)")
    if frames == 0:
        raise TranscriptionFailed("WAV file holds no audio")
    if channels > 1:
        samples = samples.reshape(frames, channels).mean(axis=1)
    return np.nan_to_num(samples), rate


def resample(samples: npt.NDArray[np.float64], rate: int, target: int) -> npt.NDArray[np.float64]:
    """Band-limited resampling by zero-padding or truncating the spectrum (whole signal, one FFT each way).

    Ideal interpolation (up to edge effects) for the case that matters, 8 kHz -> 16 kHz: Twilio records at 8 kHz and
    the acoustic model wants 16 kHz. Anti-aliased when going down, and nothing beyond numpy (``audioop`` is gone in
    Python 3.13). A recording is minutes at most, so one FFT over all of it is cheaper than a streaming polyphase
    filter would be to write and check.
    """
    if rate == target or len(samples) == 0:
        return samples
    n_out = max(1, round(len(samples) * target / rate))
    spectrum = np.fft.rfft(samples)
    kept = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    n = min(len(spectrum), len(kept))
    kept[:n] = spectrum[:n]
    out: npt.NDArray[np.float64] = np.fft.irfft(kept, n_out) * (n_out / len(samples))
    return out


def _pcm16(samples: npt.NDArray[np.float64]) -> bytes:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


def wav_to_pcm16(wav: bytes, rate: int = MODEL_RATE) -> bytes:
    """Raw 16-bit little-endian mono PCM at ``rate`` — what PocketSphinx's ``process_raw`` takes."""
    samples, source_rate = decode_wav(wav)
    return _pcm16(resample(samples, source_rate, rate))


# --- text ---------------------------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Lower-case words, digits spelled out, no punctuation: the form transcripts and references are compared in.

    Apostrophes stay ("don't", "i'd"): the pronunciation dictionary spells contractions that way.
    """
    text = unicodedata.normalize("NFKD", text.casefold().replace("\u2019", "'"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # "résumé" -> "resume"
    text = _DIGITS_RE.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    words = (word.strip("'") for word in _NOT_WORD_RE.sub(" ", text).split())
    return " ".join(word for word in words if word)


def _clauses(text: str) -> list[str]:
    """Split on punctuation: each clause is a sentence of the language model, so "Hi, thanks" does not teach it
    that "hi" is followed by "thanks" any more than by anything else."""
    return [clause for part in _CLAUSE_BREAK_RE.split(text) if (clause := normalise_text(part))]


def _render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill the variables we know; a variable we cannot know (``{first_name}``) becomes a clause break."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return template
    for literal, field_name, _, _ in parsed:
        out.append(literal)
        if field_name is not None:
            out.append(values.get(field_name, "\n"))
    return "".join(out)


def _english_texts(value: object) -> list[str]:
    """A flow text as strings: a plain template, or the English entries of a per-language mapping
    (``{"en-US": ..., "es-MX": ...}``); the acoustic model only knows US English."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for tag, text in value.items() if str(tag).lower().startswith("en") and isinstance(text, str)]
    return []


def domain_phrases(flow: Flow) -> list[str]:
    """Everything a caller of ``flow`` is likely to say, one phrase per item, for a domain language model.

    Department examples and spoken names (what decides the routing), every prompt the flow speaks (callers echo
    them: "billing", "press one"), the ask nodes' speech hints (product names, jargon) and
    :data:`COMMON_CALLER_PHRASES`. Prompts come from each node's ``templates()`` hook, so node kinds added later
    contribute theirs without a change here. Order is stable, so the same flow always hashes to the same files.
    """
    menu_options = " ".join(
        f"For {flow.department_name(key)}, press {dept.digit}." for key, dept in flow.departments.items()
    )
    values = {"company": flow.company, "menu_options": menu_options}
    phrases: list[str] = []
    for key, dept in flow.departments.items():
        phrases.append(flow.department_name(key))
        for example in dept.examples:
            phrases.extend(_english_texts(example))
    for node in flow.nodes.values():
        for _, template, _ in node.templates():
            phrases.extend(_render_template(text, values) for text in _english_texts(template))
        phrases.extend(hint for hint in getattr(node, "hints", ()) if isinstance(hint, str))
    phrases.extend(COMMON_CALLER_PHRASES)
    return list(dict.fromkeys(p for p in phrases if p.strip()))


# --- PocketSphinx -------------------------------------------------------------------------------------------------


def _pocketsphinx_model_dir() -> Path:
    import pocketsphinx  # type: ignore[import-untyped, unused-ignore]

    return Path(pocketsphinx.get_model_path()) / "en-us"


@lru_cache(maxsize=4)
def _load_dictionary(path: Path) -> Mapping[str, tuple[str, ...]]:
    """word -> its dictionary lines (the main one and alternates such as ``word(2)``), read once per file."""
    entries: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            head, _, phones = line.strip().partition(" ")
            if not phones:
                continue
            word = head.split("(", 1)[0]
            entries.setdefault(word, []).append(line.strip())
    return {word: tuple(found) for word, found in entries.items()}


@lru_cache(maxsize=4)
def _common_words(general_lm: Path, dictionary: Path, count: int) -> tuple[str, ...]:
    """The ``count`` most probable words of the general language model that the dictionary can pronounce."""
    from pocketsphinx import Config, LogMath, NGramModel  # type: ignore[import-untyped, unused-ignore]

    model = NGramModel(Config(), LogMath(), str(general_lm))
    candidates = [word for word in _load_dictionary(dictionary) if word.replace("'", "").isalpha()]
    return tuple(sorted(candidates, key=lambda word: (-model.prob([word]), word))[:count])


@dataclass(frozen=True)
class DomainModel:
    """Files of a domain language model and what went into them."""

    lm_path: Path
    dict_path: Path
    #: Distinct words of the domain phrases (the model can also output ``background`` words).
    vocabulary: tuple[str, ...]
    #: Everyday words added as unigrams so that words outside the domain have somewhere to go.
    background: tuple[str, ...]
    #: Words of the phrases that the pronunciation dictionary lacks, so the recogniser can never output them.
    missing_words: tuple[str, ...]


#: Everyday words added to every domain model (see :func:`build_domain_model`).
BACKGROUND_WORDS = 3000
#: How many times the domain sentences count against one occurrence of each background word.
DOMAIN_WEIGHT = 3


def build_domain_model(
    phrases: Iterable[str],
    *,
    workdir: Path,
    dictionary: Path,
    general_lm: Path | None = None,
    background_words: int = BACKGROUND_WORDS,
    domain_weight: int = DOMAIN_WEIGHT,
) -> DomainModel:
    """Write (or reuse) an ARPA trigram model and a cut-down dictionary for ``phrases`` under ``workdir``.

    The trigrams come from the phrases only (``pocketsphinx.lm.ArpaBoLM``), counted ``domain_weight`` times. The
    ``background_words`` most frequent words of the general model (``general_lm``) are added as bare unigrams:
    without them a word the flow never mentions ("manager", "weekend") is forced onto the nearest domain word,
    and the nearest is often a department keyword ("refund", "error"), which sends the call to the wrong team.
    On this project's telephone-band benchmark (160 utterances) that took routing from 91 % to 94 % and word
    error rate from 33 % to 27 %; more background words or weight changed nothing measurable.

    A word the dictionary lacks has no pronunciation, so it cannot be decoded: it is dropped and its clause split
    there (keeping it would teach the model n-grams that skip it). Files are named by a hash of everything that
    goes into them, written to a temporary name and renamed, so concurrent processes and changed flows never read
    a half-written or stale model.
    """
    from pocketsphinx.lm import ArpaBoLM  # type: ignore[import-untyped, unused-ignore]

    pronunciations = _load_dictionary(dictionary)
    sentences: list[str] = []
    missing: set[str] = set()
    for phrase in phrases:
        for clause in _clauses(phrase):
            run: list[str] = []
            for word in clause.split():
                if word in pronunciations:
                    run.append(word)
                    continue
                missing.add(word)
                if run:
                    sentences.append(" ".join(run))
                run = []
            if run:
                sentences.append(" ".join(run))
    if not sentences:
        raise ValueError("none of the domain phrases has a word the pronunciation dictionary knows")
    vocabulary = tuple(sorted({word for sentence in sentences for word in sentence.split()}))
    background: tuple[str, ...] = ()
    if general_lm is not None and background_words > 0:
        background = tuple(w for w in _common_words(general_lm, dictionary, background_words) if w not in vocabulary)
    recipe = [str(dictionary.resolve()), f"weight={domain_weight}", *background, "--", *sentences]
    digest = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    lm_path, dict_path = workdir / f"domain-{digest}.lm", workdir / f"domain-{digest}.dict"
    if not lm_path.exists():
        lm = ArpaBoLM(text="\n".join(sentences * max(1, domain_weight)) + "\n", add_start=True, case="lower")
        if background:  # ArpaBoLM reads extra words only from a file
            fd, words_file = tempfile.mkstemp(prefix=".background-", suffix=".txt", dir=workdir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write("\n".join(background) + "\n")
                lm.read_word_file(words_file, 1)
            finally:
                os.unlink(words_file)
        lm.compute()
        with _atomic_path(lm_path) as tmp:
            lm.write_file(str(tmp))
    if not dict_path.exists():
        with _atomic_path(dict_path) as tmp:
            words = sorted({*vocabulary, *background})
            tmp.write_text("".join(f"{line}\n" for word in words for line in pronunciations[word]), "utf-8")
    if missing:
        log.warning(
            "domain language model: no pronunciation for %s; these words cannot be recognised",
            ", ".join(sorted(missing)),
        )
    return DomainModel(lm_path, dict_path, vocabulary, background, tuple(sorted(missing)))


@contextlib.contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


class SphinxTranscriber:
    """Offline PocketSphinx transcription with a domain language model and one cached decoder.

    ``confidence`` is the mean of the words' lattice posteriors (``Decoder.seg()[i].prob``, computed by the
    best-path pass, which is on by default). The posterior of the whole sentence (``Decoder.get_prob()``) was
    tried first: it is the product over words, so one unsure word in a long message drives it to ~0.001 and it
    says nothing about the rest. Neither is calibrated; use it to flag unsure transcripts, not to trust sure ones.
    """

    engine = "sphinx"

    def __init__(
        self,
        domain_phrases: Sequence[str],
        *,
        workdir: Path,
        acoustic_model: Path | None = None,
        dictionary: Path | None = None,
        decoder_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Build (or reuse) the domain model files now, so a bad flow fails at start-up, not on a voicemail.

        The decoder itself (the slow part) is built on the first :meth:`transcribe`.
        """
        model_dir = _pocketsphinx_model_dir()
        self._acoustic_model = acoustic_model or model_dir / "en-us"
        self.model = build_domain_model(
            domain_phrases,
            workdir=Path(workdir),
            dictionary=dictionary or model_dir / "cmudict-en-us.dict",
            general_lm=model_dir / "en-us.lm.bin",
        )
        self._options = dict(decoder_options or {})
        self._decoder: Any = None
        self._lock = threading.Lock()
        self._builds = 0

    @property
    def decoder_builds(self) -> int:
        """How many times a decoder was built (1 after the first transcription, and it should stay 1)."""
        return self._builds

    @property
    def missing_words(self) -> tuple[str, ...]:
        return self.model.missing_words

    def _get_decoder(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder  # type: ignore[import-untyped, unused-ignore]

            options: dict[str, Any] = {
                "hmm": str(self._acoustic_model),
                "lm": str(self.model.lm_path),
                "dict": str(self.model.dict_path),
                "samprate": MODEL_RATE,
                # Half-bit noise: on digital silence (all-zero samples, e.g. a recording padded with zeros) the
                # features degenerate and the decoder "hears" a random word with confidence 1.0.
                "dither": True,
                "seed": 1,
                "loglevel": "ERROR",
            }
            options.update(self._options)
            self._decoder = Decoder(**options)
            self._builds += 1
        return self._decoder

    def transcribe(self, wav: bytes) -> Transcript:
        pcm = wav_to_pcm16(wav)
        with self._lock:
            try:
                decoder = self._get_decoder()
                decoder.start_utt()
                try:
                    decoder.process_raw(pcm, no_search=False, full_utt=True)
                finally:
                    decoder.end_utt()
                hypothesis = decoder.hyp()
                posteriors = [float(seg.prob) for seg in decoder.seg() if not _is_filler(seg.word)]
            except (RuntimeError, ValueError) as exc:
                raise TranscriptionFailed(f"PocketSphinx could not decode the audio: {exc}") from exc
        text = normalise_text(hypothesis.hypstr) if hypothesis is not None else ""
        if not text or not posteriors:
            return Transcript(text="", engine=self.engine, confidence=None)
        confidence = min(1.0, max(0.0, sum(posteriors) / len(posteriors)))
        return Transcript(text=text, engine=self.engine, confidence=round(confidence, 4))


def _is_filler(word: str) -> bool:
    """``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``...: decoder bookkeeping, not words the caller said."""
    return word.startswith(("<", "["))


# --- other SpeechRecognition engines ------------------------------------------------------------------------------


class SpeechRecognitionTranscriber:
    """Any ``Recognizer.recognize_<engine>`` of SpeechRecognition, chosen by name in ``config.yaml``.

    ``options`` go to the recogniser as keyword arguments (``model=``, ``key=``, ``language=``...). Confidence is
    None: most engines return bare text, and those that can return more do so in engine-specific shapes.
    """

    def __init__(self, engine: str, **options: Any) -> None:
        import speech_recognition as sr  # type: ignore[import-untyped, unused-ignore]

        self.engine = engine
        self._recognizer = sr.Recognizer()
        recognize = getattr(self._recognizer, f"recognize_{engine}", None)
        if not callable(recognize):
            known = sorted(
                name.removeprefix("recognize_") for name in dir(sr.Recognizer) if name.startswith("recognize_")
            )
            raise ValueError(f"SpeechRecognition has no engine {engine!r}; it has: {', '.join(known)}")
        self._recognize: Callable[..., Any] = recognize
        if options.get("show_all"):
            raise ValueError("show_all is not supported: a Transcriber returns text")
        self._options = options
        self._sr = sr

    def transcribe(self, wav: bytes) -> Transcript:
        samples, rate = decode_wav(wav)  # also reads the µ-law WAVs that SpeechRecognition's AudioFile rejects
        audio = self._sr.AudioData(_pcm16(samples), rate, 2)
        try:
            result = self._recognize(audio, **self._options)
        except self._sr.UnknownValueError:
            return Transcript(text="", engine=self.engine, confidence=None)
        except self._sr.RequestError as exc:
            raise TranscriptionFailed(f"{self.engine} request failed: {exc}") from exc
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            raise TranscriptionFailed(f"{self.engine} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, str):
            raise TranscriptionFailed(f"{self.engine} returned {type(result).__name__}, not text")
        return Transcript(text=normalise_text(result), engine=self.engine, confidence=None)


def make_transcriber(name: str, flow: Flow, *, workdir: Path, options: Mapping[str, Any] | None = None) -> Transcriber:
    """The transcriber ``config.yaml`` asks for: "sphinx" (default, domain model of ``flow``) or any other
    SpeechRecognition engine name, with its ``options``."""
    name = (name or DEFAULT_ENGINE).strip().lower()
    if name == DEFAULT_ENGINE:
        return SphinxTranscriber(domain_phrases(flow), workdir=workdir, decoder_options=options)
    return SpeechRecognitionTranscriber(name, **dict(options or {}))


# --- text to speech -----------------------------------------------------------------------------------------------

#: ``pyttsx3.init()`` hands every caller the same engine object, so the lock must be process-wide too.
_PYTTSX3_LOCK = threading.Lock()


class _DropLine(io.TextIOBase):
    """A stdout that drops one exact line and passes everything else through.

    pyttsx3's espeak driver ``print``s "Audio saved to <file>" from espeak's callback thread, not the caller's.
    Swapping ``sys.stdout`` for a sink (``contextlib.redirect_stdout``) would also swallow whatever other request
    threads print meanwhile, so only that line is dropped. ``print`` writes the text and the newline separately.
    """

    def __init__(self, target: TextIO, line: str) -> None:
        self._target, self._line = target, line
        self._newline_owed: set[int] = set()

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        if text == self._line:
            self._newline_owed.add(thread)
            return len(text)
        if text == "\n" and thread in self._newline_owed:
            self._newline_owed.discard(thread)
            return len(text)
        return self._target.write(text)

    def flush(self) -> None:
        self._target.flush()


class Pyttsx3Synthesizer:
    """Local text to speech with pyttsx3 (espeak-ng on Linux: ``libespeak-ng1``, see scripts/system-deps.sh).

    Headless: renders to a temporary WAV file (mono, 16-bit, 22,050 Hz) with ``save_to_file`` + ``runAndWait``
    and returns its bytes, no audio device needed. pyttsx3 keeps one engine per process and writes only the last
    of several queued files, so calls are serialised by a process-wide lock and each call sets its own voice and
    rate. espeak sounds robotic: fine for prompts, useless for testing a recogniser (use flite audio for that).
    """

    def __init__(self, *, voice: str | None = None, rate: int | None = None) -> None:
        self._voice, self._rate = voice, rate

    def synthesize(self, text: str) -> bytes:
        if not text.strip():
            raise ValueError("nothing to say")
        # espeak writes the file from its own thread; under load pyttsx3 now and then returns before (or without)
        # writing it. A second try has always produced it here, so try a few times before giving up.
        failure: SynthesisFailed | None = None
        for _attempt in range(3):
            try:
                return self._synthesize_once(text)
            except SynthesisFailed as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _synthesize_once(self, text: str) -> bytes:
        import pyttsx3  # type: ignore[import-untyped, unused-ignore]

        with _PYTTSX3_LOCK, tempfile.TemporaryDirectory(prefix="warmline-tts-") as tmp:
            path = Path(tmp) / "prompt.wav"
            try:
                engine = pyttsx3.init()
                if self._voice is not None:
                    engine.setProperty("voice", self._voice)
                if self._rate is not None:
                    engine.setProperty("rate", self._rate)
                real_stdout = sys.stdout
                sys.stdout = _DropLine(real_stdout, f"Audio saved to {path}")
                try:
                    engine.save_to_file(text, str(path))
                    engine.runAndWait()
                finally:
                    sys.stdout = real_stdout
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise SynthesisFailed(f"pyttsx3 failed: {type(exc).__name__}: {exc}") from exc
            return _await_wav(path, within_s=_PYTTSX3_LATE_WRITE_S)


# runAndWait can return before espeak's callback thread has written the file; it usually follows within
# milliseconds. Waiting for it (rather than failing at once) also keeps the late write from landing in a
# directory that has already been removed.
_PYTTSX3_LATE_WRITE_S = 2.0


def _await_wav(path: Path, *, within_s: float) -> bytes:
    """The bytes of the WAV at ``path`` once it is complete, or SynthesisFailed after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            data = path.read_bytes()
            with wave.open(io.BytesIO(data)) as check:
                frames = check.getnframes()
                complete = len(data) >= 44 + frames * check.getsampwidth() * check.getnchannels()
            if frames > 0 and complete:
                return data
            problem = "pyttsx3 wrote an empty WAV" if frames == 0 else "pyttsx3 wrote a truncated WAV"
        except (OSError, EOFError, wave.Error) as exc:
            problem = f"pyttsx3 wrote no readable WAV: {exc}"
        if time.monotonic() >= deadline:
            raise SynthesisFailed(problem)
        time.sleep(0.01)
