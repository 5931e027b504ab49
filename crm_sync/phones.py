"""Phone numbers: E.164 normalisation (with phonenumbers) and masking for logs."""

from __future__ import annotations

import functools
import re

import phonenumbers


class InvalidPhoneNumber(ValueError):
    """A number that phonenumbers cannot turn into a valid E.164 number."""


def to_e164(raw: str, *, default_region: str = "US") -> str:
    """Normalise a number as people write it ("(555) 123-0001", "+44 20 7946 0958") to E.164.

    Raises InvalidPhoneNumber with a reason a person can act on.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneNumber("empty phone number")
    try:
        parsed = phonenumbers.parse(text, default_region.upper())
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{mask_phone(text)!s} is not a phone number ({exc._msg})") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(f"{mask_phone(text)} has the wrong number of digits")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=4096)
def caller_e164(raw: str, *, default_region: str = "US") -> str:
    """The caller's number as we store it: E.164 when it parses, else as Twilio sent it.

    Twilio sends "anonymous", "+266696687" (withheld) or SIP URIs; a call must still be served and logged.
    Cached: every webhook of a call parses the same two numbers, and phonenumbers is not cheap.
    """
    try:
        return to_e164(raw, default_region=default_region)
    except InvalidPhoneNumber:
        return (raw or "unknown").strip()[:32] or "unknown"


def mask_phone(number: str) -> str:
    """Keep the country code and the last 4 digits: "+15551230001" -> "+1•••••••0001"."""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 4:
        return "•" * len(digits)
    prefix = "+" + digits[0] if number.strip().startswith("+") else ""
    hidden = len(digits) - 4 - (1 if prefix else 0)
    return f"{prefix}{'•' * hidden}{digits[-4:]}"


# A phone number inside free text: 8 to 15 digits with at most two separators (space, parentheses, dot, dash)
# between them, standing alone — never part of a longer token such as a CallSid or a timestamp.
_PHONE_IN_TEXT = re.compile(r"(?<![\w+.:/])\+?\(?\d(?:[\s().-]{0,2}\d){7,14}(?![\w:/])")


def mask_phones_in(text: str) -> str:
    return _PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group(0)), text)
