"""Send one request body to TikTok's Events API; no retry and no verdict here."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import aiohttp

from forwarder.errors import TransportError
from forwarder.outcome import ApiResponse
from forwarder.tiktok.spec import TRACK_PATH

MAX_BODY_BYTES = 1_000_000  # TikTok's answers are tiny; anything longer is garbage


class TikTokClient:
    """POST event bodies over one long-lived aiohttp session.

    The token travels only in the ``Access-Token`` header (no ``Bearer``, §1) and never in an
    exception or a log line. A redirect is never followed: the POST, its token and its events
    would go to whatever origin the answer names, over plain http too. It comes back as an
    answer like any other (with the target's origin), and the caller pauses on it.
    """

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, token: str, timeout_s: float
    ) -> None:
        self._session = session
        self._url = api_url.rstrip("/") + TRACK_PATH
        self._token = token
        self._headers = {"Access-Token": token, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def set_token(self, token: str) -> bool:
        """Send *token* from the next request on; return whether it differs from the last one."""
        changed = token != self._token
        self._token = token
        # A new dict: a request being sent keeps the headers it started with.
        self._headers = {**self._headers, "Access-Token": token}
        return changed

    async def send(self, body: bytes) -> ApiResponse:
        """POST *body*; return TikTok's answer, or raise TransportError if none came."""
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                # Read to the end (an answer may arrive in several chunks), up to a cap.
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= MAX_BODY_BYTES:
                        break
                content = b"".join(chunks)
                location = None
                if 300 <= response.status <= 399:
                    location = self.origin(response.headers.get("Location"))
                return ApiResponse(
                    status=response.status,
                    body=content,
                    retry_after=response.headers.get("Retry-After"),
                    location=location,
                )
        except TimeoutError:
            raise TransportError(
                "timeout", "TikTok did not answer within the request timeout"
            ) from None
        except aiohttp.ClientConnectorError as error:
            # Name the host and the system's reason (a DNS failure, a refused connection): the
            # operator's first question; the URL's path and the token never appear.
            why = error.os_error.strerror or type(error.os_error).__name__
            raise TransportError(
                "connection", f"cannot connect to TikTok at {error.host}:{error.port}: {why}"
            ) from None
        except aiohttp.ClientError as error:
            raise TransportError(
                "connection", f"connection to TikTok failed: {type(error).__name__}"
            ) from None

    def origin(self, location: str | None) -> str:
        """Name where a redirect points: scheme, host and port only, never a path or a query
        (they may carry anything), and never the token, should the server have put it there."""
        if not location or not location.strip():
            return "no Location header"
        try:
            url = urlsplit(urljoin(self._url, location.strip()))
            host, port = url.hostname, url.port
        except ValueError:
            return "an unreadable Location header"
        if not host:
            return "a Location header without a host"
        host = f"[{host}]" if ":" in host else host
        origin = f"{url.scheme}://{host}" + (f":{port}" if port is not None else "")
        return origin.replace(self._token, "***") if self._token else origin
