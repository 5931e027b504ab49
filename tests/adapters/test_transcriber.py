"""SphinxTranscriber on realistic audio: flite voices, telephone band, the sample flow's domain language model."""

from __future__ import annotations

import io
import struct
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pocketsphinx
import pytest

from ivr_flows import Flow
from tests.adapters.conftest import TELEPHONE_BAND, Speak, route
from voice.adapters.speech import (
    COMMON_CALLER_PHRASES,
    SpeechRecognitionTranscriber,
    SphinxTranscriber,
    Transcriber,
    TranscriptionFailed,
    build_domain_model,
    decode_wav,
    domain_phrases,
    make_transcriber,
)

# SpeechRecognition 3.17 imports aifc and audioop at module level (its problem, not ours:
# voice.adapters.speech uses neither).
pytestmark = pytest.mark.filterwarnings("ignore:'(aifc|audioop)' is deprecated:DeprecationWarning")

DICTIONARY = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"

#: One caller per department, none of them an example of the flow, each in another flite voice.
CALLERS = [
    ("billing", "I have a question about a charge on my bill", "slt"),
    ("technical_support", "my internet is not working", "rms"),
    ("sales", "I want to upgrade to a better plan", "awb"),
    ("account", "I need a new password for my account", "kal16"),
    ("general", "I would like to talk to a person", "slt"),
]


def _wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def test_telephone_band_callers_are_routed_to_their_department(
    transcriber: SphinxTranscriber, speech_flow: Flow, speak: Speak
) -> None:
    examples = {e.casefold() for d in speech_flow.departments.values() for e in d.examples}
    assert not [text for _, text, _ in CALLERS if text.casefold() in examples], "use phrases the flow never saw"
    assert [route(speech_flow, text) for _, text, _ in CALLERS] == [d for d, _, _ in CALLERS], (
        "the classifier itself must route the written phrases right, or this test measures the classifier"
    )

    heard = {text: transcriber.transcribe(speak(text, voice)) for _, text, voice in CALLERS}

    right = [dept for dept, text, _ in CALLERS if route(speech_flow, heard[text].text) == dept]
    assert len(right) >= 4, {text: t.text for text, t in heard.items()}
    for transcript in heard.values():
        assert transcript.engine == "sphinx"
        assert transcript.confidence is not None and 0.0 <= transcript.confidence <= 1.0


@pytest.mark.parametrize(
    ("sox_args", "effects"),
    [
        pytest.param(TELEPHONE_BAND, ("sinc", "300-3400"), id="mulaw-8k"),
        pytest.param(("-r", "8000", "-e", "a-law"), ("sinc", "300-3400"), id="alaw-8k"),
        pytest.param(("-r", "8000", "-e", "signed-integer", "-b", "16"), ("sinc", "300-3400"), id="pcm16-8k"),
        pytest.param(("-r", "44100", "-b", "24", "-c", "2"), (), id="pcm24-44k1-stereo"),
        pytest.param(("-e", "floating-point", "-b", "32"), (), id="float32-16k"),
    ],
)
def test_reads_the_wav_encodings_recorders_produce(
    transcriber: SphinxTranscriber, speak: Speak, sox_args: tuple[str, ...], effects: tuple[str, ...]
) -> None:
    transcript = transcriber.transcribe(speak("I forgot my password", "rms", sox_args, effects))
    assert "password" in transcript.text.split(), transcript


def test_g711_decoding_matches_sox(speak: Speak, tmp_path: Path) -> None:
    """µ-law/A-law are decoded without audioop: the samples must equal sox's own decoding to 16-bit PCM."""
    for encoding in ("u-law", "a-law"):
        coded = speak("my account is locked", "awb", ("-r", "8000", "-e", encoding), ("sinc", "300-3400"))
        source, pcm = tmp_path / f"{encoding}.wav", tmp_path / f"{encoding}-pcm.wav"
        source.write_bytes(coded)
        subprocess.run(["sox", str(source), "-e", "signed-integer", "-b", "16", str(pcm)], check=True)
        ours, rate = decode_wav(coded)
        theirs, _ = decode_wav(pcm.read_bytes())
        assert rate == 8000
        assert len(ours) == len(theirs) > 8000
        assert np.max(np.abs(ours - theirs)) * 32768 <= 1.0, encoding


def test_one_decoder_is_built_and_shared_by_concurrent_calls(
    speech_flow: Flow, lm_dir: Path, transcriber: SphinxTranscriber, speak: Speak
) -> None:
    fresh = SphinxTranscriber(domain_phrases(speech_flow), workdir=lm_dir)
    assert fresh.model.lm_path == transcriber.model.lm_path, "an unchanged flow must reuse its model files"
    assert fresh.decoder_builds == 0
    audio = speak("I need a refund", "rms")

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(fresh.transcribe, [audio] * 3))
    fresh.transcribe(audio)

    assert fresh.decoder_builds == 1
    assert len({r.text for r in results}) == 1, results
    assert "refund" in results[0].text.split()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "not a WAV file", id="empty"),
        pytest.param(b"ID3\x04 this is an mp3, not a wav", "not a WAV file", id="mp3"),
        pytest.param(b"RIFF\x04\x00\x00\x00WAVE", "no valid format chunk", id="header-only"),
        pytest.param(
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16),
            "no audio data",
            id="no-data-chunk",
        ),
        pytest.param(
            b"RIFF\x2c\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + struct.pack("<HHIIHH", 0x55, 1, 8000, 1000, 1, 0)
            + b"data\x04\x00\x00\x00\xff\xfb\x90\x00",
            "unsupported WAV encoding",
            id="mpeg-in-wav",
        ),
        pytest.param(
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
            + b"data\x00\x00\x00\x00",
            "holds no audio",
            id="no-samples",
        ),
        pytest.param(
            b"RIFF\x2c\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)
            + b"data\x04\x00\x00\x00\x00\x01\x00\x02",
            "unsupported sample rate 1 Hz",
            id="rate-1hz",
        ),
    ],
)
def test_corrupt_wav_raises_with_a_reason(transcriber: SphinxTranscriber, data: bytes, reason: str) -> None:
    with pytest.raises(TranscriptionFailed, match=reason):
        transcriber.transcribe(data)


def test_still_transcribes_after_a_failure(transcriber: SphinxTranscriber, speak: Speak) -> None:
    with pytest.raises(TranscriptionFailed):
        transcriber.transcribe(b"RIFF garbage")
    assert "refund" in transcriber.transcribe(speak("I need a refund", "slt")).text.split()


def test_silence_is_an_empty_transcript_not_a_failure(transcriber: SphinxTranscriber) -> None:
    transcript = transcriber.transcribe(_wav(np.zeros(8000 * 2), 8000))
    assert (transcript.text, transcript.confidence) == ("", None)


def test_domain_phrases_come_from_the_flow(speech_flow: Flow) -> None:
    phrases = domain_phrases(speech_flow)
    for key, dept in speech_flow.departments.items():
        assert speech_flow.department_name(key) in phrases
        assert set(dept.examples) <= set(phrases)
    assert any(f"calling {speech_flow.company}" in p for p in phrases), "prompts are rendered with the company"
    assert any("press" in p for p in phrases), "the keypad menu's options are spoken prompts too"
    assert not [p for p in phrases if "{" in p], "template variables must be filled or dropped"
    assert set(COMMON_CALLER_PHRASES) <= set(phrases)


def test_domain_model_files_follow_the_phrases(tmp_path: Path) -> None:
    first = build_domain_model(["I need a refund", "my zzyzxq is down"], workdir=tmp_path, dictionary=DICTIONARY)
    assert first.missing_words == ("zzyzxq",)
    assert {"refund", "down"} <= set(first.vocabulary)
    assert "zzyzxq" not in first.lm_path.read_text() + first.dict_path.read_text()
    built = first.lm_path.stat().st_mtime_ns

    again = build_domain_model(["I need a refund", "my zzyzxq is down"], workdir=tmp_path, dictionary=DICTIONARY)
    assert (again.lm_path, again.lm_path.stat().st_mtime_ns) == (first.lm_path, built), "unchanged: reused"

    changed = build_domain_model(
        ["I need a refund", "my zzyzxq is down", "my invoice is wrong"], workdir=tmp_path, dictionary=DICTIONARY
    )
    assert changed.lm_path != first.lm_path
    assert "invoice" in changed.lm_path.read_text()
    assert "invoice" not in first.lm_path.read_text()


def test_background_words_are_pronounceable(transcriber: SphinxTranscriber) -> None:
    model = transcriber.model
    assert len(model.background) > 1000
    assert {"manager", "weekend"} <= set(model.background), "common words outside the flow have a place to go"
    pronounced = {line.split()[0].split("(")[0] for line in model.dict_path.read_text().splitlines()}
    assert set(model.background) | set(model.vocabulary) == pronounced


def test_make_transcriber_picks_the_engine(speech_flow: Flow, lm_dir: Path) -> None:
    default = make_transcriber("", speech_flow, workdir=lm_dir)
    assert isinstance(default, SphinxTranscriber)
    google = make_transcriber("google", speech_flow, workdir=lm_dir)
    assert isinstance(google, SpeechRecognitionTranscriber) and google.engine == "google"
    assert isinstance(google, Transcriber)
    with pytest.raises(ValueError, match="vosk"):
        make_transcriber("nonesuch", speech_flow, workdir=lm_dir)
    with pytest.raises(ValueError, match="show_all"):
        make_transcriber("google", speech_flow, workdir=lm_dir, options={"show_all": True})


def test_speechrecognition_engines_get_decoded_audio(speak: Speak) -> None:
    """The generic adapter, through SpeechRecognition's own (offline) sphinx engine and its general model."""
    transcript = SpeechRecognitionTranscriber("sphinx").transcribe(speak("I forgot my password", "slt", (), ()))
    assert transcript.engine == "sphinx" and transcript.confidence is None
    assert "password" in transcript.text.split()
