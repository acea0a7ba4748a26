"""Limits every request meets before the endpoints see it (ASGI middleware):

    BodyLimit   at most max_bytes of body: a larger Content-Length is refused before
                reading, and a body sent without one is counted as it arrives
    TimeLimit   an answer within `seconds`, else 503 (writes are exempt: they check
                their own deadline before committing, so a timed-out write changed nothing)

The pixel limit of images is checked where images are opened (images.py), the number
of images where the body is parsed (inputs.py).
"""
import asyncio

from .errors import ApiError, error_response


class BodyLimit:
    def __init__(self, app, max_bytes):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self):
        return f"the request body is over the limit of {self.max_bytes} bytes (--max_upload_mb)"

    async def _refuse(self, scope, receive, send):
        await error_response(413, self._message(), {"Connection": "close"})(scope, receive, send)


class TimeLimit:
    def __init__(self, app, seconds, exempt=()):
        self.app = app
        self.seconds = seconds
        self.exempt = set(exempt)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracked), self.seconds)
        except asyncio.TimeoutError:
            if not started:
                await error_response(503, f"the request took longer than {self.seconds:g} s (--request_timeout): "
                                          f"send fewer or smaller images, or try again")(scope, receive, send)
