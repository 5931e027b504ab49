"""Voicemail transcription in the background: one offline recogniser per flow version, tuned to its words."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ivr_flows import Flow
from voice.config import Settings

if TYPE_CHECKING:
    from voice.adapters.recordings import VoicemailTranscript
    from voice.adapters.speech import Transcriber


class Transcription:
    """Transcribes recordings with a transcriber per flow version: the offline engine's language model is built
    from the flow's own words, so a changed flow gets a new one, and an unchanged flow reuses its decoder.

    The speech stack (NumPy, PocketSphinx) is imported on the first voicemail, not when a webhook worker starts.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._by_version: dict[str, Transcriber] = {}

    def transcribe(self, recording_url: str, flow: Flow) -> VoicemailTranscript:
        from voice.adapters.recordings import transcribe_recording

        return transcribe_recording(
            recording_url,
            transcriber=self._for_flow(flow),
            account_sid=self._settings.account_sid,
            auth_token=self._settings.auth_token,
        )

    def _for_flow(self, flow: Flow) -> Transcriber:
        from voice.adapters.speech import make_transcriber

        with self._lock:
            transcriber = self._by_version.get(flow.version)
            if transcriber is None:
                transcriber = self._by_version[flow.version] = make_transcriber(
                    self._settings.speech.engine,
                    flow,
                    workdir=self._settings.instance_path / "speech",
                    options=self._settings.speech.options,
                )
            return transcriber
