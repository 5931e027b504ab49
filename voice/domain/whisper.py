"""The whisper: what a rep hears before the caller is bridged, so the caller never repeats themselves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from crm_sync.phones import mask_phone

MAX_ISSUE_WORDS = 30
#: The previous call's words are a reminder, not the story: shorter.
MAX_PAST_WORDS = 12


@dataclass(frozen=True)
class WhisperFacts:
    customer_name: str | None
    tier: str | None
    caller_number: str
    caller_city: str | None
    department_name: str
    issue_text: str | None
    last_contact_when: datetime | None
    #: What the previous call was about: its department, and the caller's own words then.
    last_contact_department: str | None
    last_contact_words: str | None
    waited_seconds: int
    #: We are calling the customer back (they chose a callback instead of holding).
    callback: bool = False
    #: Why they went ahead in line ("tier vip", "frustrated: 'third time'"), as the priority module wrote it.
    priority_reasons: tuple[str, ...] = ()
    #: A note from the rep handing the call over (rep-to-rep warm transfer).
    handoff_note: str | None = None
    handoff_from: str | None = None


def compose_whisper(facts: WhisperFacts, *, now: datetime) -> str:
    """One short paragraph, most useful first: who, why (in their words), history, wait, then the key to press."""
    if facts.handoff_from:
        parts = [f"Transfer from {facts.handoff_from}: {_who(facts)}, about {facts.department_name}."]
        if facts.handoff_note and facts.handoff_note.strip():
            parts.append(f"{facts.handoff_from}'s note: {first_sentence(facts.handoff_note)}")
    elif facts.callback:
        parts = [f"Callback to {_who(facts)}, who asked about {facts.department_name}."]
    else:
        parts = [f"{_who(facts)}, calling about {facts.department_name}."]
    if any(reason.startswith("frustrated") for reason in facts.priority_reasons):
        parts.append("They sound frustrated.")
    issue = first_sentence(facts.issue_text)
    if issue:
        parts.append(f"In their words: {issue}")
    if facts.last_contact_when is not None:
        parts.append(_last_contact(facts, now=now))
    if facts.waited_seconds >= 30:
        waited = f"They waited {spoken_duration(facts.waited_seconds)}"
        parts.append(f"{waited} for this callback." if facts.callback else f"{waited}.")
    parts.append("Press 1 to take the call.")
    return " ".join(parts)


def _last_contact(facts: WhisperFacts, *, now: datetime) -> str:
    """'Last contact yesterday, about Billing: "I was charged twice."' (their words quoted, never run into the
    sentence as if they were ours)."""
    assert facts.last_contact_when is not None
    said = f"Last contact {spoken_date(facts.last_contact_when, now=now)}"
    if facts.last_contact_department:
        said += f", about {facts.last_contact_department}"
    words = first_sentence(facts.last_contact_words, max_words=MAX_PAST_WORDS)
    return f'{said}: "{words}"' if words else f"{said}."


def _who(facts: WhisperFacts) -> str:
    if facts.customer_name:
        tier = f", {facts.tier} customer" if facts.tier and facts.tier.lower() != "standard" else ""
        return f"{facts.customer_name}{tier}"
    # Not in the CRM: "new" unless this number has called before (then the history follows).
    caller = "A returning caller" if facts.last_contact_when is not None else "A new caller"
    if facts.caller_city:
        return f"{caller} from {facts.caller_city.title()}"
    digits = re.sub(r"\D", "", facts.caller_number)
    if len(digits) >= 4:
        return f"{caller} from a number ending in {' '.join(digits[-4:])}"
    return f"{caller} ({mask_phone(facts.caller_number)})"


def first_sentence(text: str | None, *, max_words: int = MAX_ISSUE_WORDS) -> str:
    """The caller's words trimmed to one sentence of at most ``max_words`` words, ending with a period."""
    if not text or not text.strip():
        return ""
    sentence = re.split(r"(?<=[.!?])\s+", " ".join(text.split()), maxsplit=1)[0]
    words = sentence.split()
    if len(words) > max_words:
        sentence = " ".join(words[:max_words]) + "…"
    sentence = sentence[0].upper() + sentence[1:]
    return sentence if sentence[-1] in ".!?…" else sentence + "."


def spoken_date(when: datetime, *, now: datetime) -> str:
    days = (now.date() - when.date()).days
    if days <= 0:
        return "earlier today"
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    return f"on {when.strftime('%B')} {when.day}"


def spoken_duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = round(seconds / 60)
    return "about a minute" if minutes == 1 else f"about {minutes} minutes"
