"""PyTorch zip checkpoints (`torch.save`): <name>/data.pkl, a protocol 2 pickle, refers to
storages <name>/data/<key> by persistent id; each storage is read once, into an array of
its dtype, spent from the file's budget."""
import numpy as np

from .errors import Refused, show
from .limits import count
from .pickle_stream import Source
from .pickle_tree import run
from .pickle_values import Global, Storage, native, same
from .zip_archive import ZipArchive


def read_torch_zip(fd, size, budget, nonfinite_ids):
    archive = ZipArchive(fd, size)
    pickles = [name for name in archive.names() if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise Refused("a zip archive, but not a PyTorch checkpoint (no single <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    order = archive.read(prefix + "byteorder") if prefix + "byteorder" in archive.members else b"little"
    if order not in (b"little", b"big"):
        raise Refused(f"PyTorch byte order {show(order)}")
    storages = {}

    def storage(pid):
        if type(pid) is not tuple or len(pid) != 5 or not same(pid[0], "storage") or not isinstance(pid[1], Global) \
                or pid[1].kind != "storage" or type(pid[2]) is not str or type(pid[3]) is not str:
            raise Refused("a persistent id PyTorch never writes")
        dtype, key, numel = pid[1].dtype, pid[2], count(pid[4], "storage size")
        if key not in storages:
            storages[key] = Storage(read_storage(archive, f"{prefix}data/{key}", dtype, numel, order, budget))
        if storages[key].array.dtype != dtype or storages[key].array.size != numel:
            raise Refused(f"storage {show(key)} used with two dtypes or sizes")
        return storages[key]

    data = archive.read(prefix + "data.pkl")
    budget.spend(len(data))
    return run(Source(data=data), budget, storage=storage, nonfinite_ids=nonfinite_ids)


def read_storage(archive, name, dtype, numel, order, budget):
    stored = archive.size(name)
    if stored != numel * dtype.itemsize:
        key = name.rsplit("/", 1)[-1]
        raise Refused(f"storage {show(key)} has {stored} bytes, not {numel} x {dtype.itemsize}")
    budget.spend(stored)
    array = np.empty(numel, dtype.newbyteorder("<" if order == b"little" else ">"))
    archive.read_into(name, memoryview(array).cast("B"))
    return native(array)
