"""A Twilio Programmable Voice emulator for testing webhook apps without Twilio.

It places calls into an app over real HTTP, signs every webhook exactly like Twilio, follows
the returned TwiML verb by verb with scripted callers and reps, serves a fake Twilio REST API
for the calls the app makes, and records what each party heard.  See :class:`TwilioEmulator`.

Module map: :mod:`.parties` (scripts), :mod:`.legs` (call/leg state and records),
:mod:`.http` (signing, HTTP, TwiML parsing), :mod:`.twiml` (verb interpreter),
:mod:`.dial` (``<Dial><Number>``, child-leg redirects), :mod:`.queues` (``<Enqueue>`` queues),
:mod:`.conferences` (conference rooms, their lifecycle and status callbacks),
:mod:`.dial_conference` (``<Dial><Conference>``: a participant's leg), :mod:`.rest` (fake REST
API), :mod:`.runtime` (per-emulator shared services), :mod:`.emulator` (the facade).
"""

from voice.emulator.conferences import Conference, ConferenceEvent, ParticipantInfo
from voice.emulator.emulator import DEFAULT_ACCOUNT_SID, TwilioEmulator
from voice.emulator.http import SharedKey
from voice.emulator.legs import (
    APPLICATION_ERROR_MESSAGE,
    EmulatedCall,
    Hearing,
    LegInfo,
    TranscriptEntry,
    TwilioError,
    WebhookExchange,
    WebhookRequest,
)
from voice.emulator.parties import (
    CallerInput,
    CallerScript,
    Digits,
    InputSource,
    Party,
    Recording,
    RepScript,
    Silence,
    Speech,
)
from voice.emulator.rest import RestRequest

__all__ = [
    "APPLICATION_ERROR_MESSAGE",
    "DEFAULT_ACCOUNT_SID",
    "CallerInput",
    "CallerScript",
    "Conference",
    "ConferenceEvent",
    "Digits",
    "EmulatedCall",
    "Hearing",
    "InputSource",
    "LegInfo",
    "ParticipantInfo",
    "Party",
    "Recording",
    "RepScript",
    "RestRequest",
    "SharedKey",
    "Silence",
    "Speech",
    "TranscriptEntry",
    "TwilioEmulator",
    "TwilioError",
    "WebhookExchange",
    "WebhookRequest",
]
