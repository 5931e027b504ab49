"""Every TwiML verb the emulator runs, and every ``<Dial>`` noun, each registered in one table.

Adding a verb is one entry in :data:`VERBS` (plus the kinds of document that may use it); adding
a ``<Dial>`` noun is one entry in :data:`DIAL_NOUNS`.  This module imports the verb modules; they
import only :mod:`voice.emulator.runner` (and the state they work on), never this table, which
reaches them through the :class:`~voice.emulator.runner.LegRunner` that runs them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final

from voice.emulator.dial import DialNoun, PhoneNoun, SoleNoun, number_target, run_dial
from voice.emulator.dial_conference import run_conference_dial
from voice.emulator.enqueue import enqueue, leave
from voice.emulator.http import Document
from voice.emulator.runner import DocumentRules, LegRunner, Step, VerbHandler, VerbTable
from voice.emulator.verbs import gather, hangup, pause, play, record, redirect, reject, say

__all__ = [
    "CONFERENCE_AUDIO_VERBS",
    "DIAL_NOUNS",
    "GATHER_CHILDREN",
    "VERBS",
    "WAIT_VERBS",
    "WHISPER_VERBS",
]

#: What each ``<Dial>`` noun does.  Twilio's ``<Client>``, ``<Sip>``, ``<Sim>``, ``<Queue>`` and
#: ``<Application>`` are not emulated: a ``<Dial>`` skips them with a warning.
DIAL_NOUNS: Final[Mapping[str, DialNoun]] = {
    "Number": PhoneNoun(number_target),
    "Conference": SoleNoun(run_conference_dial),
}


def dial(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    """``<Dial>``, with the nouns of :data:`DIAL_NOUNS`."""
    return run_dial(runner, element, doc, DIAL_NOUNS)


_HANDLERS: Final[Mapping[str, VerbHandler]] = {
    "Say": say,
    "Play": play,
    "Pause": pause,
    "Gather": gather,
    "Redirect": redirect,
    "Hangup": hangup,
    "Reject": reject,
    "Record": record,
    "Enqueue": enqueue,
    "Leave": leave,
    "Dial": dial,
}

#: Verbs Twilio runs from an ``<Enqueue waitUrl>`` document.
WAIT_VERBS: Final = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Leave", "Hangup"})
#: Verbs the emulator runs on a rep's leg from ``<Number url>`` (the whisper).
WHISPER_VERBS: Final = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Reject"})
#: Verbs Twilio runs from a conference's waitUrl, holdUrl and announceUrl documents.
CONFERENCE_AUDIO_VERBS: Final = frozenset({"Say", "Play", "Pause", "Redirect"})
#: Verbs that may be nested in ``<Gather>``.
GATHER_CHILDREN: Final = frozenset({"Say", "Play", "Pause"})

#: The interpreter's one verb table (checked when built: every verb a rule names is registered).
VERBS: Final = VerbTable(
    handlers=_HANDLERS,
    documents={
        "call": DocumentRules(frozenset(_HANDLERS), where="this call document"),
        "whisper": DocumentRules(WHISPER_VERBS, where="this whisper document"),
        "queue wait": DocumentRules(WAIT_VERBS, where="a waitUrl document"),
        # 13238: "Dial->Conference: Invalid Verb used in waitUrl, holdUrl, or announceUrl TwiML".
        "conference audio": DocumentRules(
            CONFERENCE_AUDIO_VERBS,
            where="conference audio (waitUrl/holdUrl/announceUrl)",
            disallowed_code=13238,
            paced=True,
        ),
    },
    gather_children=GATHER_CHILDREN,
)
