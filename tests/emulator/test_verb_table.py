"""The interpreter's verb table: every verb a kind of document may use must be a registered verb."""

from __future__ import annotations

import pytest

from voice.emulator.interpreter import DIAL_NOUNS, VERBS
from voice.emulator.runner import DocumentKind, DocumentRules, VerbTable


def test_the_tables_register_what_twilio_documents_use() -> None:
    assert set(VERBS.handlers) == {
        "Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Reject", "Record", "Enqueue", "Leave", "Dial"
    }  # fmt: skip
    assert VERBS.documents["call"].verbs == set(VERBS.handlers)
    assert set(DIAL_NOUNS) == {"Number", "Conference"}


def test_a_document_allowing_an_unregistered_verb_is_refused() -> None:
    documents = {**VERBS.documents, "whisper": DocumentRules(frozenset({"Say", "Dance"}), "this whisper document")}
    with pytest.raises(ValueError, match=r"whisper documents allow verbs the table does not register: \['Dance'\]"):
        VerbTable(VERBS.handlers, documents, VERBS.gather_children)


def test_a_gather_child_that_is_not_registered_is_refused() -> None:
    with pytest.raises(ValueError, match=r"<Gather> allow verbs the table does not register: \['Sing'\]"):
        VerbTable(VERBS.handlers, VERBS.documents, frozenset({"Say", "Sing"}))


def test_every_kind_of_document_needs_rules() -> None:
    documents: dict[DocumentKind, DocumentRules] = {
        kind: rules for kind, rules in VERBS.documents.items() if kind != "queue wait"
    }
    with pytest.raises(ValueError, match=r"no rules for \['queue wait'\] documents"):
        VerbTable(VERBS.handlers, documents, VERBS.gather_children)
