"""The members of an untrusted zip archive (a PyTorch checkpoint, an .npz), read with bounds.

zipfile reads the central directory; then every member's bytes, from its local header to
the end of its data, must lie inside the file and apart from every other member's, so the
members together hold at most the file's bytes (overlapping members are the zip bomb that
makes a small file declare gigabytes). Only stored (uncompressed), unencrypted members are
read, their CRC checked, straight into the caller's buffer.
"""
import io
import struct
import zipfile
import zlib

from .errors import Refused, show
from .regular_file import pread, pread_into

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_CRC_PIECE = 1 << 24


class ZipArchive:
    """The members of the zip archive in the open file `fd` of `size` bytes."""

    def __init__(self, fd, size):
        self.fd = fd
        try:
            infos = zipfile.ZipFile(io.FileIO(fd, closefd=False)).infolist()
        except Exception as err:  # zipfile raises many types on damaged archives
            raise Refused(f"a damaged zip archive ({show(err)})") from None
        self.members = {}
        for info in infos:
            if info.filename in self.members:
                raise Refused(f"a zip archive that holds {show(info.filename)} twice")
            self.members[info.filename] = (info, self._data_start(info, size))
        spans = sorted((info.header_offset, start + info.compress_size, info.filename)
                       for info, start in self.members.values())
        for (_, end, name), (begin, _, following) in zip(spans, spans[1:]):
            if end > begin:
                raise Refused(f"zip members {show(name)} and {show(following)} overlap (a zip bomb)")

    def _data_start(self, info, size):
        begin = info.header_offset
        if begin + _LOCAL_HEADER.size > size:
            raise Refused(f"zip member {show(info.filename)} starts past the end of the file")
        signature, name_size, extra_size = _LOCAL_HEADER.unpack(pread(self.fd, begin, _LOCAL_HEADER.size))
        start = begin + _LOCAL_HEADER.size + name_size + extra_size
        if signature != b"PK\x03\x04" or start + info.compress_size > size:
            raise Refused(f"zip member {show(info.filename)} does not lie inside the file")
        return start

    def names(self):
        return list(self.members)

    def size(self, name):
        """The bytes of member `name` (stored: as many as it takes in the file)."""
        return self._stored(name).file_size

    def peek(self, name, size):
        """The first `size` bytes (at most) of member `name`, unchecked (a header to parse)."""
        info = self._stored(name)
        return pread(self.fd, self.members[name][1], min(size, info.file_size))

    def read_into(self, name, *outs):
        """Fill the writable byte views `outs`, in order, with member `name` (as many bytes
        as it holds in all), its CRC checked."""
        info = self._stored(name)
        if sum(len(out) for out in outs) != info.file_size:
            raise Refused(f"zip member {show(name)} holds {info.file_size} bytes, not the "
                          f"{sum(len(out) for out in outs)} read")
        offset, crc = self.members[name][1], 0
        for out in outs:
            pread_into(self.fd, offset, out)
            offset += len(out)
            for begin in range(0, len(out), _CRC_PIECE):
                crc = zlib.crc32(out[begin:begin + _CRC_PIECE], crc)
        if crc != info.CRC:
            raise Refused(f"zip member {show(name)} is damaged (its CRC does not match)")

    def read(self, name):
        out = bytearray(self.size(name))
        self.read_into(name, memoryview(out))
        return bytes(out)

    def _stored(self, name):
        if name not in self.members:
            raise Refused(f"the zip archive lacks {show(name)}")
        info = self.members[name][0]
        if info.flag_bits & 1:
            raise Refused(f"zip member {show(name)} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise Refused(f"zip member {show(name)} is compressed or larger than the file "
                          f"(only stored members are read)")
        return info
