"""`warmline simulate` driven the way a person uses it: through a pseudo-terminal, typing at its prompts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[2]
WARMLINE = Path(sys.executable).parent / "warmline"


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    if not WARMLINE.exists():
        pytest.skip("the warmline command is installed by `make install` (pip install -e .)")
    env = {
        **os.environ,
        "WARMLINE_DATABASE_URL": f"sqlite:///{tmp_path}/simulate.sqlite3",
        "TWILIO_AUTH_TOKEN": "simulate-token",
        "WARMLINE_CONFIG": str(ROOT / "config.yaml"),
    }
    for command in (
        ["db", "upgrade"],
        ["crm", "import", "customers", str(ROOT / "crm_sync/demo/customers.csv")],
        ["reps", "import", str(ROOT / "crm_sync/demo/reps.csv"), "--status", "available"],
    ):
        subprocess.run([str(WARMLINE), *command], env=env, check=True, capture_output=True, cwd=ROOT)
    return env


def test_an_admin_calls_the_flow_from_the_terminal(environment: dict[str, str]) -> None:
    phone = pexpect.spawn(
        str(WARMLINE), ["simulate", "--mute"], env=environment, cwd=str(ROOT), encoding="utf-8", timeout=30
    )
    try:
        phone.expect_exact("[caller hears] Hi Jane, thanks for calling Acme.")
        phone.expect_exact("[caller hears] In a few words, what are you calling about?")
        phone.expect_exact("you")
        phone.sendline("I was charged twice on my card")
        phone.expect_exact("[caller hears] Connecting you to billing.")
        phone.expect_exact("[rep hears] Jane Doe, gold customer, calling about billing.")
        phone.expect_exact("How satisfied were you")
        phone.sendline("4")
        phone.expect_exact("-- call ended: completed")
        phone.expect_exact("department: billing")
        phone.expect_exact("outcome: answered")
        phone.expect(r"survey: \{'\w+': '4'\}")
        phone.expect(pexpect.EOF)
    finally:
        phone.close()
    assert phone.exitstatus == 0
