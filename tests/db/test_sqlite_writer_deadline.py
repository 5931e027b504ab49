"""Another program holding SQLite's write lock for longer than Twilio waits (issue 16): every webhook still answers
within the store's budget, with fallback TwiML, however many wait at once, and once writers have run out of their
budget the next ones fall back at once.

Before, writers queued on a blocking flock with no deadline: behind a program holding the flock they waited for as
long as it held it, and behind one holding SQLite's own lock each writer in the queue waited for the busy timeouts of
all those ahead of it (5 s, 10 s, 15 s, ...). Twilio gives up after 15 s and the caller hears "an application error".
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask

from crm_sync.sqlite import BUSY_TIMEOUT_MS, STUCK_LOCK_BUDGET_MS, writer_lock_path
from tests.conftest import app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, verbs
from voice import create_app

#: Webhooks waiting at once for the lock: two gunicorn workers' worth and more.
WAITING = 4
#: What one webhook may take with the lock held elsewhere: the store's budget and the fallback's own quick read.
ANSWERED_WITHIN = BUSY_TIMEOUT_MS / 1000 + 2.5
#: Seconds Twilio waits for a webhook's answer.
TWILIO_GIVES_UP = 15

#: Another program holding the writers' flock (a process of another server on the same file), or SQLite's own write
#: lock without the flock (the sqlite3 shell, a backup tool): it prints "held" and keeps the lock until stdin closes.
HOLDERS = {
    "the writers' flock": (
        "import fcntl, sys\n"
        "handle = open(sys.argv[1] + '.writer-lock', 'a+b')\n"
        "fcntl.flock(handle.fileno(), fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    ),
    "SQLite's write lock": (
        "import sqlite3, sys\n"
        "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "connection.execute('BEGIN IMMEDIATE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
        "connection.execute('ROLLBACK')\n"
    ),
}


@pytest.mark.parametrize("held", sorted(HOLDERS))
def test_webhooks_answer_with_the_fallback_within_the_budget_while_another_program_holds_the_lock(
    tmp_path: Path, sqlite_template: Path, held: str
) -> None:
    database = tmp_path / "warmline.sqlite3"
    database.write_bytes(sqlite_template.read_bytes())
    assert writer_lock_path(f"sqlite:///{database}") == Path(f"{database}.writer-lock")
    app: Flask = create_app(
        app_config(f"sqlite:///{database}", tmp_path / "instance", fallback={"number": "+15550004444"}),
        background=False,
    )
    seed_demo(app.extensions["warmline"].store)

    def call(number: int) -> tuple[float, int, list[str]]:
        started = time.monotonic()
        form = {"CallSid": f"CA{number:032d}", "From": "+15551230001", "To": "+15550009999"}
        response = signed_post(app.test_client(), "/voice/incoming", form)
        return time.monotonic() - started, response.status_code, verbs(parse_twiml(response.data))

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDERS[held], str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None
    # Past Twilio's 15 s the lock is given up whatever happened: a webhook still waiting then fails the test rather
    # than hang it.
    release = threading.Timer(TWILIO_GIVES_UP, holder.stdin.close)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        release.start()
        with ThreadPoolExecutor(WAITING) as pool:
            answers = list(pool.map(call, range(WAITING)))
        # Writers ran out of their budget: the lock is stuck, and the next webhooks fall back at once rather than
        # wait five seconds each (two workers would soon queue requests past Twilio's timeout behind them).
        later = [call(number) for number in range(WAITING, WAITING + 3)]
    finally:
        release.cancel()
        if not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(timeout=10)
    for took, status, answer in answers:
        assert status == 200 and "Dial" in answer, answer  # the apology, then the fallback number
        assert took < ANSWERED_WITHIN, [round(took, 1) for took, _, _ in answers]
    for took, status, answer in later:
        assert status == 200 and "Dial" in answer and took < STUCK_LOCK_BUDGET_MS / 1000 + 2, (took, answer)
    # The lock is free again: the next call is served as usual, at once.
    took, status, answer = call(WAITING + 3)
    assert (status, answer) == (200, ["Say", "Gather", "Redirect"]) and took < 2
    app.extensions["warmline"].close()
