"""Reading TwiML in tests: parse the XML (never compare strings) and pick verbs out of it."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def parse_twiml(body: bytes | str) -> ET.Element:
    root = ET.fromstring(body)
    assert root.tag == "Response", f"TwiML root must be <Response>, got <{root.tag}>"
    return root


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def said(root: ET.Element) -> list[str]:
    """Every <Say> text, including those nested in <Gather>, in document order."""
    return [element.text or "" for element in root.iter("Say")]
