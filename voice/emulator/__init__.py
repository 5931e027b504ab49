"""A Twilio Programmable Voice emulator for testing webhook apps without Twilio.

It places calls into an app over real HTTP, signs every webhook exactly like Twilio, follows
the returned TwiML verb by verb with scripted callers and reps, serves a fake Twilio REST API
for the calls the app makes, and records what each party heard.  See :class:`TwilioEmulator`.

Module map, from the bottom up (each imports only modules above it in this list):

* :mod:`.parties` — scripted callers and reps;
* :mod:`.http` — outgoing webhooks: signing, HTTP, and responses read as TwiML documents;
* :mod:`.legs` — call and leg state, signals, and the records a test reads (transcript, webhooks, errors);
* :mod:`.queues` — the named call queues; :mod:`.conferences` — conference rooms, their lifecycle and
  status callbacks;
* :mod:`.runtime` — the services one emulator's calls share;
* :mod:`.runner` — the interpreter's core: runs one leg's documents verb by verb through a verb table;
* :mod:`.call_threads` — a call's own thread (inbound, REST-created, or a child leg gone on alone);
* the verbs: :mod:`.verbs` (``<Say>``, ``<Play>``, ``<Pause>``, ``<Gather>``, ``<Redirect>``, ``<Hangup>``,
  ``<Reject>``, ``<Record>``), :mod:`.enqueue` (``<Enqueue>``, ``<Leave>``), :mod:`.dial` (``<Dial>``: its nouns,
  its action, ``<Number>`` ringing, whisper and bridge), :mod:`.dial_conference` (``<Dial><Conference>``: a
  participant's leg);
* :mod:`.interpreter` — the one table of verbs and the one table of ``<Dial>`` nouns;
* :mod:`.rest` — the fake REST API; :mod:`.emulator` — the facade, :class:`TwilioEmulator`.
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
