"""The client side of the first admin token: an httpx auth that sends the token that
`radbridge run` wrote to `<data dir>/admin-token`, for the programs that start a node
and then talk to it (the demo, the end-to-end tests).

The file is read when a request goes out, not when the client is made: the node
writes it on its first start, after its client may already exist.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from pathlib import Path

import httpx

from radbridge.interfaces.auth.bootstrap import ADMIN_TOKEN_FILE


class AdminTokenAuth(httpx.Auth):
    """Bearer auth with the first admin token found in `files()`; none sent while none is."""

    def __init__(self, files: Callable[[], Iterable[Path]]) -> None:
        self.files = files

    @classmethod
    def of(cls, data_dir: Path) -> AdminTokenAuth:
        """The token of the node whose data directory is `data_dir`."""
        return cls(lambda: [data_dir / ADMIN_TOKEN_FILE])

    def token(self) -> str | None:
        for path in self.files():
            try:
                return path.read_text(encoding="ascii").strip() or None
            except FileNotFoundError:
                continue
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request
