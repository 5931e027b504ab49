"""Pydantic models of the IVR flow language (the shape of a ``ivr_flows/*.yaml`` file).

The models only check *shape*: types, required keys, ranges, and values that can be parsed on
their own (a time range, a time zone, a holiday date). Cross-references (does ``next`` name an
existing node? is the department defined? are the template variables allowed? does every
declared language have its prompt? do two opening hours overlap?) are checked by
:mod:`ivr_flows.loader`, because only the loader knows where in the YAML file each value came
from and can report the problem with a ``file:line:col``. Always build a :class:`Flow` with
:func:`ivr_flows.loader.load_flow` / :func:`~ivr_flows.loader.parse_flow`; ``Flow.model_validate``
alone skips those checks.

Every model is ``extra="forbid"`` (a typo'd key is an error, not silently ignored, so an admin
never ships a flow whose ``on_no_imput`` does nothing) and ``frozen`` (one ``Flow`` is shared by
every concurrent call in the webhook process; nothing may change it).

Adding a node kind: write a ``_NodeBase`` subclass with a ``kind: Literal[...]`` tag, implement
the hooks it needs (``exits``, ``department_refs``, ``language_refs``, ``templates``,
``local_problems``, class flags), add it to :data:`Node` and :data:`NODE_KINDS`, and teach
``engine._walk`` (or ``advance``) what it does. The loader's reference, template, language,
reachability, loop and data-flow checks, and the graph drawing, work off the hooks alone.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import string
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, PrivateAttr

__all__ = [
    "BUILTIN_PHRASES",
    "CONFIGURED_PHRASES",
    "DAY_NAMES",
    "DEFAULT_GOODBYE",
    "DEFAULT_GOODBYES",
    "GENERAL_DEPARTMENT",
    "NODE_KINDS",
    "PHRASE_VARIABLES",
    "VARIABLES",
    "AskNode",
    "BranchNode",
    "BranchRule",
    "Condition",
    "Department",
    "Exit",
    "Flow",
    "GotoNode",
    "HangupNode",
    "HoursNode",
    "KeyPath",
    "LanguageNode",
    "LanguageSpec",
    "MenuChoice",
    "MenuNode",
    "Node",
    "Phrases",
    "Prompt",
    "RouteNode",
    "SayNode",
    "SurveyNode",
    "SurveyQuestion",
    "TransferNode",
    "VoicemailNode",
    "localized",
]

#: The department every flow must define: the fallback when nothing else fits.
GENERAL_DEPARTMENT = "general"

#: Said when a transfer without ``after:`` ends with the caller still on the line (``goodbye:``
#: at the top of a flow replaces it).
DEFAULT_GOODBYE = "Thanks for calling {company}. Goodbye."
#: The same in the other built-in language (by primary subtag); a language with none says the English one.
DEFAULT_GOODBYES: Mapping[str, str] = {"en": DEFAULT_GOODBYE, "es": "Gracias por llamar a {company}. Adiós."}

#: A path into the YAML document relative to some mapping, e.g. ``("hints", 2)``.
KeyPath = tuple[str | int, ...]

#: Every template variable, and what it becomes. Where each is allowed is decided per text by the
#: node hooks and the loader's data-flow analysis; this table is for messages and the README.
VARIABLES: Mapping[str, str] = {
    "company": "the flow's company name",
    "first_name": "the caller's first name from the CRM",
    "department": "the spoken name of the department chosen so far",
    "menu_options": "'For billing, press 1. For sales, press 3.' for the menu's choices",
    "language_options": "'For English, press 1. Para español, oprima 2.' for the language node's choices",
    "estimated_wait": "the estimated wait in the queue, filled by the app",
    "queue_position": "the caller's place in the queue, filled by the app",
    "number_ending": "the last four digits of the caller's number, read digit by digit",
}

#: What the app itself says to callers once a flow has handed them to a department (connecting, holding, the
#: callback offer...), in English and Spanish. A flow's ``phrases:`` replaces any of them, and must give them for
#: any other language it declares (the loader says which are missing). Key -> language subtag -> text.
BUILTIN_PHRASES: Mapping[str, Mapping[str, str]] = {
    "connecting": {
        "en": "Connecting you to {department}.",
        "es": "Le comunicamos con {department}.",
    },
    "nobody_can_take": {
        "en": "Nobody from {department} can take your call right now.",
        "es": "En este momento nadie de {department} puede atender su llamada.",
    },
    "nobody_left": {
        "en": "Sorry, nobody from {department} is available any more.",
        "es": "Lo sentimos, ya no hay nadie disponible de {department}.",
    },
    "callback_offer": {
        "en": "Press 1 and we'll call you back — you keep your place in line.",
        "es": "Oprima 1 y le devolveremos la llamada; conserva su lugar en la fila.",
    },
    "long_wait_offer": {
        "en": "Sorry for the long wait. Press 1 and we'll call you back, keeping your place in line, "
        "or press 2 to leave a message. Or stay on the line.",
        "es": "Disculpe la espera. Oprima 1 y le devolveremos la llamada sin perder su lugar, "
        "u oprima 2 para dejar un mensaje. O permanezca en la línea.",
    },
    "long_wait_message_only": {
        "en": "Sorry for the long wait. Press 2 to leave a message, or stay on the line.",
        "es": "Disculpe la espera. Oprima 2 para dejar un mensaje, o permanezca en la línea.",
    },
    "callback_booked": {
        "en": "Thanks. We'll call you back at the number ending in {number_ending} as soon as it's your turn. "
        "You keep your place in line. Goodbye.",
        "es": "Gracias. Le llamaremos al número que termina en {number_ending} en cuanto sea su turno. "
        "Conserva su lugar en la fila. Adiós.",
    },
    "key_not_understood": {
        "en": "Sorry, I didn't get that. Please stay on the line.",
        "es": "Disculpe, no le entendí. Por favor, permanezca en la línea.",
    },
    "connecting_after_wait": {
        "en": "Thanks for waiting. Connecting you now.",
        "es": "Gracias por esperar. Le comunicamos ahora.",
    },
    "sorry_to_keep_you": {
        "en": "Sorry to keep you waiting.",
        "es": "Disculpe la espera.",
    },
    # The next five are config.yaml's (fallback.apology, queue.hold_intro, queue.hold_message,
    # queue.hold_message_no_estimate, fallback.voicemail_prompt) for English-speaking callers; these texts are
    # what everyone else hears.
    "apology": {
        "en": "We're sorry, something went wrong on our side. Let me get you to someone who can help.",
        "es": "Lo sentimos, algo falló de nuestro lado. Permítame comunicarle con alguien que pueda ayudarle.",
    },
    "hold_intro": {
        "en": "All of our team members are helping other callers. Please stay on the line and we'll be with you "
        "shortly.",
        "es": "Todo nuestro equipo está atendiendo a otras personas. Por favor, permanezca en la línea; le "
        "atenderemos en breve.",
    },
    "hold_message": {
        "en": "You are number {queue_position} in line. Your wait is {estimated_wait}. Thanks for holding.",
        "es": "Usted es el número {queue_position} en la fila. Su espera es de {estimated_wait}. Gracias por esperar.",
    },
    "hold_message_no_estimate": {
        "en": "You are number {queue_position} in line. Thanks for holding.",
        "es": "Usted es el número {queue_position} en la fila. Gracias por esperar.",
    },
    "voicemail_prompt": {
        "en": "Please leave your name, number and a short message after the tone, and we'll call you back.",
        "es": "Por favor, deje su nombre, su número y un breve mensaje después del tono, y le devolveremos la llamada.",
    },
    "callback_greeting_known": {
        "en": "Hi {first_name}, this is {company} calling you back about {department}, as you asked.",
        "es": "Hola, {first_name}, le llama {company} para devolverle la llamada sobre {department}, como nos pidió.",
    },
    "callback_greeting": {
        "en": "Hello, this is {company} calling you back about {department}, as you asked.",
        "es": "Hola, le llama {company} para devolverle la llamada sobre {department}, como nos pidió.",
    },
    "callback_connecting": {
        "en": "Connecting you to a team member now.",
        "es": "Le comunicamos ahora con una persona de nuestro equipo.",
    },
    "find_another_rep": {
        "en": "Let me find someone else for you.",
        "es": "Permítame buscarle a otra persona.",
    },
    "find_someone_after_handoff": {
        "en": "Sorry for the wait. Let me find someone for you.",
        "es": "Disculpe la espera. Permítame buscarle a alguien.",
    },
    "hold_for_transfer": {
        "en": "Please hold while I transfer you.",
        "es": "Por favor, espere mientras le transfiero.",
    },
    "message_taken": {
        "en": "Thanks, we've got your message and will call you back. Goodbye.",
        "es": "Gracias, recibimos su mensaje y le devolveremos la llamada. Adiós.",
    },
    "no_message": {
        "en": "We didn't get a message. Goodbye.",
        "es": "No recibimos ningún mensaje. Adiós.",
    },
    "callback_machine_note": {
        "en": "Hello, this is {company} returning your call. We will try you again shortly.",
        "es": "Hola, le llama {company} para devolverle la llamada. Volveremos a intentarlo en breve.",
    },
}

#: The variables each app phrase may use (``company`` is allowed in all of them).
PHRASE_VARIABLES: Mapping[str, frozenset[str]] = {
    "connecting": frozenset({"department"}),
    "nobody_can_take": frozenset({"department"}),
    "nobody_left": frozenset({"department"}),
    "callback_booked": frozenset({"number_ending"}),
    "hold_message": frozenset({"queue_position", "estimated_wait", "department"}),
    "hold_message_no_estimate": frozenset({"queue_position", "department"}),
    "callback_greeting_known": frozenset({"first_name", "department"}),
    "callback_greeting": frozenset({"department"}),
}

#: App phrases that config.yaml also sets (the key there): its text is what English-speaking callers hear unless
#: the flow's own ``phrases:`` says otherwise; other languages keep the flow's or the built-in text.
CONFIGURED_PHRASES: frozenset[str] = frozenset(
    {"apology", "hold_intro", "hold_message", "hold_message_no_estimate", "voicemail_prompt"}
)

# Twilio <Gather hints>: at most 500 phrases of at most 100 characters, comma-separated on the
# wire. Leave room for the department names and example phrases the engine adds.
MAX_ADMIN_HINTS = 300
MAX_HINT_CHARS = 100

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DEPARTMENT_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_QUESTION_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_TIME_RANGE_RE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")

#: Weekday keys of an ``hours`` schedule, Monday first (``datetime.weekday()`` order).
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Spoken names for the common language tags, so `languages:` can leave `name` out.
_LANGUAGE_NAMES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
    "it": "Italiano",
    "pt": "Português",
    "nl": "Nederlands",
    "pl": "Polski",
}


# --- reusable field types -------------------------------------------------------------------


def _node_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid node name: use letters, digits, '_' or '-', starting with a letter")
    return value


def _department_id(value: str) -> str:
    # Department ids double as the reps' skill names in the database, so keep them boring.
    if not _DEPARTMENT_ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid department id: use lower-case letters, digits and '_', "
            "starting with a letter (e.g. technical_support)"
        )
    return value


def _question_id(value: str) -> str:
    # Survey answers are stored under this id on the interaction: keep it a plain identifier.
    if not _QUESTION_ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid question id: use lower-case letters, digits and '_', starting with a letter"
        )
    return value


def _keypad_digit(value: object) -> object:
    """Accept ``digit: 1`` as well as ``digit: "1"``: YAML turns a bare 1 into an int."""
    if isinstance(value, bool):  # YAML 1.1 reads `yes`/`no`/`on`/`off` as booleans
        raise ValueError(f'must be a single keypad digit "0"-"9", got {str(value).lower()}')
    if isinstance(value, int) and 0 <= value <= 9:
        return str(value)
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().isdigit():
        return value.strip()
    raise ValueError(f'must be a single keypad digit "0"-"9", got {value!r}')


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _hint(value: str) -> str:
    value = _non_blank(value)
    if "," in value:
        # Twilio receives hints as one comma-separated string; a comma would split this one.
        raise ValueError(f"speech hints must not contain commas, got {value!r}")
    if len(value) > MAX_HINT_CHARS:
        raise ValueError(f"speech hints are at most {MAX_HINT_CHARS} characters, this one has {len(value)}")
    return value


def _language(value: str) -> str:
    if not _LANGUAGE_RE.match(value):
        raise ValueError(f"must be a language tag such as en-US or es-MX, got {value!r}")
    return value


def _prompt(value: object) -> str | dict[str, str]:
    """A spoken text: one string for every language, or a mapping language tag -> string.

    Done by hand rather than as a pydantic union, so a wrong value gives one message at the
    value instead of one per union member. Which languages a mapping must have is the loader's
    business (it knows the flow's ``languages``).
    """
    if isinstance(value, str):
        return _non_blank(value)
    if isinstance(value, dict):
        if not value:
            raise ValueError("must not be empty: give a text, or a mapping of language tag to text")
        out: dict[str, str] = {}
        for key, text in value.items():
            if not isinstance(key, str) or not _LANGUAGE_RE.match(key):
                raise ValueError(f"{key!r} is not a language tag such as en-US or es-MX")
            if not isinstance(text, str):
                raise ValueError(f"the {key} text must be text, got {_short(text)}")
            if not text.strip():
                raise ValueError(f"the {key} text must not be empty")
            out[key] = text.strip()
        return out
    raise ValueError(f"expected text, or a mapping of language tag to text; got {_short(value)}")


def _short(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _one_or_more(value: object) -> object:
    """``tier: vip`` as well as ``tier: [vip, gold]``; numbers (``region: 5``) become text."""
    if isinstance(value, list | tuple):
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    return [value] if isinstance(value, str) else value


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown time zone {value!r}{hint}; use an IANA name such as America/New_York") from None
    return value


def _day_key(value: str) -> str:
    """``mon`` … ``sun``, a range ``mon-fri`` (Monday first, no wrap-around), or ``daily``."""
    if value == "daily" or value in DAY_NAMES:
        return value
    first, sep, last = value.partition("-")
    if sep and first in DAY_NAMES and last in DAY_NAMES:
        if DAY_NAMES.index(first) >= DAY_NAMES.index(last):
            raise ValueError(f"day range {value!r} must run forwards from Monday to Sunday, e.g. mon-fri or sat-sun")
        return value
    close = difflib.get_close_matches(value, [*DAY_NAMES, "daily", "mon-fri", "sat-sun"], n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"{value!r} is not a day{hint}; use mon, tue, wed, thu, fri, sat, sun, a range like mon-fri, or daily"
    )


def day_key_days(key: str) -> tuple[int, ...]:
    """Weekday numbers (Monday = 0) covered by a validated schedule key."""
    if key == "daily":
        return tuple(range(7))
    if key in DAY_NAMES:
        return (DAY_NAMES.index(key),)
    first, _, last = key.partition("-")
    return tuple(range(DAY_NAMES.index(first), DAY_NAMES.index(last) + 1))


def _time_range(value: object) -> str:
    """``"08:00-20:00"`` (24-hour clock, ``24:00`` allowed as the end) -> the same, normalised."""
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 08:00 as the sexagesimal number 480.
            raise ValueError('write opening hours in quotes, as "08:00-20:00"')
        raise ValueError(f'expected opening hours such as "08:00-20:00", got {_short(value)}')
    match = _TIME_RANGE_RE.match(value.strip())
    if match is None:
        raise ValueError(f'cannot read {value!r} as opening hours; write them as "08:00-20:00" (24-hour clock)')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    for hour, minute, end in ((h1, m1, False), (h2, m2, True)):
        if minute > 59 or hour > 24 or (hour == 24 and (minute or not end)):
            raise ValueError(f"{hour:02d}:{minute:02d} in {value!r} is not a time of day (00:00 to 24:00)")
    if h1 * 60 + m1 >= h2 * 60 + m2:
        raise ValueError(
            f"{value!r} ends before it starts; opening hours cannot run past midnight: "
            'split them across two days (e.g. fri: "22:00-24:00", sat: "00:00-02:00")'
        )
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


def time_range_minutes(value: str) -> tuple[int, int]:
    """``"08:00-20:00"`` -> ``(480, 1200)``: minutes since midnight, end exclusive."""
    start, end = value.split("-")
    return int(start[:2]) * 60 + int(start[3:]), int(end[:2]) * 60 + int(end[3:])


def _day_hours(value: object) -> object:
    """A day's hours: one range, a list of ranges (a lunch break), or ``closed``."""
    if isinstance(value, str) and value.strip().lower() == "closed":
        return ()
    if isinstance(value, str | int) and not isinstance(value, bool):
        return (_time_range(value),)  # validated here, so the error points at the day's value
    return value


def _holiday(value: object) -> str:
    """A closed date: ``2025-12-25`` (that day) or ``12-25`` (every year) -> normalised text."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"a holiday is a date such as 2025-12-25 or 12-25, not a time ({value})")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected a date such as 2025-12-25 or 12-25 (every year), got {_short(value)}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.date.fromisoformat(text).isoformat()
        if re.fullmatch(r"\d{2}-\d{2}", text):
            dt.date.fromisoformat(f"2000-{text}")  # a leap year, so 02-29 is accepted
            return text
    except ValueError:
        pass
    raise ValueError(f"cannot read {value!r} as a date; write 2025-12-25 for one day or 12-25 for every year")


NodeId = Annotated[str, AfterValidator(_node_id)]
DepartmentId = Annotated[str, AfterValidator(_department_id)]
QuestionId = Annotated[str, AfterValidator(_question_id)]
Digit = Annotated[str, BeforeValidator(_keypad_digit)]
Text = Annotated[str, AfterValidator(_non_blank)]
Hint = Annotated[str, AfterValidator(_hint)]
Language = Annotated[str, AfterValidator(_language)]
#: A spoken text: a string (every language) or a mapping language tag -> string.
Prompt = Annotated[str | dict[str, str], PlainValidator(_prompt)]
OneOrMoreText = Annotated[tuple[Text, ...], BeforeValidator(_one_or_more), Field(min_length=1)]
OneOrMoreLanguage = Annotated[tuple[Language, ...], BeforeValidator(_one_or_more), Field(min_length=1)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
DayKey = Annotated[str, AfterValidator(_day_key)]
DayHours = Annotated[tuple[Annotated[str, BeforeValidator(_time_range)], ...], BeforeValidator(_day_hours)]
Holiday = Annotated[str, BeforeValidator(_holiday)]


def localized(value: str | Mapping[str, str], language: str, default: str) -> str:
    """The text of ``value`` for ``language``: its own entry, else the default language's, else any.

    Never raises: this runs on the caller's path, and the loader has already made sure every
    declared language has its text wherever the caller can hear it.
    """
    if isinstance(value, str):
        return value
    text = value.get(language) or value.get(default)
    if text is None:
        text = next(iter(value.values()), "")
    return text


class _Blank(dict[str, str]):
    """Template values where a missing variable reads as its name, never as "{name}"."""

    def __missing__(self, key: str) -> str:
        return key.replace("_", " ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- languages and departments --------------------------------------------------------------


class LanguageSpec(_Model):
    """One language a flow speaks: how it is named to the caller and which voice reads it."""

    #: How the language is offered: "For *English*, press 1." Defaults from the tag (en -> English).
    name: Text | None = None
    #: Twilio voice for this language, e.g. Polly.Lupe; None is Twilio's default for the language.
    voice: Text | None = None
    #: How one keypad option is read in this language; ``{option}`` and ``{digit}`` are filled in.
    menu_option: Text = "For {option}, press {digit}."


class Phrases(_Model):
    """What the app says around a transfer, per flow: any key left out keeps :data:`BUILTIN_PHRASES`' text.

    Each is a prompt like any other (one text, or one per declared language).
    """

    connecting: Prompt | None = None
    nobody_can_take: Prompt | None = None
    nobody_left: Prompt | None = None
    callback_offer: Prompt | None = None
    long_wait_offer: Prompt | None = None
    long_wait_message_only: Prompt | None = None
    callback_booked: Prompt | None = None
    key_not_understood: Prompt | None = None
    connecting_after_wait: Prompt | None = None
    sorry_to_keep_you: Prompt | None = None
    apology: Prompt | None = None
    hold_intro: Prompt | None = None
    hold_message: Prompt | None = None
    hold_message_no_estimate: Prompt | None = None
    voicemail_prompt: Prompt | None = None
    callback_greeting_known: Prompt | None = None
    callback_greeting: Prompt | None = None
    callback_connecting: Prompt | None = None
    callback_machine_note: Prompt | None = None
    find_another_rep: Prompt | None = None
    find_someone_after_handoff: Prompt | None = None
    hold_for_transfer: Prompt | None = None
    message_taken: Prompt | None = None
    no_message: Prompt | None = None


def builtin_phrase(key: str, language: str) -> str | None:
    """The built-in text of phrase ``key`` in ``language`` (by its primary subtag: es-MX -> es), if there is one."""
    return BUILTIN_PHRASES[key].get(language.split("-")[0].lower())


class Department(_Model):
    """A team that calls can be transferred to; its id (the mapping key) is the reps' skill."""

    #: How the department is spoken ("transferring you to technical support"), optionally per
    #: language. Defaults to the id with underscores as spaces; see :meth:`Flow.department_name`.
    name: Prompt | None = None
    #: Keypad digit offered by menus and accepted during open questions.
    digit: Digit
    #: Typical caller phrasings; the speech classifier learns from these.
    examples: tuple[Text, ...] = ()
    #: One line listing what the department handles ("invoices, refunds, payment methods"): each topic is one more
    #: example for the speech classifier (measured: +5 to +8 points of routing accuracy, ivr_flows/README.md).
    description: Text | None = None


# --- nodes ----------------------------------------------------------------------------------


class Exit(NamedTuple):
    """One edge out of a node, as the loader's checks and the graph need it."""

    #: Key path of the target inside the node, e.g. ``("rules", 0, "next")``.
    path: KeyPath
    #: The node it leads to.
    target: str
    #: Short label for diagrams: ``next``, ``closed``, ``tier: vip``, ``1`` …
    label: str
    #: Facts certainly true on this edge: ``department`` (one has been chosen), ``known`` (the
    #: caller is known and has a first name). Feed the loader's "is it allowed here" analysis.
    sets: frozenset[str] = frozenset()


#: (key path, at "value" or "key", message): a problem a node can find in itself.
LocalProblem = tuple[KeyPath, Literal["value", "key", "parent"], str]

_DEPARTMENT = frozenset({"department"})


class _NodeBase(_Model):
    """Hooks the loader, engine and graph use, so a new node kind only has to describe itself."""

    #: The engine always stops and waits for the caller at this node (<Gather>, <Record>).
    ASKS_CALLER: ClassVar[bool] = False
    #: The engine's walk stops here and the flow hands the call off or ends it (transfer, hangup).
    TERMINAL: ClassVar[bool] = False

    def exits(self) -> list[Exit]:
        """Every edge out of this node."""
        return []

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        """(key path, department id) for every department this node names."""
        return []

    def language_refs(self) -> list[tuple[KeyPath, str]]:
        """(key path, language tag) for every language this node offers (must be declared)."""
        return []

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        """(key path, text or per-language texts, variables always allowed there) for every spoken text.

        ``{department}`` and ``{first_name}`` are not listed: the loader allows them wherever a
        department is certainly chosen / the caller certainly known on every path into the node.
        """
        return []

    def local_problems(self) -> list[LocalProblem]:
        """Problems visible inside the node alone (a digit used twice, overlapping hours)."""
        return []


_COMMON_VARIABLES = frozenset({"company"})


def _texts(
    out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]],
    path: KeyPath,
    value: str | dict[str, str] | None,
    allowed: frozenset[str] = _COMMON_VARIABLES,
) -> None:
    if value is not None:
        out.append((path, value, allowed))


class SayNode(_NodeBase):
    """Speak a text and move on without waiting for the caller."""

    kind: Literal["say"]
    text: Prompt
    #: Used instead of ``text`` when the caller is recognised and their first name is known.
    known_caller_text: Prompt | None = None
    next: NodeId

    def exits(self) -> list[Exit]:
        return [Exit(("next",), self.next, "next")]

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("text",), self.text)
        _texts(out, ("known_caller_text",), self.known_caller_text, _COMMON_VARIABLES | {"first_name"})
        return out


class AskNode(_NodeBase):
    """Open question: the caller may speak, or press a department's digit (or both)."""

    ASKS_CALLER: ClassVar[bool] = True

    kind: Literal["ask"]
    prompt: Prompt
    #: Said instead of ``prompt`` on a retry; defaults to the prompt.
    reprompt: Prompt | None = None
    #: How the caller may answer: in words, with a department's digit, or either.
    input: Literal["speech", "keypad", "both"] = "both"
    #: How many times to ask again after silence / nothing understood / an unknown digit.
    retries: int = Field(default=1, ge=0, le=5)
    #: Seconds of silence Twilio waits before giving up on the caller.
    timeout: int = Field(default=5, ge=1, le=60)
    #: Extra phrases for Twilio's speech recogniser (product names, jargon).
    hints: tuple[Hint, ...] = Field(default=(), max_length=MAX_ADMIN_HINTS)
    #: Where to go when the retries are used up and the last try was silence.
    on_no_input: NodeId
    #: Where to go when the retries are used up and the last try was a key that is no
    #: department's digit; default: ``on_no_input``.
    on_no_match: NodeId | None = None
    next: NodeId

    def exits(self) -> list[Exit]:
        out = [Exit(("next",), self.next, "next"), Exit(("on_no_input",), self.on_no_input, "on_no_input")]
        if self.on_no_match is not None:
            out.append(Exit(("on_no_match",), self.on_no_match, "on_no_match"))
        return out

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("prompt",), self.prompt)
        _texts(out, ("reprompt",), self.reprompt)
        return out


class MenuChoice(_Model):
    """One keypad option of a menu: choose a department, go to a node, or both."""

    digit: Digit
    #: Department chosen by this key (the call then continues at the choice's or the menu's ``next``).
    department: DepartmentId | None = None
    #: Where this key leads; default: the menu's ``next``.
    next: NodeId | None = None
    #: How the option is read in ``{menu_options}``; default: the department's name.
    label: Prompt | None = None


class MenuNode(_NodeBase):
    """Keypad menu: the departments' own digits, or explicit ``choices``; always ends somewhere."""

    ASKS_CALLER: ClassVar[bool] = True

    kind: Literal["menu"]
    prompt: Prompt
    #: Said instead of ``prompt`` on a retry; defaults to the prompt.
    reprompt: Prompt | None = None
    #: Which departments to offer (with their own digits), in this order; default: all.
    departments: tuple[DepartmentId, ...] | None = Field(default=None, min_length=1)
    #: Explicit keypad options instead of ``departments``.
    choices: tuple[MenuChoice, ...] | None = Field(default=None, min_length=1)
    retries: int = Field(default=0, ge=0, le=5)
    timeout: int = Field(default=5, ge=1, le=60)
    #: Department chosen when the caller presses nothing valid before the retries run out.
    fallback: DepartmentId
    next: NodeId

    def exits(self) -> list[Exit]:
        # Every way out through `next` has chosen a department: a key's, or the fallback.
        out = [Exit(("next",), self.next, "next", _DEPARTMENT)]
        for i, choice in enumerate(self.choices or ()):
            if choice.next is not None:
                sets = _DEPARTMENT if choice.department is not None else frozenset()
                out.append(Exit(("choices", i, "next"), choice.next, choice.digit, sets))
        return out

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        refs: list[tuple[KeyPath, str]] = [(("departments", i), d) for i, d in enumerate(self.departments or ())]
        refs.extend(
            (("choices", i, "department"), c.department)
            for i, c in enumerate(self.choices or ())
            if c.department is not None
        )
        refs.append((("fallback",), self.fallback))
        return refs

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        allowed = _COMMON_VARIABLES | {"menu_options"}
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("prompt",), self.prompt, allowed)
        _texts(out, ("reprompt",), self.reprompt, allowed)
        for i, choice in enumerate(self.choices or ()):
            _texts(out, ("choices", i, "label"), choice.label)
        return out

    def local_problems(self) -> list[LocalProblem]:
        problems: list[LocalProblem] = []
        if self.departments is not None and self.choices is not None:
            problems.append((("choices",), "key", "use either `departments` (their own digits) or `choices`, not both"))
        listed: set[str] = set()
        for i, department in enumerate(self.departments or ()):
            if department in listed:
                problems.append((("departments", i), "value", f"department {department!r} is listed twice"))
            listed.add(department)
        used: dict[str, int] = {}
        for i, choice in enumerate(self.choices or ()):
            if choice.digit in used:
                problems.append(
                    (
                        ("choices", i, "digit"),
                        "value",
                        f"keypad digit '{choice.digit}' is already used by choices[{used[choice.digit]}] of this menu",
                    )
                )
            else:
                used[choice.digit] = i
            if choice.department is None and choice.next is None:
                problems.append((("choices", i), "value", "a choice needs a `department`, a `next`, or both"))
            elif choice.department is None and choice.label is None:
                problems.append(
                    (("choices", i), "value", "a choice without a department needs a `label` to be read out")
                )
        return problems


class RouteNode(_NodeBase):
    """Classify the caller's words into a department (unless one is already chosen)."""

    kind: Literal["route"]
    #: Minimum classifier confidence (0-1) to trust its answer; below it, ``fallback`` is used.
    threshold: float = Field(ge=0.0, le=1.0)
    fallback: DepartmentId
    next: NodeId

    def exits(self) -> list[Exit]:
        return [Exit(("next",), self.next, "next", _DEPARTMENT)]

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        return [(("fallback",), self.fallback)]


class Condition(_Model):
    """Facts about the caller that must all hold for a branch rule to be taken."""

    #: true: the CRM knows the caller (and their first name); false: it does not.
    known: bool | None = None
    #: The caller's tier is one of these (case-insensitive).
    tier: OneOrMoreText | None = None
    #: The caller has (true) / has no (false) open case.
    open_case: bool | None = None
    #: The caller was last in contact at most this many days ago.
    repeat_within_days: int | None = Field(default=None, ge=0, le=3650)
    #: The CRM's language for the caller is one of these; ``es`` matches any ``es-XX``.
    language: OneOrMoreLanguage | None = None
    #: Custom CRM fields: each named field equals (one of) the given value(s), case-insensitive.
    custom: dict[Text, OneOrMoreText] | None = Field(default=None, min_length=1)

    def describe(self) -> str:
        """``tier: vip & open case``: the rule as a diagram label."""
        parts = []
        if self.known is not None:
            parts.append("known" if self.known else "not known")
        if self.tier is not None:
            parts.append("tier: " + "|".join(self.tier))
        if self.open_case is not None:
            parts.append("open case" if self.open_case else "no open case")
        if self.repeat_within_days is not None:
            parts.append(f"repeat ≤ {self.repeat_within_days}d")
        if self.language is not None:
            parts.append("language: " + "|".join(self.language))
        for field, values in (self.custom or {}).items():
            parts.append(f"{field}: " + "|".join(values))
        return " & ".join(parts) or "(no condition)"

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class BranchRule(_Model):
    """``when`` these facts hold, go to ``next``."""

    when: Condition
    next: NodeId


class BranchNode(_NodeBase):
    """Go one way or another on what the CRM knows about the caller: the first matching rule wins."""

    kind: Literal["branch"]
    rules: tuple[BranchRule, ...] = Field(min_length=1)
    #: Where callers go when no rule matches.
    otherwise: NodeId

    def exits(self) -> list[Exit]:
        out = [
            Exit(("rules", i, "next"), rule.next, rule.when.describe(), _KNOWN if rule.when.known else frozenset())
            for i, rule in enumerate(self.rules)
        ]
        # If an earlier rule takes every unknown caller, whoever reaches `otherwise` is known.
        unknown_taken = any(r.when.known is False and r.when.model_fields_set == {"known"} for r in self.rules)
        out.append(Exit(("otherwise",), self.otherwise, "otherwise", _KNOWN if unknown_taken else frozenset()))
        return out

    def local_problems(self) -> list[LocalProblem]:
        return [
            (("rules", i, "when"), "value", "a rule needs at least one condition; use `otherwise` for everyone else")
            for i, rule in enumerate(self.rules)
            if rule.when.is_empty()
        ]


_KNOWN = frozenset({"known"})


class HoursNode(_NodeBase):
    """Open or closed right now? Business hours per weekday, holidays, in the business's time zone."""

    kind: Literal["hours"]
    #: IANA time zone the hours are in, e.g. America/New_York (daylight saving time included).
    timezone: TimeZoneName
    #: Opening hours by day: ``mon-fri: "08:00-20:00"``; days not listed are closed.
    schedule: dict[DayKey, DayHours] = Field(min_length=1)
    #: Whole days closed: ``2025-12-25`` (that day) or ``12-25`` (every year).
    holidays: tuple[Holiday, ...] = ()
    #: Where to go while open.
    open: NodeId
    #: Where to go after hours and on holidays.
    closed: NodeId

    _zone: zoneinfo.ZoneInfo | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        # Load the zone once, at validation: the engine must not touch the file system per call.
        self._zone = zoneinfo.ZoneInfo(self.timezone)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The node's time zone, loaded when the flow was."""
        assert self._zone is not None  # set by model_post_init
        return self._zone

    def exits(self) -> list[Exit]:
        return [Exit(("open",), self.open, "open"), Exit(("closed",), self.closed, "closed")]

    def is_open(self, local: dt.datetime) -> bool:
        """Whether ``local`` (already in :attr:`zone`) is within the opening hours."""
        day = local.date()
        if day.isoformat() in self.holidays or day.isoformat()[5:] in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        for key, ranges in self.schedule.items():
            if local.weekday() in day_key_days(key):
                for item in ranges:
                    start, end = time_range_minutes(item)
                    if start <= minute < end:
                        return True
        return False

    def local_problems(self) -> list[LocalProblem]:
        problems: list[LocalProblem] = []
        seen: dict[int, list[tuple[int, int, str, str]]] = {d: [] for d in range(7)}
        for key, ranges in self.schedule.items():
            single = len(ranges) == 1
            for i, item in enumerate(ranges):
                start, end = time_range_minutes(item)
                path: KeyPath = ("schedule", key) if single else ("schedule", key, i)
                clash = None
                for day in day_key_days(key):
                    for s, e, other, other_key in seen[day]:
                        if start < e and s < end and clash is None:
                            clash = (day, other, other_key)
                    seen[day].append((start, end, item, key))
                if clash is not None:
                    day, other, other_key = clash
                    where = "" if other_key == key else f" from '{other_key}'"
                    problems.append((path, "value", f"{item} on {DAY_NAMES[day]} overlaps {other}{where}"))
        yearly = {holiday for holiday in self.holidays if len(holiday) == 5}
        listed: set[str] = set()
        for i, holiday in enumerate(self.holidays):
            if holiday in listed:
                problems.append((("holidays", i), "value", f"holiday {holiday} is listed twice"))
            elif len(holiday) == 10 and holiday[5:] in yearly:
                message = f"holiday {holiday} is already closed every year by {holiday[5:]}"
                problems.append((("holidays", i), "value", message))
            listed.add(holiday)
        return problems


class LanguageNode(_NodeBase):
    """Offer a choice of language; every text after it is spoken in the chosen one.

    Not ``ASKS_CALLER``: with ``use_known`` a caller whose language the CRM knows passes straight
    through, so a loop back to this node would spin for them and the loader must reject it.
    """

    kind: Literal["language"]
    prompt: Prompt = "{language_options}"
    reprompt: Prompt | None = None
    #: Language tag -> keypad digit; default: every declared language, digits 1, 2, … in order.
    choices: dict[Language, Digit] | None = Field(default=None, min_length=1)
    #: When the CRM already has the caller's language and it is offered, use it without asking.
    use_known: bool = True
    retries: int = Field(default=1, ge=0, le=5)
    timeout: int = Field(default=5, ge=1, le=60)
    #: Where to go once a language is chosen (or, after the retries, the flow's default kept).
    next: NodeId

    def exits(self) -> list[Exit]:
        return [Exit(("next",), self.next, "next")]

    def language_refs(self) -> list[tuple[KeyPath, str]]:
        return [(("choices", code), code) for code in self.choices or {}]

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        allowed = _COMMON_VARIABLES | {"language_options"}
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("prompt",), self.prompt, allowed)
        _texts(out, ("reprompt",), self.reprompt, allowed)
        return out

    def local_problems(self) -> list[LocalProblem]:
        problems: list[LocalProblem] = []
        used: dict[str, str] = {}
        for code, digit in (self.choices or {}).items():
            if digit in used:
                problems.append(
                    (
                        ("choices", code),
                        "value",
                        f"keypad digit '{digit}' is already used by {used[digit]} in this menu",
                    )
                )
            else:
                used[digit] = code
        return problems


class TransferNode(_NodeBase):
    """Hand the call to the app, which picks a rep (whisper first) or queues the caller."""

    TERMINAL: ClassVar[bool] = True

    kind: Literal["transfer"]
    #: Fixed department; default: the one chosen earlier in the call.
    department: DepartmentId | None = None
    #: What the app says while the caller waits in line; may use {estimated_wait} and {queue_position}.
    queue_message: Prompt | None = None
    #: Where the call continues when the rep hangs up first (typically a survey); default: goodbye.
    after: NodeId | None = None

    def exits(self) -> list[Exit]:
        return [] if self.after is None else [Exit(("after",), self.after, "after", _DEPARTMENT)]

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        return [] if self.department is None else [(("department",), self.department)]

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        allowed = _COMMON_VARIABLES | {"estimated_wait", "queue_position"}
        _texts(out, ("queue_message",), self.queue_message, allowed | ({"department"} if self.department else set()))
        return out


class VoicemailNode(_NodeBase):
    """Ask for a message and record it; the app transcribes it and files it with a follow-up task."""

    ASKS_CALLER: ClassVar[bool] = True

    kind: Literal["voicemail"]
    #: Said before the beep.
    prompt: Prompt
    #: Longest message in seconds.
    max_length: int = Field(default=120, ge=5, le=3600)
    transcribe: bool = True
    #: Why the caller is leaving a message, for the follow-up task.
    reason: Literal["voicemail", "after_hours"] = "voicemail"
    #: Where to go once the message is recorded.
    next: NodeId
    #: Where to go when nothing was recorded; default: ``next``.
    on_no_input: NodeId | None = None

    def exits(self) -> list[Exit]:
        out = [Exit(("next",), self.next, "next")]
        if self.on_no_input is not None:
            out.append(Exit(("on_no_input",), self.on_no_input, "on_no_input"))
        return out

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("prompt",), self.prompt)
        return out


class GotoNode(_NodeBase):
    """Continue at another node: lets several exits share one path under a readable name."""

    kind: Literal["goto"]
    target: NodeId

    def exits(self) -> list[Exit]:
        return [Exit(("target",), self.target, "goto")]


class HangupNode(_NodeBase):
    """Optionally say something, then end the call."""

    TERMINAL: ClassVar[bool] = True

    kind: Literal["hangup"]
    text: Prompt | None = None

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("text",), self.text)
        return out


class SurveyQuestion(_Model):
    """One keypad question; the key pressed is stored under ``id``."""

    id: QuestionId
    prompt: Prompt
    #: The keys that are an answer; anything else (or silence) leaves the question unanswered.
    keys: tuple[Digit, ...] = Field(default=("1", "2", "3", "4", "5"), min_length=1)


class SurveyNode(_NodeBase):
    """One or two post-call keypad questions, asked once each; answers go on the interaction."""

    ASKS_CALLER: ClassVar[bool] = True

    kind: Literal["survey"]
    #: Said before the first question.
    intro: Prompt | None = None
    questions: tuple[SurveyQuestion, ...] = Field(min_length=1, max_length=2)
    timeout: int = Field(default=5, ge=1, le=60)
    next: NodeId

    def exits(self) -> list[Exit]:
        return [Exit(("next",), self.next, "next")]

    def templates(self) -> list[tuple[KeyPath, str | dict[str, str], frozenset[str]]]:
        out: list[tuple[KeyPath, str | dict[str, str], frozenset[str]]] = []
        _texts(out, ("intro",), self.intro)
        for i, question in enumerate(self.questions):
            _texts(out, ("questions", i, "prompt"), question.prompt)
        return out

    def local_problems(self) -> list[LocalProblem]:
        problems: list[LocalProblem] = []
        ids: set[str] = set()
        for i, question in enumerate(self.questions):
            if question.id in ids:
                problems.append((("questions", i, "id"), "value", f"question id {question.id!r} is used twice"))
            ids.add(question.id)
            keys: set[str] = set()
            for j, key in enumerate(question.keys):
                if key in keys:
                    problems.append((("questions", i, "keys", j), "value", f"keypad digit '{key}' is listed twice"))
                keys.add(key)
        return problems


#: Any node; pydantic picks the class from the ``kind`` key.
Node = Annotated[
    SayNode
    | AskNode
    | MenuNode
    | RouteNode
    | BranchNode
    | HoursNode
    | LanguageNode
    | TransferNode
    | VoicemailNode
    | GotoNode
    | HangupNode
    | SurveyNode,
    Field(discriminator="kind"),
]

#: kind tag -> node class, in the order they are documented.
NODE_KINDS: Mapping[str, type[_NodeBase]] = {
    "say": SayNode,
    "ask": AskNode,
    "menu": MenuNode,
    "route": RouteNode,
    "branch": BranchNode,
    "hours": HoursNode,
    "language": LanguageNode,
    "transfer": TransferNode,
    "voicemail": VoicemailNode,
    "goto": GotoNode,
    "hangup": HangupNode,
    "survey": SurveyNode,
}

# --- the flow -------------------------------------------------------------------------------


class Flow(_Model):
    """One validated call flow. Shared read-only by every call; build it with the loader."""

    #: Identifies the flow in logs and stored call states; the loader defaults it to the file stem.
    name: Text = "flow"
    company: Text
    #: The default language: spoken until a ``language`` node chooses another.
    language: Language = "en-US"
    voice: Text | None = None
    #: Every language the flow speaks; default: just ``language`` with ``voice``.
    languages: dict[Language, LanguageSpec] = Field(default_factory=dict)
    #: Said when a transfer without ``after`` ends with the caller still there.
    goodbye: Prompt | None = None
    #: The app's own words around a transfer, when the built-in ones do not suit (see :class:`Phrases`).
    phrases: Phrases = Field(default_factory=Phrases)
    start: NodeId
    departments: dict[DepartmentId, Department] = Field(min_length=1)
    nodes: dict[NodeId, Node] = Field(min_length=1)

    _source: str = PrivateAttr(default="<memory>")
    _version: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """Where the flow was loaded from (the path as given to the loader)."""
        return self._source

    @property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of the file bytes: tells which flow a call ran."""
        if self._version is None:
            # Built without the loader (tests): hash the canonical JSON instead of the file.
            self._version = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
        return self._version

    @property
    def spoken_languages(self) -> dict[str, LanguageSpec]:
        """Every language the flow speaks, default first when ``languages`` is not given."""
        if self.languages:
            return dict(self.languages)
        return {self.language: LanguageSpec(voice=self.voice)}

    def language_name(self, code: str) -> str:
        """How language ``code`` is offered to callers ("English", "Español")."""
        spec = self.spoken_languages.get(code)
        if spec is not None and spec.name is not None:
            return spec.name
        return _LANGUAGE_NAMES.get(code.split("-")[0].lower(), code)

    def voice_for(self, code: str) -> str | None:
        """The Twilio voice for ``code``: its ``languages`` entry, else the top-level ``voice``."""
        spec = self.languages.get(code)
        if spec is not None and spec.voice is not None:
            return spec.voice
        return self.voice if code == self.language or not self.languages else None

    def department_name(self, key: str, language: str | None = None) -> str:
        """How department ``key`` is spoken (in ``language``); an unknown key is humanised rather
        than raising, because this runs on the caller's path (e.g. a call state stored by an older flow)."""
        dept = self.departments.get(key)
        if dept is not None and dept.name is not None:
            return localized(dept.name, language or self.language, self.language)
        return key.replace("_", " ")

    def goodbye_template(self, language: str | None = None) -> str:
        """The flow's ``goodbye:`` in ``language``, or the built-in one for that language (variables unfilled)."""
        language = language or self.language
        if self.goodbye is not None:
            return localized(self.goodbye, language, self.language)
        return DEFAULT_GOODBYES.get(language.split("-")[0].lower(), DEFAULT_GOODBYE)

    def say_goodbye(self, language: str | None = None) -> str:
        """The goodbye in ``language``, ready to say (``{company}`` is its only variable)."""
        return string.Formatter().vformat(self.goodbye_template(language), (), _Blank({"company": self.company}))

    def phrase(self, key: str, language: str | None = None, *, configured: str | None = None, **values: str) -> str:
        """App phrase ``key`` (see :data:`BUILTIN_PHRASES`) in ``language``, its variables filled in.

        The flow's own ``phrases:`` text first; then, for English, ``configured`` (config.yaml's text, for the
        keys in :data:`CONFIGURED_PHRASES`); then the built-in one for the language, then English. Never raises
        (the caller's path): the loader has checked the flow's templates, and a variable not given is left as its
        name rather than read out in braces.
        """
        language = language or self.language
        own = getattr(self.phrases, key)
        if isinstance(own, str):
            template = own
        elif own is not None and language in own:
            template = own[language]
        elif configured is not None and language.split("-")[0].lower() == "en":
            template = configured
        else:
            template = builtin_phrase(key, language) or (
                localized(own, language, self.language) if own is not None else BUILTIN_PHRASES[key]["en"]
            )
        filled = {"company": self.company, **values}
        return string.Formatter().vformat(template, (), _Blank(filled))

    def _attach(self, *, source: str, version: str) -> None:
        """Record provenance; called by the loader right after validation."""
        self._source = source
        self._version = version
