"""A receiver for the generic signed webhook: checks the signature as a receiver should, upserts on ``id``."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Request, Response

from crm_sync.sync.webhook import SIGNATURE_HEADER, verify
from tests.fakes.crm_server import FakeCrmServer, json_response


class WebhookReceiver(FakeCrmServer):
    def __init__(self, *, secret: str = "webhook-secret") -> None:
        super().__init__(token=secret)
        self.secret = secret
        self.records: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, int] = {}
        self.bad_signatures = 0

    def authorised(self, request: Request) -> bool:
        ok = verify(self.secret, request.get_data(), request.headers.get(SIGNATURE_HEADER, ""))
        if not ok:
            self.bad_signatures += 1
        return ok

    def unauthorised(self) -> Response:
        return json_response(401, {"error": "bad signature"})

    def failure_body(self, status: int) -> Any:
        return {"error": f"failure {status}"}

    def route(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        key = f"{body['type']}:{body['id']}"
        self.records[key] = body
        self.deliveries[key] = self.deliveries.get(key, 0) + 1
        return json_response(200, {"ok": True})
