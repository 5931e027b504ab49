"""Python runs this at start-up in every process whose PYTHONPATH holds this folder: ``bench/webhook.py --trace``
puts it there for its servers, so that bench/tail_probe.py records in each of their processes (gunicorn's master,
its workers, and any process they start, such as a housekeeping process) from its first line on."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "warmline_tail_probe", Path(__file__).resolve().parent.parent / "tail_probe.py"
)
if _spec is not None and _spec.loader is not None:
    _probe = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _probe  # dataclasses look their module up while the class is made
    _spec.loader.exec_module(_probe)
    _probe.install()
