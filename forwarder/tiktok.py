"""Send one request body to TikTok's Events API; no retry and no verdict here."""

from __future__ import annotations

import aiohttp

from forwarder.classify import ApiResponse
from forwarder.errors import TransportError

#: tiktok-events-api.md §1: the consolidated Events API 2.0 endpoint (S1, S3, S4, S5).
TRACK_PATH = "/open_api/v1.3/event/track/"
MAX_BODY_BYTES = 1_000_000  # TikTok's answers are tiny; anything longer is garbage


class TikTokClient:
    """POST event bodies over one long-lived aiohttp session.

    The token travels only in the ``Access-Token`` header (no ``Bearer``, §1) and never in an
    exception or a log line.
    """

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, token: str, timeout_s: float
    ) -> None:
        self._session = session
        self._url = api_url.rstrip("/") + TRACK_PATH
        self._headers = {"Access-Token": token, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, body: bytes) -> ApiResponse:
        """POST *body*; return TikTok's answer, or raise TransportError if none came."""
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as response:
                # Read to the end (an answer may arrive in several chunks), up to a cap.
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= MAX_BODY_BYTES:
                        break
                content = b"".join(chunks)
                return ApiResponse(
                    status=response.status,
                    body=content,
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            raise TransportError(
                "timeout", "TikTok did not answer within the request timeout"
            ) from None
        except aiohttp.ClientError as error:
            raise TransportError(
                "connection", f"connection to TikTok failed: {type(error).__name__}"
            ) from None
