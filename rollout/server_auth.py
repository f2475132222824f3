"""A shared-secret guard for the vLLM servers groupwise starts (loaded with vLLM's ``--middleware``).

With ``VLLM_SERVER_DEV_MODE=1`` a vLLM server exposes ``/pause``, ``/collective_rpc``, ``/update_weights`` and
the other RL routes: whoever reaches the port can replace the weights. vLLM's ``--api-key`` guards only paths
under ``/v1``, ``/v2``, ``/inference`` and ``/cohere`` (``vllm/entrypoints/serve/middleware/authenticate.py``),
so those routes stay open. This middleware guards **every** path but ``/health`` when the environment variable
``GROUPWISE_SERVER_SECRET`` is set in the server's environment: a request must carry
``Authorization: Bearer <secret>``, else it gets 401 before any route runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SECRET_ENV = "GROUPWISE_SERVER_SECRET"
OPEN_PATHS = ("/health",)  # liveness only: no state, no weights


class SharedSecretGuard:
    """Pure ASGI middleware: 401 for any HTTP or websocket request without the shared secret."""

    def __init__(self, app) -> None:
        self.app = app
        secret = os.environ.get(SECRET_ENV, "")
        self.digest = hashlib.sha256(secret.encode()).digest() if secret else None

    def _allowed(self, scope) -> bool:
        if self.digest is None or scope.get("path", "") in OPEN_PATHS:
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self.digest)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b'{"error": "unauthorized: this groupwise server requires its shared secret"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
