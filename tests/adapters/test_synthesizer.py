"""Pyttsx3Synthesizer: local prompts as WAV bytes, headless, serialised around pyttsx3's shared engine."""

from __future__ import annotations

import ctypes.util
import io
import wave
from concurrent.futures import ThreadPoolExecutor

import pytest

from voice.adapters.speech import Pyttsx3Synthesizer, Synthesizer

pytestmark = pytest.mark.skipif(
    ctypes.util.find_library("espeak-ng") is None and ctypes.util.find_library("espeak") is None,
    reason="libespeak-ng is not installed: run scripts/system-deps.sh (Debian package espeak-ng)",
)


def _frames(data: bytes) -> tuple[int, int, int, int]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def test_returns_a_valid_wav_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    synthesizer = Pyttsx3Synthesizer()
    assert isinstance(synthesizer, Synthesizer)
    channels, width, rate, frames = _frames(synthesizer.synthesize("Thanks for calling Acme."))
    assert (channels, width, rate) == (1, 2, 22050)
    assert frames > rate // 2, "half a second at least for five words"
    assert "Audio saved to" not in capsys.readouterr().out


def test_concurrent_prompts_each_get_their_own_audio() -> None:
    """pyttsx3 writes only the last of two queued files: without the lock one caller would get the other's."""
    short, long = "Hello.", "In a few words, please tell us what you are calling about today, and we will help."
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(Pyttsx3Synthesizer().synthesize, [short, long, short, long]))
    lengths = [_frames(data)[3] for data in results]
    # espeak hands audio over in chunks and pyttsx3 sometimes drops the last one, so equal texts may differ by up
    # to a chunk (seen: 118 ms on "Hello."); a swapped file would be off by seconds.
    chunk = 0.2 * 22050
    assert lengths[0] == pytest.approx(lengths[2], abs=chunk)
    assert lengths[1] == pytest.approx(lengths[3], abs=chunk)
    assert lengths[1] > 3 * max(lengths[0], lengths[2])


def test_blank_text_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to say"):
        Pyttsx3Synthesizer().synthesize("   ")
