"""What the app says around a transfer (``phrases:``): in the caller's language, checked like any other text."""

from __future__ import annotations

from pathlib import Path

from ivr_flows import parse_flow
from ivr_flows.schema import BUILTIN_PHRASES
from tests.flows.test_lint import BASE, edited, lint_text

FRENCH = edited(
    "  es-MX: {voice: Polly.Mia}\n", "  es-MX: {voice: Polly.Mia}\n  fr-CA: {voice: Polly.Chantal}\n"
).replace('      es-MX: "Adiós de {company}."\n', '      es-MX: "Adiós de {company}."\n      fr-CA: "Au revoir."\n')

ALL_KEYS = ", ".join(BUILTIN_PHRASES)


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


def test_a_language_without_a_built_in_goodbye_needs_the_flows_own(tmp_path: Path) -> None:
    given = "\n".join(f'  {key}: {{fr-CA: "Un instant."}}' for key in BUILTIN_PHRASES)
    complete = FRENCH.replace("start: lang\n", f"phrases:\n{given}\nstart: lang\n")
    # Without `after:`, the transfer ends with the flow's goodbye, which has no built-in French.
    without_after = complete.replace("    kind: transfer\n    after: bye\n", "    kind: transfer\n")
    out_line = 1 + without_after.splitlines().index("  out:")  # the node's keys start on the next line
    assert lint_text(tmp_path, without_after) == [
        f"t.yaml:{out_line + 1}:5 error: node 'out': key 'after': if the rep hangs up first the caller hears the "
        "flow's goodbye, "
        "which is built in for English and Spanish only: set `after:` here, or a top-level `goodbye:` for each of "
        "en-US, es-MX, fr-CA",
    ]
    # English and Spanish alone need no goodbye of the flow's own.
    assert lint_text(tmp_path, BASE.replace("    kind: transfer\n    after: bye\n", "    kind: transfer\n")) == []
    goodbye = 'goodbye: {en-US: "Bye from {company}.", es-MX: "Adiós.", fr-CA: "Au revoir de {company}."}\n'
    with_goodbye = without_after.replace("start: lang\n", goodbye + "start: lang\n")
    assert lint_text(tmp_path, with_goodbye) == []
    assert parse_flow(with_goodbye, source="t.yaml").say_goodbye("fr-CA") == "Au revoir de Acme."


def test_config_yaml_words_are_for_english_callers_and_the_flows_own_win() -> None:
    flow = parse_flow(BASE, source="t.yaml")
    house = "Everyone is busy at {company} right now."
    assert flow.phrase("hold_intro", "en-US", configured=house) == "Everyone is busy at Acme right now."
    assert flow.phrase("hold_intro", "es-MX", configured=house).startswith("Todo nuestro equipo está atendiendo")
    own = parse_flow(
        BASE.replace("start: lang\n", 'phrases:\n  hold_intro: {en-US: "Hang on, please."}\nstart: lang\n'),
        source="t.yaml",
    )
    assert own.phrase("hold_intro", "en-US", configured=house) == "Hang on, please."
    assert flow.say_goodbye("es-MX") == "Gracias por llamar a Acme. Adiós."  # built in, no `goodbye:` here


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
