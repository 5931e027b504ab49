"""Logging with phone numbers masked: a caller's number never reaches a log file in full."""

from __future__ import annotations

import logging

from crm_sync.phones import mask_phones_in


class PhoneMaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    for handler in root.handlers:
        if not any(isinstance(existing, PhoneMaskingFilter) for existing in handler.filters):
            handler.addFilter(PhoneMaskingFilter())
    logging.getLogger("voice").setLevel(level)
    logging.getLogger("crm_sync").setLevel(level)
