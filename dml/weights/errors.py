"""The errors of reading an untrusted file, and how an internal refusal becomes one line
naming the file."""
import gc

from dml.errors import UserError


class WeightsFileError(UserError):
    """A weights file that cannot be read or is refused; the message is one line."""


class CodeInWeightsError(WeightsFileError):
    """The file names a callable that no weights file needs, as a file that runs code does."""


class Refused(ValueError):
    """Why a file's bytes are refused, without the file's name (the caller adds it)."""


class CodeRefused(Refused):
    """The file names a global outside the fixed rebuild paths."""


def show(text, limit=80):
    """`text` safe to put in a one-line message."""
    text = str(text)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def naming_the_file(name, func, *args, what="weights file"):
    """func(*args), its refusals raised as WeightsFileError naming `name` (a `what`)."""
    collecting = gc.isenabled()
    gc.disable()  # a parse makes thousands of acyclic objects: no collector passes over the whole heap
    try:
        return func(*args)
    except CodeRefused as err:
        raise CodeInWeightsError(
            f"refusing to load {show(name, 300)}: it asks to call {show(err)}, which no weights file needs "
            f"(a file that runs code when loaded); nothing of it was executed") from None
    except Refused as err:
        raise WeightsFileError(f"cannot read {what} {show(name, 300)}: {err}") from None
    finally:
        if collecting:
            gc.enable()
