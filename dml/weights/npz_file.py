"""An .npz archive (`np.savez`) from an untrusted file, never `np.load`: a regular file, a
bounded zip (zip_archive), members NAME.npy whose headers numpy parses with its own bound
and whose arrays (a real number or bool dtype, a checked shape that fits the member
exactly) are read only when asked, after the caller has checked their shapes."""
import io
import os

import numpy as np

from .errors import Refused, naming_the_file, show
from .limits import MAX_FILE_BYTES, prod, shape
from .pickle_values import DTYPES
from .regular_file import open_regular
from .zip_archive import ZipArchive

_HEADER_BYTES = 10_000  # numpy's own bound of an .npy header
_NUMERIC = {(dtype.kind, dtype.itemsize) for dtype in DTYPES.values()}


class NpzFile:
    """members: {name: (dtype, shape)} of the archive `path`; read(name): that array.
    WeightsFileError (one line naming the file) when it is refused; FileNotFoundError
    when it does not exist."""

    def __init__(self, path, max_bytes=MAX_FILE_BYTES):
        self.path = path
        self.fd, size = self._refusing(open_regular, path, max_bytes)
        try:
            self.archive = self._refusing(ZipArchive, self.fd, size)
            self.headers = self._refusing(self._read_headers)
        except BaseException:
            self.close()
            raise
        self.members = {name: (dtype, dims) for name, (dtype, dims, _) in self.headers.items()}

    def _refusing(self, func, *args):
        return naming_the_file(self.path, func, *args, what="array archive")

    def _read_headers(self):
        headers = {}
        for member in self.archive.names():
            if not member.endswith(".npy") or "/" in member:
                raise Refused(f"a member {show(member)} that is not an array (np.savez writes NAME.npy)")
            headers[member[:-4]] = _npy_header(member, self.archive.peek(member, _HEADER_BYTES + 12),
                                               self.archive.size(member))
        return headers

    def read(self, name):
        """The array of member `name` (as np.load gives it, in the machine's byte order)."""
        dtype, dims, offset = self.headers[name]
        array = np.empty(prod(dims), dtype)
        head = bytearray(offset)
        self._refusing(self.archive.read_into, name + ".npy", memoryview(head), memoryview(array).cast("B"))
        return array.reshape(dims).astype(dtype.newbyteorder("="), copy=False)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _npy_header(member, head, size):
    """(dtype, shape, data offset) of the .npy member whose first bytes are `head`."""
    stream = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            dims, fortran, dtype = np.lib.format.read_array_header_1_0(stream, _HEADER_BYTES)
        elif version == (2, 0):
            dims, fortran, dtype = np.lib.format.read_array_header_2_0(stream, _HEADER_BYTES)
        else:
            raise ValueError(f"format version {version}, not one np.save writes")
    except Exception as err:  # numpy raises several types on a damaged header
        raise Refused(f"{show(member)} has no .npy header numpy reads ({show(err)})") from None
    if (dtype.kind, dtype.itemsize) not in _NUMERIC or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(f"{show(member)} holds {show(dtype)} values; only real numbers and bool are read")
    dims = shape(dims)
    if fortran and len(dims) > 1:
        raise Refused(f"{show(member)} holds a Fortran-ordered array (np.savez writes C order)")
    offset = stream.tell()
    if offset + prod(dims) * dtype.itemsize != size:
        raise Refused(f"{show(member)} of {size} bytes does not hold a {dtype.name} array of shape {dims}")
    return dtype, dims, offset
