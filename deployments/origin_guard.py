"""Same-origin writes and known host names, in front of every route.

With no API key (the default), a page on another site could make a user's browser POST an
upload or a cancel to the app on their machine: multipart forms and body-less POSTs are
"simple" requests, sent without a CORS preflight. Browsers name the page such a request comes
from in `Origin`, so a write whose Origin is not the app's own is refused (clients that are
not browsers send no Origin and are not affected). A page may also rebind its own DNS name to
127.0.0.1 and so be "same-origin" with the app; the Host header it sends then names the
attacker's domain, so only the configured host names are answered at all.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from deployments.guards import send_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hostname(host: str) -> str:
    """`host[:port]` (IPv6 in brackets) -> the lower-case name without the port."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOriginGuard:
    def __init__(self, app, allowed_hosts: str):
        """`allowed_hosts`: comma-separated host names this app answers to; `*` for any."""
        self.app = app
        names = {name.strip() for name in allowed_hosts.split(",") if name.strip()}
        self.any_host = "*" in names
        self.allowed = {_hostname(name) for name in names}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.any_host and _hostname(host) not in self.allowed:
            return await send_error(send, 403, f"host {host!r} is not served here "
                                               "(see limits.allowed_hosts)")
        origin = headers.get("origin")
        if (scope["method"] not in SAFE_METHODS and origin is not None
                and urlsplit(origin).netloc.lower() != host.lower()):
            return await send_error(send, 403, f"cross-origin request from {origin!r} refused: "
                                               "writes come from this app's own pages")
        return await self.app(scope, receive, send)
