"""Bulk import of customers and reps from the CSV files admins export from spreadsheets and other CRMs.

The promise to the admin: *a bad row is reported with its line number and the reason, good rows still load, and
nothing is ever half-written.* Hence the two phases:

1. Read and validate the whole file without touching the store. Problems with the file as a whole (not UTF-8, no
   header, a required column missing) raise :class:`CsvFormatError`, because no row can be trusted then. Problems
   with one row become a :class:`RowError` and that row is left out.
2. Write every good row in ONE unit of work, so a crash or a database error part-way leaves the store as it was.

Rows are upserted (customers by phone number, reps by name), so importing the same file twice updates instead of
duplicating, and an admin can fix the reported rows and simply import the whole file again.

Callers should open files with ``encoding="utf-8-sig", newline=""`` (the :mod:`csv` module's advice); a file opened
with plain ``utf-8`` or without ``newline=""`` works too: a leading BOM is dropped here and line numbers stay right.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import phonenumbers

from crm_sync.db import Store
from crm_sync.phones import InvalidPhoneNumber, to_e164
from crm_sync.queries import customers, reps

__all__ = [
    "CUSTOMER_COLUMNS",
    "REP_COLUMNS",
    "CsvFormatError",
    "ImportReport",
    "RowError",
    "import_customers",
    "import_reps",
]

#: Columns of a customers file: (required, optional). Any other column is kept in ``Customer.custom_fields``.
CUSTOMER_COLUMNS: tuple[tuple[str, ...], tuple[str, ...]] = (("name", "phone"), ("email", "tier", "notes"))
#: Columns of a reps file: (required, optional). Reps have nowhere to keep extra columns, so any other column is a
#: file error rather than silently dropped data (a misspelt "langauges" must not go unnoticed).
REP_COLUMNS: tuple[tuple[str, ...], tuple[str, ...]] = (("name", "phone", "departments"), ("languages", "role"))
#: What a rep may be: a rep takes calls; a supervisor also sees the floor and acts on every call and task.
ROLES = ("rep", "supervisor")

DEFAULT_TIER = "standard"

# Column sizes of crm_sync.models: checked here so that PostgreSQL (which enforces them, unlike SQLite) never fails
# the whole import over one overlong value.
_MAX_NAME = 200
_MAX_EMAIL = 320
_MAX_TIER = 32
_MAX_DEPARTMENT = 64

_TIER_RE = re.compile(r"^[a-z0-9_-]+$")
# "Looks like an email": something@domain.tld without spaces. Deliverability is the mail system's business.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
# BCP-47-ish: a 2-3 letter language, then subtags such as a script (Latn), a region (US, 419) or a variant.
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_LIST_SEPARATOR = ";"

_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not made of digits",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too few digits",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too few digits",
    phonenumbers.NumberParseException.TOO_LONG: "too many digits",
}
_POSSIBLE_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too few digits",
    phonenumbers.ValidationResult.TOO_LONG: "too many digits",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong number of digits",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number: add the area code",
}


class CsvFormatError(ValueError):
    """The file as a whole cannot be imported (not UTF-8, empty, not CSV, a required column missing).

    Nothing is written when this is raised. The message names the file and says what to fix.
    """


@dataclass(frozen=True)
class RowError:
    """One rejected row: ``str()`` gives ``customers.csv:7: <reason>``, the form editors and terminals link to."""

    source: str
    #: Physical line in the file where the row starts (the header is line 1; quoted multi-line values count).
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows created, rows updated, and the rows rejected (in file order)."""

    created: int
    updated: int
    errors: list[RowError] = field(default_factory=list)
    #: The names of the rows that loaded, in file order (the CLI sets presence for imported reps).
    names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        """Every row of the file loaded."""
        return not self.errors


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawRow:
    line: int
    #: Normalised column name -> value with surrounding whitespace removed (missing trailing cells are "").
    values: dict[str, str]
    #: Problems with the row's shape (more cells than the header has), reported together with its value problems.
    problems: list[str]


def _lines(source: TextIO, source_name: str) -> Iterator[str]:
    """The file's lines for csv.reader: leading BOM dropped, trailing blanks trimmed, NULs refused.

    Trimming spaces and tabs before the line break lets ``"quoted"  `` at a line's end pass the strict reader (see
    _iter_records). A NUL means UTF-16 or a binary spreadsheet read as UTF-8: no row of it would make sense.
    """
    first = True
    for line in source:
        if first:
            line = line.removeprefix("\ufeff")
            first = False
        if "\x00" in line:
            raise CsvFormatError(
                f"{source_name}: contains NUL characters, so it is not a UTF-8 CSV file "
                "(is it UTF-16, or a spreadsheet such as .xlsx?); save it as 'CSV UTF-8 (comma delimited)'"
            )
        body = line.rstrip("\r\n")
        yield body.rstrip(" \t") + line[len(body) :]


def _iter_records(source: TextIO, source_name: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, cells) per CSV record, turning decoding and quoting failures into file errors.

    ``csv.reader.line_num`` is the line a record *ends* on; a record starts right after the previous one ended
    (blank lines are records of their own), which keeps line numbers right across quoted multi-line values.
    ``strict=True`` makes an unclosed quote an error instead of silently swallowing the rest of the file.
    """
    reader = csv.reader(_lines(source, source_name), strict=True)
    previous_end = 0
    try:
        for cells in reader:
            yield previous_end + 1, cells
            previous_end = reader.line_num
    except UnicodeDecodeError as exc:
        # No line number: the text layer decodes ahead in blocks, so the reader's position says nothing useful.
        raise CsvFormatError(
            f"{source_name}: is not UTF-8 text ({exc.reason}: byte {exc.object[exc.start : exc.start + 1]!r}); "
            "save it as 'CSV UTF-8' and import it again"
        ) from exc
    except csv.Error as exc:
        raise CsvFormatError(
            f"{source_name}:{previous_end + 1}: malformed CSV ({exc}); check the quotes in the row starting on this "
            "line: nothing after it can be read reliably"
        ) from exc


def _is_blank(cells: Sequence[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _read_table(
    source: TextIO,
    source_name: str,
    *,
    required: Sequence[str],
    optional: Sequence[str],
    extra_columns_allowed: bool,
) -> tuple[list[str], list[_RawRow]]:
    """Read the header and every non-blank row; returns (the file's normalised column names, rows).

    Raises CsvFormatError for everything that makes the file as a whole unusable.
    """
    records = _iter_records(source, source_name)
    header: list[str] | None = None
    header_line = 0
    for line, cells in records:
        if not _is_blank(cells):
            header, header_line = [cell.strip().lower() for cell in cells], line
            break
    if header is None:
        hint = _columns_hint(required, optional, extra_columns_allowed)
        raise CsvFormatError(f"{source_name}: the file is empty; expected a header row with {hint}")
    _check_header(header, header_line, source_name, required, optional, extra_columns_allowed)

    rows: list[_RawRow] = []
    for line, cells in records:
        if _is_blank(cells):
            continue
        values: dict[str, str] = {}
        problems: list[str] = []
        for index, cell in enumerate(cells):
            # Windows line breaks inside a quoted value (kept as is when the file is opened with newline="")
            # become "\n", so notes read the same whichever editor wrote the file.
            value = cell.replace("\r\n", "\n").replace("\r", "\n").strip()
            if index >= len(header):
                if value:
                    problems.append(f"the row has {len(cells)} values but the header has {len(header)} columns")
                    break
            elif header[index]:
                values[header[index]] = value
            elif value:
                problems.append(f"value {value!r} in column {index + 1}, which has no name in the header")
        for name in header:
            if name:
                values.setdefault(name, "")
        rows.append(_RawRow(line, values, problems))
    return header, rows


def _columns_hint(required: Sequence[str], optional: Sequence[str], extra_columns_allowed: bool) -> str:
    hint = f"the columns {', '.join(required)}"
    if optional:
        hint += f" (optional: {', '.join(optional)})"
    if extra_columns_allowed:
        hint += "; other columns are kept as custom fields"
    return hint


def _check_header(
    header: list[str],
    line: int,
    source_name: str,
    required: Sequence[str],
    optional: Sequence[str],
    extra_columns_allowed: bool,
) -> None:
    where = f"{source_name}:{line}"
    hint = _columns_hint(required, optional, extra_columns_allowed)
    named = [name for name in header if name]
    duplicates = sorted({name for name in named if named.count(name) > 1})
    if duplicates:
        raise CsvFormatError(f"{where}: the header names {_quoted(duplicates)} more than once; expected {hint}")
    missing = [name for name in required if name not in named]
    unknown = [] if extra_columns_allowed else [name for name in named if name not in required and name not in optional]
    if missing:
        message = f"{where}: missing required column{'s' if len(missing) > 1 else ''} {_quoted(missing)}"
        if unknown:  # most often the same column misspelt: name both in one go
            message += f" and unknown column{'s' if len(unknown) > 1 else ''} {_quoted(unknown)}"
        message += f"; the header has {_quoted(named) if named else 'no column names'}, expected {hint}"
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            message += ". The header has no commas: save the file as comma-separated CSV"
        raise CsvFormatError(message)
    if unknown:
        raise CsvFormatError(
            f"{where}: unknown column{'s' if len(unknown) > 1 else ''} {_quoted(unknown)}; expected {hint}"
        )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


# --- validating values --------------------------------------------------------------------------------------------


def _check_region(default_region: str) -> str:
    region = default_region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        # A configuration mistake, not a file problem: every row would fail with a misleading reason.
        raise ValueError(f"default_region {default_region!r} is not a region phonenumbers knows (e.g. US, GB, DE)")
    return region


def _why_not_a_phone(raw: str, region: str) -> str:
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return _PARSE_REASONS.get(exc.error_type, "cannot be read as a number")
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    return _POSSIBLE_REASONS.get(reason, "not a possible number")


def _phone(raw: str, region: str, problems: list[str]) -> str | None:
    """The E.164 form of a required phone cell, or None with the reason appended to ``problems``."""
    if not raw:
        problems.append("phone is missing")
        return None
    try:
        return to_e164(raw, default_region=region)
    except InvalidPhoneNumber:
        # The raw value is shown unmasked on purpose: the admin has to find it in their file. Whoever logs these
        # reports must mask them (crm_sync.phones.mask_phones_in).
        problems.append(f"phone {raw!r} is not a phone number ({_why_not_a_phone(raw, region)})")
        return None


def _name(raw: str, problems: list[str]) -> str | None:
    # Collapse runs of whitespace (including newlines from a quoted cell): a name is shown on one line.
    name = " ".join(raw.split())
    if not name:
        problems.append("name is missing")
        return None
    if len(name) > _MAX_NAME:
        problems.append(f"name is {len(name)} characters long, at most {_MAX_NAME} are allowed")
        return None
    return name


def _email(raw: str, problems: list[str]) -> str | None:
    if not raw:
        return None
    if len(raw) > _MAX_EMAIL or not _EMAIL_RE.match(raw):
        problems.append(f"email {raw!r} does not look like an email address")
    return raw


def _tier(raw: str, problems: list[str]) -> str:
    tier = raw.lower() or DEFAULT_TIER
    if len(tier) > _MAX_TIER or not _TIER_RE.match(tier):
        problems.append(
            f"tier {raw!r} is not a single short word (letters, digits, '-' or '_', at most {_MAX_TIER} characters)"
        )
    return tier


def _split_list(raw: str) -> list[str]:
    """``"a; b;;a"`` -> ``["a", "b"]``: trimmed, empties dropped, first occurrence kept."""
    seen: dict[str, None] = {}
    for item in raw.split(_LIST_SEPARATOR):
        if item.strip():
            seen.setdefault(item.strip(), None)
    return list(seen)


class _KnownDepartments:
    """The live flow's department ids, matched exactly first and then case-insensitively ("Billing" -> billing).

    The match returns the id as the flow spells it: a rep's skill must equal the department id exactly to route.
    """

    def __init__(self, ids: Collection[str]) -> None:
        for department in ids:
            if len(department) > _MAX_DEPARTMENT:
                raise ValueError(f"department id {department!r} is longer than {_MAX_DEPARTMENT} characters")
        self._exact = set(ids)
        self._folded: dict[str, str] = {}
        for department in sorted(ids):
            self._folded.setdefault(department.casefold(), department)
        self.listing = ", ".join(sorted(self._exact)) or "none"

    def match(self, name: str) -> str | None:
        return name if name in self._exact else self._folded.get(name.casefold())


#: Skill levels, ``department:level`` in the departments column (a new skill without one gets 5).
MIN_LEVEL, MAX_LEVEL = 1, 10


def _departments(raw: str, known: _KnownDepartments, problems: list[str]) -> dict[str, int | None]:
    """``billing:8;general`` → {billing: 8, general: None}: the rep's skills, with the levels the file gives."""
    wanted = _split_list(raw)
    if not wanted:
        problems.append(f"departments is empty; a rep needs at least one of: {known.listing}")
        return {}
    levels: dict[str, int | None] = {}
    unknown: list[str] = []
    for item in wanted:
        name, _, level_text = item.partition(":")
        name, level_text = name.strip(), level_text.strip()
        department = known.match(name)
        if department is None:
            unknown.append(name)
            continue
        level = None
        if level_text:
            if not level_text.isdigit() or not MIN_LEVEL <= int(level_text) <= MAX_LEVEL:
                problems.append(
                    f"skill level {level_text!r} for {department} is not a whole number from {MIN_LEVEL} to {MAX_LEVEL}"
                )
                continue
            level = int(level_text)
        levels.setdefault(department, level)
    if unknown:
        problems.append(
            f"unknown department{'s' if len(unknown) > 1 else ''} {_quoted(unknown)} "
            f"(known departments: {known.listing})"
        )
    return levels


def _canonical_language(tag: str) -> str:
    """en-us -> en-US, zh-hant-tw -> zh-Hant-TW: the casing BCP 47 recommends, so equal tags compare equal."""
    primary, *subtags = tag.split("-")
    out = [primary.lower()]
    for subtag in subtags:
        if len(subtag) == 2 and subtag.isalpha():
            out.append(subtag.upper())
        elif len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())
        else:
            out.append(subtag.lower())
    return "-".join(out)


def _languages(raw: str, problems: list[str]) -> list[str]:
    tags = _split_list(raw)
    bad = [tag for tag in tags if not _LANGUAGE_RE.match(tag)]
    if bad:
        problems.append(
            f"{'languages' if len(bad) > 1 else 'language'} {_quoted(bad)} {'are not' if len(bad) > 1 else 'is not a'} "
            f"language tag{'s' if len(bad) > 1 else ''} such as en-US or es (separate several with '{_LIST_SEPARATOR}')"
        )
    return list(dict.fromkeys(_canonical_language(tag) for tag in tags if _LANGUAGE_RE.match(tag)))


# --- customers ----------------------------------------------------------------------------------------------------


def import_customers(store: Store, source: TextIO, *, source_name: str, default_region: str = "US") -> ImportReport:
    """Validate a customers CSV (``name,phone,email,tier,notes`` + custom columns) and upsert its good rows by phone.

    ``source_name`` is only used in messages (normally the file's name). Numbers without a country code are read as
    ``default_region`` numbers. Extra columns land in ``custom_fields`` under their lower-cased header, empty cells
    skipped (so a blank cell never erases a value an earlier import set). Two rows with the same number (after
    normalisation) are ambiguous: the later one is rejected, naming the earlier line.

    Raises CsvFormatError for a file that cannot be imported at all; nothing is written then.
    """
    region = _check_region(default_region)
    required, optional = CUSTOMER_COLUMNS
    header, rows = _read_table(source, source_name, required=required, optional=optional, extra_columns_allowed=True)
    extra_columns = [name for name in header if name and name not in required and name not in optional]

    errors: list[RowError] = []
    records: list[customers.CustomerFields] = []
    line_of_phone: dict[str, int] = {}
    for row in rows:
        problems = list(row.problems)
        name = _name(row.values["name"], problems)
        phone = _phone(row.values["phone"], region, problems)
        if phone is not None:
            earlier = line_of_phone.setdefault(phone, row.line)
            if earlier != row.line:
                problems.append(f"phone {row.values['phone']!r} ({phone}) is already on line {earlier}")
        email = _email(row.values.get("email", ""), problems)
        tier = _tier(row.values.get("tier", ""), problems)
        notes = row.values.get("notes", "") or None
        custom_fields = {column: row.values[column] for column in extra_columns if row.values[column]}
        if problems or name is None or phone is None:
            errors.append(RowError(source_name, row.line, "; ".join(problems)))
            continue
        records.append(customers.CustomerFields(name, phone, email, tier, notes, custom_fields))

    created, updated = _write_customers(store, records) if records else (0, 0)
    return ImportReport(created=created, updated=updated, errors=errors, names=tuple(r.name for r in records))


def _write_customers(store: Store, records: Sequence[customers.CustomerFields]) -> tuple[int, int]:
    """Upsert every validated row in one transaction; returns (created, updated)."""
    with store.unit_of_work() as session:
        return customers.upsert_customers(session, records)


# --- reps ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RepRecord:
    name: str
    phone_e164: str
    departments: dict[str, int | None]  # department -> skill level, when the file gives one
    languages: list[str]
    role: str | None  # None: the column is absent or empty (a new rep is a rep; an existing one keeps theirs)


def import_reps(
    store: Store,
    source: TextIO,
    *,
    source_name: str,
    known_departments: Collection[str],
    default_region: str = "US",
) -> ImportReport:
    """Validate a reps CSV (``name,phone,departments`` + optional ``languages``, ``role``) and upsert its good rows
    by name.

    ``known_departments`` are the department ids of the live flow: a skill for any other department would route no
    call, so it is a row error listing the known ones. Departments and languages are ``;``-separated; a department
    may carry a skill level from 1 to 10 (``billing:8``; default 5): free reps with the higher level are offered that
    department's calls first. Names are
    matched case-insensitively, like ``reps.upsert_rep`` does, so "ann lee" twice in a file is a duplicate.
    An upsert replaces the rep's departments and languages with the file's, and leaves presence alone.

    Raises CsvFormatError for a file that cannot be imported at all; nothing is written then.
    """
    region = _check_region(default_region)
    known = _KnownDepartments(known_departments)
    required, optional = REP_COLUMNS
    _, rows = _read_table(source, source_name, required=required, optional=optional, extra_columns_allowed=False)

    errors: list[RowError] = []
    records: list[_RepRecord] = []
    line_of_name: dict[str, int] = {}
    for row in rows:
        problems = list(row.problems)
        name = _name(row.values["name"], problems)
        if name is not None:
            earlier = line_of_name.setdefault(name.casefold(), row.line)
            if earlier != row.line:
                problems.append(f"rep {name!r} is already on line {earlier}")
        phone = _phone(row.values["phone"], region, problems)
        departments = _departments(row.values["departments"], known, problems)
        languages = _languages(row.values.get("languages", ""), problems)
        role = _role(row.values.get("role", ""), problems)
        if problems or name is None or phone is None:
            errors.append(RowError(source_name, row.line, "; ".join(problems)))
            continue
        records.append(_RepRecord(name, phone, departments, languages, role))

    created, updated = _write_reps(store, records) if records else (0, 0)
    return ImportReport(created=created, updated=updated, errors=errors, names=tuple(r.name for r in records))


def _role(raw: str, problems: list[str]) -> str | None:
    role = raw.strip().lower()
    if not role:
        return None
    if role not in ROLES:
        problems.append(f"role {raw.strip()!r} is not one of {', '.join(ROLES)}")
        return None
    return role


def _write_reps(store: Store, records: Sequence[_RepRecord]) -> tuple[int, int]:
    """Upsert every validated row in one transaction; returns (created, updated)."""
    created = 0
    with store.unit_of_work() as session:
        for record in records:
            _, was_created = reps.upsert_rep(
                session,
                name=record.name,
                phone_e164=record.phone_e164,
                departments=list(record.departments),
                levels={department: level for department, level in record.departments.items() if level is not None},
                languages=record.languages,
                role=record.role,
            )
            created += was_created
    return created, len(records) - created
