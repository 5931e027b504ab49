"""What can go wrong, by kind: the root of every error Warmline raises on purpose.

It lives at the bottom of the house (``crm_sync`` imports nothing from ``voice``) because the domain model in
``crm_sync.models`` refuses transitions with these; ``voice.domain.errors`` adds the app's own kinds on top. Each
edge maps a kind once: the reps' API to an HTTP status, a webhook to fallback TwiML, the CLI to a one-line message.
"""

from __future__ import annotations


class WarmlineError(Exception):
    """Base of every error Warmline raises on purpose; ``str()`` says what happened in words for people."""


class NotFound(WarmlineError, LookupError):
    """The thing named does not exist (a rep, a call, an offer, a hand-off)."""


class Refused(WarmlineError):
    """The request is understood but not allowed now, and the message says why (a transition the state forbids)."""


class InvalidInput(WarmlineError, ValueError):
    """A value from outside (a webhook field, a JSON body, a CSV cell, a config key) cannot be used as given."""


class UnknownRep(NotFound):
    """No rep by that name or id."""


class UnknownInteraction(NotFound):
    """No interaction for that CallSid (a webhook for a call we never saw start), or no offer, callback or hand-off
    by that id."""


class UnknownCustomer(NotFound):
    """No customer by that id."""


class PresenceRefused(Refused):
    """A presence a rep cannot choose (reserved, on a call and wrap-up are set by calls, not by people)."""
