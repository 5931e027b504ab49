"""Recordings Twilio made for us (voicemail, any ``<Record>``): download them and transcribe them, losing nothing.

Twilio posts a ``RecordingUrl`` without an extension; the media is fetched as ``<url>.wav`` (WAV is lossless and
:mod:`voice.adapters.speech` reads it without ffmpeg) with the account's credentials, because recordings are private by
default. Transcription runs after the webhook has answered (it takes a fraction of a second to seconds), and its
result, :class:`VoicemailTranscript`, always carries the recording URL: when the download or the recogniser fails,
the rep still gets the link and the reason instead of an empty message.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from voice.adapters.speech import Transcriber, TranscriptionFailed

__all__ = [
    "RecordingUnavailable",
    "VoicemailTranscript",
    "download_recording",
    "media_url",
    "transcribe_recording",
]

log = logging.getLogger(__name__)

#: A voicemail is at most an hour (config: fallback.voicemail_max_length <= 3600 s): 8 kHz 16-bit is ~58 MB.
MAX_RECORDING_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024
#: Statuses worth trying again later: the media may not be ready right after the callback, or Twilio is busy.
_RETRYABLE = frozenset({404, 408, 429, 500, 502, 503, 504})


class RecordingUnavailable(Exception):
    """The recording could not be fetched. ``status`` is the HTTP status (None for a network error or a refused
    URL); ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class VoicemailTranscript:
    """What to store for a recording: the transcript, or why there is none — and always the link."""

    #: Words heard ("" for silence), or None when transcription failed (see ``error``).
    text: str | None
    #: Engine that produced (or failed to produce) the text, e.g. "sphinx".
    engine: str
    #: The engine's confidence in [0, 1], None when it gives none or failed.
    confidence: float | None
    #: Why there is no text, fit for the rep's screen; None on success.
    error: str | None
    #: The ``RecordingUrl`` Twilio sent, as sent: the recording itself is never lost.
    recording_url: str

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the interaction's record."""
        return asdict(self)


def media_url(url: str) -> str:
    """``url`` with ``.wav`` appended when its last path segment has no extension (Twilio's ``RecordingUrl``).

    An explicit extension (``.mp3``, ``.wav``) is left alone: the caller asked for that format.
    """
    parts = urlsplit(url)
    last = parts.path.rsplit("/", 1)[-1]
    if not last or "." in last:
        return url
    return urlunsplit(parts._replace(path=parts.path + ".wav"))


def _redacted(url: str) -> str:
    """The URL without any user:password@ part, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def download_recording(
    url: str,
    *,
    account_sid: str,
    auth_token: str,
    timeout: float = 15,
    max_bytes: int = MAX_RECORDING_BYTES,
    session: requests.Session | None = None,
) -> bytes:
    """The WAV bytes of a Twilio recording, fetched with HTTP basic auth (account SID and auth token).

    Raises :class:`RecordingUnavailable` naming the HTTP status (or the network error) and the URL; the token
    never appears in a message or a log line. ``timeout`` applies to connecting and to each read.
    """
    target = media_url(url)
    shown = _redacted(target)
    if urlsplit(target).scheme not in ("http", "https"):
        raise RecordingUnavailable(f"recording URL {shown!r} is not http(s)")
    get = session.get if session is not None else requests.get
    try:
        response = get(target, auth=(account_sid, auth_token), timeout=timeout, stream=True)
    except requests.RequestException as exc:
        # The exception text can carry the URL but never the Authorization header.
        raise RecordingUnavailable(f"could not fetch recording {shown}: {type(exc).__name__}", retryable=True) from exc
    with response:
        if response.status_code != 200:
            raise RecordingUnavailable(
                f"recording {shown} unavailable: HTTP {response.status_code} {response.reason or ''}".rstrip(),
                status=response.status_code,
                retryable=response.status_code in _RETRYABLE,
            )
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise RecordingUnavailable(f"recording {shown} is larger than {max_bytes} bytes", status=200)
        except requests.RequestException as exc:
            raise RecordingUnavailable(
                f"download of recording {shown} broke off: {type(exc).__name__}", status=200, retryable=True
            ) from exc
    if not body:
        raise RecordingUnavailable(f"recording {shown} is empty", status=200, retryable=True)
    log.info("downloaded recording %s (%d bytes)", shown, len(body))
    return bytes(body)


def transcribe_recording(
    url: str,
    *,
    transcriber: Transcriber,
    account_sid: str,
    auth_token: str,
    timeout: float = 15,
    session: requests.Session | None = None,
) -> VoicemailTranscript:
    """Download and transcribe one recording; never raises for a bad recording or a failing engine.

    Meant for a background job after the ``<Record>`` action webhook. Every failure becomes a
    :class:`VoicemailTranscript` with ``text=None``, the reason and the URL, so what gets stored is never less
    than the link a rep can listen to.
    """
    engine = str(getattr(transcriber, "engine", type(transcriber).__name__))
    try:
        audio = download_recording(
            url, account_sid=account_sid, auth_token=auth_token, timeout=timeout, session=session
        )
    except RecordingUnavailable as exc:
        log.warning("voicemail not transcribed: %s", exc)
        return VoicemailTranscript(None, engine, None, f"download failed: {exc}", url)
    try:
        transcript = transcriber.transcribe(audio)
    except TranscriptionFailed as exc:
        log.warning("voicemail %s not transcribed: %s", _redacted(url), exc)
        return VoicemailTranscript(None, engine, None, f"transcription failed: {exc}", url)
    except Exception as exc:  # an engine bug must not lose the voicemail either
        log.exception("transcriber %s crashed on %s", engine, _redacted(url))
        return VoicemailTranscript(None, engine, None, f"transcription crashed: {type(exc).__name__}", url)
    return VoicemailTranscript(transcript.text, transcript.engine, transcript.confidence, None, url)
