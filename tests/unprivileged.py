"""Running part of a test as an unprivileged user: root reads and writes any file whatever its mode says, so a
fault made with file modes (a directory that cannot be read, a database file that cannot be written) only shows
for someone else."""

from __future__ import annotations

import json
import os
import pwd
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def in_child_as_nobody(prepare: Callable[[], T], work: Callable[[T], object]) -> Any:
    """``work(prepare())`` in a forked child, ``work`` after giving up root (root may read any directory, whatever
    its mode says); what ``work`` returns comes back as JSON. ``prepare`` runs first, as the test's own user:
    modules load from root's home, which nobody else can read (nor can they run its interpreter)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(reader)
            prepared = prepare()
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            with os.fdopen(writer, "w") as out:
                out.write(json.dumps(work(prepared)))
            code = 0
        except BaseException:
            traceback.print_exc()  # the child's own failure, on the test's captured stderr
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as answer:
        result = answer.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and result, "the child failed"
    return json.loads(result)



def hand_to_nobody(*paths: Path) -> None:
    """Make the unprivileged child the owner of ``paths`` (when the tests run as root)."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in paths:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
