"""Check flow files before deploying them: ``python -m ivr_flows ivr_flows/*.yaml``.

Prints every error as ``file:line:col node 'x': key 'y': message`` (the format editors and CI
annotate), or one ``ok`` line per valid flow; exits 1 if any file is broken.

``python -m ivr_flows lint …`` and ``python -m ivr_flows graph …`` are the ``warmline flows``
commands (see :mod:`ivr_flows.cli`), for machines without the webhook app installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivr_flows.loader import FlowError, load_flow


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if paths and paths[0] in ("lint", "graph"):
        from ivr_flows.cli import flows

        try:
            flows.main(paths, prog_name="python -m ivr_flows")
        except SystemExit as exc:  # click always exits; hand the status back to the caller
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        return 0
    if not paths:
        print(
            "usage: python -m ivr_flows FLOW.yaml [FLOW.yaml ...]  |  lint [PATH ...]  |  graph FLOW -o OUT",
            file=sys.stderr,
        )
        return 2
    status = 0
    for path in paths:
        try:
            flow = load_flow(path)
        except FlowError as exc:
            print(exc, file=sys.stderr)
            status = 1
        except OSError as exc:
            print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
        else:
            print(f"ok {path}: flow {flow.name!r} version {flow.version}, {len(flow.nodes)} nodes")
    return status


if __name__ == "__main__":
    sys.exit(main())
