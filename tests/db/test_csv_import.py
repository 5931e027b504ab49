"""CSV import of customers and reps: what loads, what is reported (with which line), and what is never half-written.

Files are written to disk and opened the way the CLI opens them, so BOMs, line endings and decoding are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import event

from crm_sync.csv_import import CsvFormatError, ImportReport, RowError, import_customers, import_reps
from crm_sync.db import Store
from crm_sync.models import Customer, Rep, RepState, utcnow
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.queries.reps import find_rep, list_reps

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "crm_sync" / "demo"
KNOWN_DEPARTMENTS = ("billing", "technical_support", "sales", "account", "general")
KNOWN_LISTING = "account, billing, general, sales, technical_support"


def write(tmp_path: Path, content: str | bytes, name: str) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def load_customers(
    store: Store,
    tmp_path: Path,
    content: str | bytes,
    *,
    name: str = "customers.csv",
    encoding: str = "utf-8-sig",
    newline: str | None = "",
    default_region: str = "US",
) -> ImportReport:
    path = write(tmp_path, content, name)
    with path.open(encoding=encoding, newline=newline) as source:
        return import_customers(store, source, source_name=name, default_region=default_region)


def load_reps(store: Store, tmp_path: Path, content: str | bytes, *, name: str = "reps.csv") -> ImportReport:
    path = write(tmp_path, content, name)
    with path.open(encoding="utf-8-sig", newline="") as source:
        return import_reps(store, source, source_name=name, known_departments=KNOWN_DEPARTMENTS)


def customer(store: Store, phone: str) -> Customer | None:
    with store.unit_of_work() as session:
        return find_customer_by_phone(session, phone)


def reps(store: Store) -> dict[str, Rep]:
    with store.unit_of_work() as session:
        return {rep.name: rep for rep in list_reps(session)}


def errors_by_line(report: ImportReport) -> dict[int, str]:
    return {error.line: error.message for error in report.errors}


# --- customers: good files ----------------------------------------------------------------------------------------


def test_good_customers_file_loads_every_field(store: Store, tmp_path: Path) -> None:
    report = load_customers(
        store,
        tmp_path,
        "name,phone,email,tier,notes\n"
        "Jane Doe,(555) 123-0001,jane@example.com,GOLD,Prefers email.\n"
        "Marcus Chen,+1 555 123 0002,,,\n",
    )

    assert report == ImportReport(created=2, updated=0, errors=[])
    jane = customer(store, "+15551230001")
    assert jane is not None
    assert (jane.name, jane.email, jane.tier, jane.notes) == ("Jane Doe", "jane@example.com", "gold", "Prefers email.")
    marcus = customer(store, "+15551230002")
    assert marcus is not None
    assert (marcus.email, marcus.tier, marcus.notes, marcus.custom_fields) == (None, "standard", None, {})


def test_header_only_file_imports_nothing(store: Store, tmp_path: Path) -> None:
    assert load_customers(store, tmp_path, "name,phone\n") == ImportReport(created=0, updated=0, errors=[])


def test_numbers_without_country_code_use_the_default_region(store: Store, tmp_path: Path) -> None:
    report = load_customers(store, tmp_path, "name,phone\nAda Lovelace,020 7946 0958\n", default_region="GB")

    assert report.created == 1, report.errors
    assert customer(store, "+442079460958") is not None


def test_unknown_default_region_is_a_configuration_error(sqlite_store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default_region 'XX'"):
        load_customers(sqlite_store, tmp_path, "name,phone\nAda,020 7946 0958\n", default_region="XX")


# --- customers: bad rows ------------------------------------------------------------------------------------------


def test_bad_rows_are_reported_by_line_while_good_rows_load(store: Store, tmp_path: Path) -> None:
    report = load_customers(
        store,
        tmp_path,
        "name,phone,email,tier,notes\n"  # 1
        "Jane Doe,(555) 123-0001,jane@example.com,gold,\n"  # 2
        "Bad Phone,555-12,,,\n"  # 3
        ",555 123 0004,,,\n"  # 4
        "Bad Email,555 123 0005,not-an-email,,\n"  # 5
        "Max Good,+1 555 123 0006,,VIP,\n"  # 6
        "Jane Again,+15551230001,,,\n"  # 7
        "Bad Tier,555 123 0008,,gold plus,\n"  # 8
        "Two Problems,12,x@y,,\n"  # 9
        "Too Wide,555 123 0010,,,,surprise\n",  # 10
    )

    assert report.errors == [
        RowError("customers.csv", 3, "phone '555-12' is not a phone number (too few digits)"),
        RowError("customers.csv", 4, "name is missing"),
        RowError("customers.csv", 5, "email 'not-an-email' does not look like an email address"),
        RowError("customers.csv", 7, "phone '+15551230001' (+15551230001) is already on line 2"),
        RowError(
            "customers.csv",
            8,
            "tier 'gold plus' is not a single short word (letters, digits, '-' or '_', at most 32 characters)",
        ),
        RowError(
            "customers.csv",
            9,
            "phone '12' is not a phone number (too few digits); email 'x@y' does not look like an email address",
        ),
        RowError("customers.csv", 10, "the row has 6 values but the header has 5 columns"),
    ]
    assert str(report.errors[0]) == "customers.csv:3: phone '555-12' is not a phone number (too few digits)"
    assert (report.created, report.updated) == (2, 0)
    jane = customer(store, "+15551230001")
    assert jane is not None and jane.name == "Jane Doe"  # the earlier of the two rows with this number won
    max_good = customer(store, "+15551230006")
    assert max_good is not None and max_good.tier == "vip"
    for rejected in ("+15551230004", "+15551230005", "+15551230008", "+15551230010"):
        assert customer(store, rejected) is None, rejected


def test_duplicate_phone_is_detected_across_formats(sqlite_store: Store, tmp_path: Path) -> None:
    report = load_customers(sqlite_store, tmp_path, "name,phone\nA,(555) 123-0001\nB,\n\nC,+1.555.123.0001\n")

    assert errors_by_line(report) == {
        3: "phone is missing",
        5: "phone '+1.555.123.0001' (+15551230001) is already on line 2",
    }


def test_quoted_multiline_values_keep_line_numbers_right(store: Store, tmp_path: Path) -> None:
    report = load_customers(
        store,
        tmp_path,
        "name,phone,notes\n"  # 1
        'Ann Ames,555 123 0001,"first line\n'  # 2
        "second line\n"  # 3
        'third line"\n'  # 4
        "Bob Bell,bad,\n"  # 5
        '"Carl\n'  # 6
        'Cole",nope,"multi\n'  # 7
        'line"\n'  # 8
        'Dee Dunn,555 123 0009,"a ""quoted"", word"\n'  # 9
        "Eve Egan,555-123-00,\n",  # 10
    )

    assert report.errors == [
        RowError("customers.csv", 5, "phone 'bad' is not a phone number (not made of digits)"),
        RowError("customers.csv", 6, "phone 'nope' is not a phone number (not made of digits)"),
        RowError("customers.csv", 10, "phone '555-123-00' is not a phone number (too few digits)"),
    ]
    ann = customer(store, "+15551230001")
    assert ann is not None and ann.notes == "first line\nsecond line\nthird line"
    dee = customer(store, "+15551230009")
    assert dee is not None and dee.notes == 'a "quoted", word'


@pytest.mark.parametrize(
    ("encoding", "newline"),
    [("utf-8", ""), ("utf-8", None), ("utf-8-sig", "")],
    ids=["utf8-newline-empty", "utf8-universal-newlines", "utf8sig"],
)
def test_bom_crlf_blank_lines_and_stray_whitespace(
    sqlite_store: Store, tmp_path: Path, encoding: str, newline: str | None
) -> None:
    content = (
        "\ufeff Name ,PHONE , Email ,Tier,notes\r\n"  # 1: BOM, odd case and spaces in the header
        "\r\n"  # 2
        'Ann Ames  ,555 123 0001 , ann@example.com ,Gold ,"two\r\nlines"  \r\n'  # 3-4
        "   \r\n"  # 5
        ",555 123 0006,,,\r\n"  # 6
        "Bob Bell,555 123 0007,,,\r\n"  # 7
        ",,,,\r\n"  # 8: an empty spreadsheet row
    )
    report = load_customers(sqlite_store, tmp_path, content, encoding=encoding, newline=newline)

    assert report.errors == [RowError("customers.csv", 6, "name is missing")]
    assert (report.created, report.updated) == (2, 0)
    ann = customer(sqlite_store, "+15551230001")
    assert ann is not None
    assert (ann.name, ann.email, ann.tier, ann.notes, ann.custom_fields) == (
        "Ann Ames",
        "ann@example.com",
        "gold",
        "two\nlines",
        {},
    )


# --- customers: whole-file errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            "name,email\nAnn,a@example.com\n", "customers.csv:1: missing required column 'phone'", id="no-phone"
        ),
        pytest.param(
            "\n Email ,tier\n", "customers.csv:2: missing required columns 'name', 'phone'", id="no-name-phone"
        ),
        pytest.param("", "customers.csv: the file is empty", id="empty"),
        pytest.param("\ufeff\n  \n,,\n", "customers.csv: the file is empty", id="only-blank-lines"),
        pytest.param("name;phone;email\nAnn;555 123 0001;\n", "has no commas", id="semicolons"),
        pytest.param("name,phone,Name \n", "the header names 'name' more than once", id="duplicate-column"),
        pytest.param(
            'name,phone,notes\nAnn,555 123 0001,"never closed\nBob,555 123 0002,\n',
            "customers.csv:2: malformed CSV",
            id="unclosed-quote",
        ),
        pytest.param(
            'name,phone,notes\nAnn,555 123 0001,"closed" too early\n',
            "customers.csv:2: malformed CSV",
            id="junk-after-quote",
        ),
        pytest.param(b"name,phone\nJos\xe9,555 123 0001\n", "customers.csv: is not UTF-8 text", id="latin-1"),
        pytest.param("name,phone\n".encode("utf-16-le"), "contains NUL characters", id="utf-16"),
        pytest.param('{"name": "Ann", "phone": "555"}\n', "missing required columns 'name', 'phone'", id="json"),
    ],
)
def test_whole_file_problems_raise_csv_format_error(
    sqlite_store: Store, tmp_path: Path, content: str | bytes, message: str
) -> None:
    with pytest.raises(CsvFormatError) as raised:
        load_customers(sqlite_store, tmp_path, content)

    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_missing_column_message_names_the_file_and_the_expected_columns(sqlite_store: Store, tmp_path: Path) -> None:
    with pytest.raises(CsvFormatError) as raised:
        load_customers(sqlite_store, tmp_path, "full name,phone\nAnn,555 123 0001\n", name="crm-export.csv")

    assert str(raised.value) == (
        "crm-export.csv:1: missing required column 'name'; the header has 'full name', 'phone', expected the columns "
        "name, phone (optional: email, tier, notes); other columns are kept as custom fields"
    )
    assert customer(sqlite_store, "+15551230001") is None


def test_a_decoding_error_late_in_the_file_writes_nothing(store: Store, tmp_path: Path) -> None:
    # Far past the text layer's first read-ahead block, so earlier rows have been parsed when the error strikes.
    good = "".join(f"Customer {i},+1 212 555 {i:04d},customer{i}@example.com,standard,\n" for i in range(2000))
    content = ("name,phone,email,tier,notes\n" + good).encode() + b"Jos\xe9,+1 212 555 9999,,,\n"

    with pytest.raises(CsvFormatError, match="not UTF-8"):
        load_customers(store, tmp_path, content)

    assert customer(store, "+12125550000") is None


def test_a_crash_while_writing_leaves_nothing_half_written(store: Store, tmp_path: Path) -> None:
    """The database fails after the updates of existing customers went out: they are rolled back with it."""
    load_customers(store, tmp_path, "name,phone,tier\nC1,555 123 0001,standard\nC2,555 123 0002,standard\n")
    statements: list[str] = []

    def fail_on_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        statements.append(verb)
        if verb == "INSERT":
            raise RuntimeError("disk on fire")

    content = "name,phone,tier\n" + "".join(f"C{i},555 123 000{i},gold\n" for i in range(1, 6))
    event.listen(store.engine, "before_cursor_execute", fail_on_insert)
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            load_customers(store, tmp_path, content)
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_on_insert)

    assert "UPDATE" in statements and statements[-1] == "INSERT"  # updates were sent before the failure
    for phone in ("+15551230001", "+15551230002"):
        existing = customer(store, phone)
        assert existing is not None and existing.tier == "standard"
    assert customer(store, "+15551230003") is None
    assert load_customers(store, tmp_path, content) == ImportReport(created=3, updated=2, errors=[])


# --- customers: re-import and custom fields ----------------------------------------------------------------------


def test_reimport_updates_instead_of_duplicating(store: Store, tmp_path: Path) -> None:
    first = "name,phone,tier,account_id\nJane Doe,555 123 0001,gold,A-1\nMarcus Chen,555 123 0002,,A-2\n"
    assert load_customers(store, tmp_path, first) == ImportReport(created=2, updated=0, errors=[])
    assert load_customers(store, tmp_path, first) == ImportReport(created=0, updated=2, errors=[])

    second = (
        "name,phone,tier,account_id,region\n"
        "Jane Q. Doe,+1 (555) 123-0001,vip,,west\n"  # same number written differently; blank account_id
        "Marcus Chen,555 123 0002,standard,A-2b,\n"
        "Priya N,555 123 0003,,A-3,east\n"
    )
    assert load_customers(store, tmp_path, second) == ImportReport(created=1, updated=2, errors=[])

    jane = customer(store, "+15551230001")
    assert jane is not None
    assert (jane.name, jane.tier) == ("Jane Q. Doe", "vip")
    # A blank cell never erases a custom field an earlier import set; new columns are added.
    assert jane.custom_fields == {"account_id": "A-1", "region": "west"}
    marcus = customer(store, "+15551230002")
    assert marcus is not None and marcus.custom_fields == {"account_id": "A-2b"}


def test_extra_columns_become_custom_fields(store: Store, tmp_path: Path) -> None:
    report = load_customers(
        store,
        tmp_path,
        "name,phone, Account_ID ,Loyalty Points,email\n"
        "Jane Doe,555 123 0001, ACME-1 ,1200,\n"
        "Marcus Chen,555 123 0002,,,\n",
    )

    assert report.errors == []
    jane = customer(store, "+15551230001")
    assert jane is not None and jane.custom_fields == {"account_id": "ACME-1", "loyalty points": "1200"}
    marcus = customer(store, "+15551230002")
    assert marcus is not None and marcus.custom_fields == {}


def test_a_value_under_a_nameless_column_is_a_row_error(sqlite_store: Store, tmp_path: Path) -> None:
    report = load_customers(sqlite_store, tmp_path, "name,phone,\nAnn,555 123 0001,\nBob,555 123 0002,stray\n")

    assert report.errors == [
        RowError("customers.csv", 3, "value 'stray' in column 3, which has no name in the header"),
    ]
    assert report.created == 1


# --- reps -----------------------------------------------------------------------------------------------------------


def test_reps_good_and_bad_rows(store: Store, tmp_path: Path) -> None:
    report = load_reps(
        store,
        tmp_path,
        "name,phone,departments,languages\n"  # 1
        "Ann Lee,555 010 0001, billing ; Account ,EN-us; es\n"  # 2
        "Bob Ray,555 010 0002,billing;tech;hr,\n"  # 3
        "ann lee,555 010 0004,general,\n"  # 4
        "Cy Dee,555 010 0005,,\n"  # 5
        "Di Eve,555 010 0006,sales,english;fr\n"  # 6
        "Ed Fox,555 010 0007,sales;general;sales,\n"  # 7
        "Fay Gu,555-01,general,\n",  # 8
    )

    assert report.errors == [
        RowError("reps.csv", 3, f"unknown departments 'tech', 'hr' (known departments: {KNOWN_LISTING})"),
        RowError("reps.csv", 4, "rep 'ann lee' is already on line 2"),
        RowError("reps.csv", 5, f"departments is empty; a rep needs at least one of: {KNOWN_LISTING}"),
        RowError(
            "reps.csv",
            6,
            "language 'english' is not a language tag such as en-US or es (separate several with ';')",
        ),
        RowError("reps.csv", 8, "phone '555-01' is not a phone number (too few digits)"),
    ]
    assert (report.created, report.updated) == (2, 0)
    loaded = reps(store)
    assert sorted(loaded) == ["Ann Lee", "Ed Fox"]
    ann = loaded["Ann Lee"]
    assert (ann.phone, ann.departments, ann.languages) == ("+15550100001", ["account", "billing"], ["en-US", "es"])
    assert loaded["Ed Fox"].departments == ["general", "sales"]


def test_reps_skill_levels(store: Store, tmp_path: Path) -> None:
    report = load_reps(
        store,
        tmp_path,
        "name,phone,departments\n"  # 1
        "Ann Lee,555 010 0001,billing:9; general\n"  # 2
        "Bob Ray,555 010 0002,billing:11\n"  # 3
        "Cy Dee,555 010 0003,sales:high;general:2\n",  # 4
    )
    assert report.errors == [
        RowError("reps.csv", 3, "skill level '11' for billing is not a whole number from 1 to 10"),
        RowError("reps.csv", 4, "skill level 'high' for sales is not a whole number from 1 to 10"),
    ]
    with store.unit_of_work() as session:
        ann = find_rep(session, "Ann Lee")
        assert {skill.department: skill.level for skill in ann.skills} == {"billing": 9, "general": 5}
    # A re-import without levels keeps the levels already set.
    load_reps(store, tmp_path, "name,phone,departments\nAnn Lee,555 010 0001,billing;general:7\n")
    with store.unit_of_work() as session:
        ann = find_rep(session, "Ann Lee")
        assert {skill.department: skill.level for skill in ann.skills} == {"billing": 9, "general": 7}


def test_unknown_department_message_names_it_and_the_known_ones(sqlite_store: Store, tmp_path: Path) -> None:
    report = load_reps(sqlite_store, tmp_path, "name,phone,departments\nBob Ray,555 010 0002,billing;returns\n")

    assert [str(error) for error in report.errors] == [
        f"reps.csv:2: unknown department 'returns' (known departments: {KNOWN_LISTING})"
    ]


def test_reps_reimport_replaces_skills_and_keeps_presence(store: Store, tmp_path: Path) -> None:
    assert load_reps(store, tmp_path, "name,phone,departments\nAnn Lee,555 010 0001,billing;sales\n").created == 1
    with store.unit_of_work() as session:
        find_rep(session, "Ann Lee").choose_presence(RepState.AVAILABLE, now=utcnow())

    report = load_reps(
        store,
        tmp_path,
        "Name,Phone,Departments,Languages\nANN LEE,+1 555 010 0009,general;sales,es-mx\nBo Li,555 010 0003,general,\n",
    )

    assert report == ImportReport(created=1, updated=1, errors=[])
    loaded = reps(store)
    assert sorted(loaded) == ["Ann Lee", "Bo Li"]
    ann = loaded["Ann Lee"]
    assert (ann.phone, ann.departments, ann.languages, ann.state) == (
        "+15550100009",
        ["general", "sales"],
        ["es-MX"],
        RepState.AVAILABLE,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            "name,phone\nAnn,555 010 0001\n", "reps.csv:1: missing required column 'departments'", id="no-dept"
        ),
        pytest.param(
            "name,phone,departments,langauges\n", "reps.csv:1: unknown column 'langauges'; expected", id="typo"
        ),
        pytest.param("", "reps.csv: the file is empty", id="empty"),
    ],
)
def test_reps_whole_file_problems(sqlite_store: Store, tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        load_reps(sqlite_store, tmp_path, content)


# --- demo data ----------------------------------------------------------------------------------------------------


def flow_departments() -> list[str]:
    """The department ids of the shipped flow: the demo reps must be able to take every one of its calls."""
    flow = yaml.safe_load((REPO / "ivr_flows" / "main.yaml").read_text(encoding="utf-8"))
    return list(flow["departments"])


def test_demo_files_import_cleanly_and_cover_every_department(store: Store) -> None:
    with (DEMO / "customers.csv").open(encoding="utf-8-sig", newline="") as source:
        customers_report = import_customers(store, source, source_name="customers.csv")
    departments = flow_departments()
    with (DEMO / "reps.csv").open(encoding="utf-8-sig", newline="") as source:
        reps_report = import_reps(store, source, source_name="reps.csv", known_departments=departments)

    assert customers_report.errors == [] and customers_report.created >= 8
    assert reps_report == ImportReport(created=5, updated=0, errors=[])
    jane = customer(store, "+15551230001")
    assert jane is not None and (jane.name, jane.tier) == ("Jane Doe", "gold")
    loaded = reps(store).values()
    assert sorted(rep.phone for rep in loaded) == [f"+1555010000{i}" for i in range(1, 6)]
    for department in departments:
        staffed = sum(department in rep.departments for rep in loaded)
        assert staffed >= (2 if department == "general" else 1), department
    assert any(rep.languages == ["en-US", "es"] for rep in loaded)


# --- size -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigImport:
    store: Store
    report: ImportReport
    seconds: float


@pytest.fixture(scope="module")
def big_import(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigImport]:
    """10,000 customers on SQLite, imported once for the tests below (the import is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("big")
    store = Store(f"sqlite:///{tmp_path}/big.sqlite3")
    store.upgrade()
    rows = "".join(f"Customer {i},+1 (212) 555-{i:04d},c{i}@example.com,gold,note {i},A{i}\n" for i in range(10_000))
    path = write(tmp_path, "name,phone,email,tier,notes,account_id\n" + rows, "big.csv")
    with path.open(encoding="utf-8-sig", newline="") as source:
        started = time.perf_counter()
        report = import_customers(store, source, source_name="big.csv")
        seconds = time.perf_counter() - started
    yield BigImport(store, report, seconds)
    store.dispose()


def test_ten_thousand_rows_load(big_import: BigImport) -> None:
    assert (big_import.report.created, big_import.report.updated, big_import.report.errors) == (10_000, 0, [])
    last = customer(big_import.store, "+12125559999")
    assert last is not None and last.custom_fields == {"account_id": "A9999"}
