"""Fixtures for the speech tests: real audio made at test time, and one shared transcriber.

Recognition is tested on flite voices (not espeak: PocketSphinx recognises almost nothing espeak says), converted
by sox to telephone band — 8 kHz µ-law, 300-3400 Hz — the way Twilio records a call. Both tools come from
scripts/system-deps.sh; without them the tests that need audio are skipped with that message (CI installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ivr_flows import Flow, RouteNode, load_flow
from tests.conftest import tfidf
from voice.adapters.speech import SphinxTranscriber, domain_phrases

SAMPLE_FLOW = Path(__file__).resolve().parents[2] / "ivr_flows" / "main.yaml"

#: sox arguments that turn flite's 16 kHz PCM into what a phone line delivers.
TELEPHONE_BAND = ("-r", "8000", "-e", "u-law")
TELEPHONE_FILTER = ("sinc", "300-3400")

Speak = Callable[..., bytes]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: run scripts/system-deps.sh (Debian packages flite, sox)")


@pytest.fixture(scope="session")
def speech_flow() -> Flow:
    return load_flow(SAMPLE_FLOW)


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech-lm")


@pytest.fixture(scope="session")
def transcriber(speech_flow: Flow, lm_dir: Path) -> SphinxTranscriber:
    """One domain-model transcriber for the session, as the app would keep one per flow."""
    return SphinxTranscriber(domain_phrases(speech_flow), workdir=lm_dir)


@pytest.fixture(scope="session")
def speak(tmp_path_factory: pytest.TempPathFactory) -> Speak:
    """``speak(text, voice="slt", sox_args=TELEPHONE_BAND, effects=TELEPHONE_FILTER) -> WAV bytes``.

    flite says the text; sox converts it (``sox_args=()`` and ``effects=()`` keep flite's 16 kHz PCM).
    """
    _require("flite")
    _require("sox")
    folder = tmp_path_factory.mktemp("speech-audio")
    cache: dict[tuple[object, ...], bytes] = {}

    def make(
        text: str,
        voice: str = "slt",
        sox_args: tuple[str, ...] = TELEPHONE_BAND,
        effects: tuple[str, ...] = TELEPHONE_FILTER,
    ) -> bytes:
        key = (text, voice, sox_args, effects)
        if key not in cache:
            n = len(cache)
            wide, out = folder / f"{n}-flite.wav", folder / f"{n}-out.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wide)], check=True, capture_output=True)
            if sox_args or effects:
                subprocess.run(["sox", str(wide), *sox_args, str(out), *effects], check=True, capture_output=True)
            else:
                out = wide
            cache[key] = out.read_bytes()
        return cache[key]

    return make


def route(flow: Flow, text: str) -> str:
    """The department the flow's route node picks for ``text``: its TF-IDF classifier, threshold, else its
    fallback."""
    node = next(n for n in flow.nodes.values() if isinstance(n, RouteNode))
    result = tfidf(flow).classify(text)
    if result.confidence >= node.threshold and result.department in flow.departments:
        return result.department
    return node.fallback
