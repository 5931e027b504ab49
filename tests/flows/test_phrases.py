"""What the app says around a transfer (``phrases:``): in the caller's language, checked like any other text."""

from __future__ import annotations

from pathlib import Path

from ivr_flows import parse_flow
from tests.flows.test_lint import BASE, edited, lint_text

FRENCH = edited(
    "  es-MX: {voice: Polly.Mia}\n", "  es-MX: {voice: Polly.Mia}\n  fr-CA: {voice: Polly.Chantal}\n"
).replace('      es-MX: "Adiós de {company}."\n', '      es-MX: "Adiós de {company}."\n      fr-CA: "Au revoir."\n')

ALL_KEYS = (
    "connecting, nobody_can_take, nobody_left, callback_offer, long_wait_offer, long_wait_message_only, "
    "callback_booked, key_not_understood, connecting_after_wait, sorry_to_keep_you"
)


def test_built_in_phrases_speak_the_callers_language_by_its_primary_subtag() -> None:
    flow = parse_flow(BASE, source="t.yaml")
    assert flow.phrase("connecting", "en-US", department="billing") == "Connecting you to billing."
    assert flow.phrase("connecting", "es-MX", department="facturación") == "Le comunicamos con facturación."
    assert flow.phrase("callback_booked", "es-MX", number_ending="0 0 0 1").startswith(
        "Gracias. Le llamaremos al número que termina en 0 0 0 1"
    )
    assert flow.phrase("callback_offer") == "Press 1 and we'll call you back — you keep your place in line."


def test_a_flow_replaces_a_phrase_for_one_language_and_keeps_the_rest_built_in() -> None:
    text = BASE.replace(
        "start: lang\n",
        'phrases:\n  connecting: {en-US: "Putting you through to {department} at {company}."}\nstart: lang\n',
    )
    flow = parse_flow(text, source="t.yaml")
    assert flow.phrase("connecting", "en-US", department="billing") == "Putting you through to billing at Acme."
    assert flow.phrase("connecting", "es-MX", department="facturación") == "Le comunicamos con facturación."
    assert flow.phrase("sorry_to_keep_you", "es-MX") == "Disculpe la espera."


def test_a_language_without_built_in_phrases_must_have_them_if_callers_can_be_transferred(tmp_path: Path) -> None:
    assert lint_text(tmp_path, FRENCH) == [
        "t.yaml:5:3 error: key 'languages.fr-CA': callers speaking 'fr-CA' can be transferred, but the app's own "
        "phrases around a transfer are built in for English and Spanish only; give them in 'fr-CA' under "
        f"`phrases:`: {ALL_KEYS}",
    ]
    given = "\n".join(f'  {key}: {{fr-CA: "Un instant."}}' for key in ALL_KEYS.split(", "))
    assert lint_text(tmp_path, FRENCH.replace("start: lang\n", f"phrases:\n{given}\nstart: lang\n")) == []
    # Without a transfer the app never speaks these: nothing to give.
    no_transfer = FRENCH.replace("    next: out\n  out:\n    kind: transfer\n    after: bye\n", "    next: bye\n")
    assert lint_text(tmp_path, no_transfer) == []


def test_phrase_templates_and_languages_are_checked_with_file_line_and_column(tmp_path: Path) -> None:
    text = BASE.replace(
        "start: lang\n",
        "phrases:\n"
        '  callback_offer: "Press 1, {first_name}."\n'
        '  callback_booked: {en-US: "We will call {number_endng}.", fr-FR: "Bientôt."}\n'
        "start: lang\n",
    )
    assert lint_text(tmp_path, text) == [
        "t.yaml:6:19 error: key 'phrases.callback_offer': {first_name} can only be used in a say node's "
        "known_caller_text, or in texts reached only after a branch rule with `known: true`; allowed here: {company}",
        "t.yaml:7:28 error: key 'phrases.callback_booked.en-US': unknown template variable {number_endng} "
        "(did you mean 'number_ending'?); allowed here: {company}, {number_ending}",
        "t.yaml:7:60 error: key 'phrases.callback_booked.fr-FR': language 'fr-FR' is not declared; "
        "declared languages: en-US, es-MX (add it under `languages:`)",
    ]


def test_an_unknown_phrase_is_a_typo_not_a_new_phrase(tmp_path: Path) -> None:
    text = BASE.replace("start: lang\n", 'phrases:\n  conecting: "Hold on."\nstart: lang\n')
    [issue] = lint_text(tmp_path, text)
    assert issue.startswith("t.yaml:6:3 error: key 'phrases.conecting': unknown key (did you mean 'connecting'?)")
