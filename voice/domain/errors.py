"""The app's error kinds, in one place: crm_sync's roots re-exported, and the kinds the voice app adds on top.

Every error Warmline raises on purpose is a ``WarmlineError`` of one of three kinds, and each edge maps a kind once
(``voice.web.errors``: the reps' API to an HTTP status, a webhook to safe TwiML; the CLI to a one-line message):

- ``NotFound``: the thing named does not exist (a rep, a call, an offer, a hand-off);
- ``Refused``: understood, but not allowed now, and the message says why; ``Forbidden``, one of them: not this
  person's to do (another rep's call, task or presence), whatever the moment;
- ``InvalidInput``: a value from outside (a webhook field, a JSON body, a config key) cannot be used as given.

The roots live in ``crm_sync.errors`` because the domain model there refuses transitions with them and ``crm_sync``
never imports ``voice``; the app imports every kind from here. Kinds that belong to one edge stay there:
``voice.web.forms.MalformedWebhook`` (an ``InvalidInput``), ``voice.web.errors.Unauthorized`` and
``voice.config.ConfigError`` (an ``InvalidInput`` too, with each problem's file:line:col).

What is deliberately *not* a ``WarmlineError``: the ``ValueError`` subclasses of the pure modules beside this one,
``voice.domain.priority`` (``InvalidPriorityWeights``, ``InvalidCallerSignals``) and ``voice.domain.wait_estimate``
(``WaitEstimateError`` and its kinds). Their inputs come from our own code, never straight from outside:
priority weights are built from settings that ``voice.config`` has already validated (tiers included, with the
file:line:col of a bad one), caller signals and rep loads from our own rows and clock. Raised, they mean a bug, and
a bug must surface as one (a traceback in the log, a 500 from the API, fallback TwiML on a call), not be answered
as "your input is invalid". They stay ``ValueError``s: that is what a bad argument is in Python.
"""

from __future__ import annotations

from crm_sync.errors import (
    InvalidInput,
    NotFound,
    PresenceRefused,
    Refused,
    UnknownInteraction,
    UnknownRep,
    WarmlineError,
)

__all__ = [
    "Forbidden",
    "HandoffRefused",
    "InvalidInput",
    "NotFound",
    "PresenceRefused",
    "Refused",
    "UnknownInteraction",
    "UnknownRep",
    "WarmlineError",
]


class Forbidden(Refused):
    """Refused because it is someone else's: another rep's call, task, presence or hand-off (a supervisor's page)."""


class HandoffRefused(Refused):
    """The transfer cannot start (not the rep's call, nobody free, already being transferred); says why."""


class NotYourHandoff(HandoffRefused, Forbidden):
    """The call or transfer belongs to another rep."""
