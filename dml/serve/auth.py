"""Bearer keys: writes need --api_key_file's key; reads need --read_key_file's (or the
write key) when one is given. Keys are compared in constant time (hmac.compare_digest)."""
import hmac
import os
import stat

from dml.errors import UserError

from .errors import ApiError

MIN_KEY_CHARS = 16
_KEY_FILE_BYTES = 4096
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def read_key_file(path, flag):
    """The key a file holds (its first line, stripped), as bytes."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise UserError(f"{flag} {path!r}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > _KEY_FILE_BYTES:
        raise UserError(f"{flag} {path!r} must be a regular file of at most {_KEY_FILE_BYTES} bytes holding one key")
    with open(path, "rb") as handle:
        key = handle.read().split(b"\n", 1)[0].strip()
    if len(key) < MIN_KEY_CHARS:
        raise UserError(f"{flag} {path!r}: the key must be at least {MIN_KEY_CHARS} characters on the first line "
                        f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > {path})")
    return key


def bearer_token(headers):
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def matches(token, key):
    return token is not None and key is not None and hmac.compare_digest(token, key)


class Keys:
    """The service's keys; require_read / require_write raise ApiError (401, 403)."""

    def __init__(self, write_key=None, read_key=None):
        self.write_key = write_key
        self.read_key = read_key

    @property
    def reads_open(self):
        return self.read_key is None

    def require_read(self, headers):
        if self.reads_open:
            return
        token = self._token(headers, "reading needs the read key (or the write key)")
        if not (matches(token, self.read_key) or matches(token, self.write_key)):
            raise ApiError(401, "wrong key", _CHALLENGE)

    def require_write(self, headers):
        if self.write_key is None:
            raise ApiError(403, "this service takes no changes: start it with --api_key_file to allow /add and "
                                "/remove")
        token = self._token(headers, "changing the index needs the write key (--api_key_file)")
        if not matches(token, self.write_key):
            raise ApiError(401, "wrong key", _CHALLENGE)

    @staticmethod
    def _token(headers, need):
        token = bearer_token(headers)
        if token is None:
            raise ApiError(401, f"{need}: send the header `Authorization: Bearer KEY`", _CHALLENGE)
        return token
