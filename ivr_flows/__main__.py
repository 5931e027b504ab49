"""Check flow files before deploying them: ``python -m ivr_flows ivr_flows/*.yaml``.

Prints every problem as ``file:line:col node 'x': key 'y': message`` (the format editors and CI
annotate), or one ``ok`` line per valid flow; exits 1 if any file is broken.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivr_flows.loader import FlowError, load_flow


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m ivr_flows FLOW.yaml [FLOW.yaml ...]", file=sys.stderr)
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
