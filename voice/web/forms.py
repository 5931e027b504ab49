"""Twilio's form fields → typed values for the call service. The wire format stops here."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from voice.domain.errors import InvalidInput
from voice.services.calls import CallerInput, IncomingCall


class MalformedWebhook(InvalidInput):
    """A signed webhook without a field we need, or with a value we cannot read."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


Form = MultiDict[str, str]


def call_sid(form: Form) -> str:
    value = form.get("CallSid", "").strip()
    if not value:
        raise MalformedWebhook("CallSid", "missing")
    return value


def incoming_call(form: Form) -> IncomingCall:
    return IncomingCall(
        call_sid=call_sid(form),
        from_number=form.get("From", "").strip(),
        to_number=form.get("To", "").strip(),
        caller_city=form.get("FromCity", "").strip() or None,
    )


def caller_input(form: Form) -> CallerInput:
    return CallerInput(
        speech=form.get("SpeechResult"),
        speech_confidence=optional_float(form, "Confidence"),
        digits=(form.get("Digits") or "").strip() or None,
    )


def offer_id(args: Form) -> int:
    return number(args, "offer")


def number(args: Form, field: str) -> int:
    """One of our own ids, as we put it in a callback URL."""
    raw = args.get(field, "")
    if not raw.isdigit():
        raise MalformedWebhook(field, f"expected a number, got {raw!r}")
    return int(raw)


def optional_number(args: Form, field: str) -> int | None:
    """One of our own ids that URLs placed before it existed do not carry."""
    return number(args, field) if args.get(field, "") else None


def optional_float(form: Form, field: str) -> float | None:
    raw = form.get(field, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise MalformedWebhook(field, f"not a number: {raw!r}") from exc


def seconds(form: Form, field: str) -> int:
    """Twilio durations are whole seconds; a missing one counts as zero, a garbled one is an error."""
    raw = form.get(field, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise MalformedWebhook(field, f"not a whole number of seconds: {raw!r}")
    return int(raw)


def optional_seconds(form: Form, field: str) -> int | None:
    return seconds(form, field) if form.get(field, "").strip() else None
