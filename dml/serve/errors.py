"""ApiError: what the service answers a request it refuses, as one line of JSON."""
from starlette.responses import JSONResponse


class ApiError(Exception):
    """A refusal: an HTTP status (4xx for the client's mistakes) and one line saying
    what is wrong and what to do."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def one_line(text):
    """A message as one line (newlines of a wrapped library message folded)."""
    return " ".join(str(text).split())


def error_response(status, message, headers=None):
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)
