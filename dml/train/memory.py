"""Cross-batch memory (XBM, Wang et al., "Cross-Batch Memory for Embedding Learning",
CVPR 2020): the last `size` embeddings of training, so a pair loss can compare each
batch with many more examples than the batch holds.

The memory keeps unit-length, detached embeddings and their labels in a ring buffer.
Under several ranks every rank pushes the whole global batch (each rank's rows
gathered in rank order, the paper's setup), so all ranks hold the same memory: one
process with the same global batch would push the same rows in the same order. A
checkpoint saves that one memory, so a resumed run continues with exactly the memory
it had. Checkpoints of earlier versions saved one memory per rank (a leading rank
axis): one rank's is read, several are refused.
"""
import numpy as np
import paddle

from dml.losses.normalize import l2_normalize
from dml.weights.npz_file import NpzFile


class CrossBatchMemory:
    """A FIFO of the last `size` (embedding, label) rows of dimension `dim`, fed by
    `nranks` ranks."""

    def __init__(self, size, dim, nranks=1):
        self.size, self.dim, self.nranks = size, dim, nranks
        self.embeddings = paddle.zeros([size, dim], dtype="float32")
        self.labels = paddle.full([size], -1, dtype="int64")
        self.head = 0  # the row the next push writes first
        self.filled = 0

    def view(self):
        """(embeddings [filled, dim], labels [filled]) in storage order, or None when empty."""
        if not self.filled:
            return None
        return self.embeddings[:self.filled], self.labels[:self.filled]

    @paddle.no_grad()
    def push(self, embeddings, labels):
        """Add this rank's share of a global batch (normalised and detached here) and,
        under several ranks, every other rank's (a collective), overwriting the oldest
        rows. Nothing is read back to the host."""
        rows = l2_normalize(embeddings.detach().astype("float32"))
        labels = paddle.reshape(labels, [-1]).astype("int64")
        if self.nranks > 1:
            rows, labels = _every_ranks(rows), _every_ranks(labels)
        count = rows.shape[0]
        if count >= self.size:
            rows, labels, count = rows[-self.size:], labels[-self.size:], self.size
        # out of place: the previous tensors may still be needed by this step's backward pass
        index = (paddle.arange(count, dtype="int64") + self.head) % self.size  # made on the device
        self.embeddings = paddle.scatter(self.embeddings, index, rows, overwrite=True)
        self.labels = paddle.scatter(self.labels, index, labels, overwrite=True)
        self.head = (self.head + count) % self.size
        self.filled = min(self.size, self.filled + count)

    def state(self):
        """Everything needed to continue exactly: numpy arrays."""
        return {"embeddings": self.embeddings.numpy(), "labels": self.labels.numpy(),
                "position": np.array([self.head, self.filled], dtype=np.int64)}

    def load(self, state):
        if state["embeddings"].shape != (self.size, self.dim):
            raise ValueError(f"memory of shape {state['embeddings'].shape} does not fit "
                             f"--xbm_size={self.size} x {self.dim}")
        self.embeddings = paddle.to_tensor(np.asarray(state["embeddings"], dtype=np.float32))
        self.labels = paddle.to_tensor(np.asarray(state["labels"], dtype=np.int64))
        self.head, self.filled = (int(v) for v in state["position"])


def _every_ranks(tensor):
    """Every rank's `tensor` (all the same shape) concatenated in rank order."""
    parts = []
    paddle.distributed.all_gather(parts, tensor)
    return paddle.concat(parts)


def read_saved(path, size, dim):
    """The memory state in a checkpoint's memory.npz, read by the bounded parser, never
    np.load: the members' dtypes and shapes are checked against --xbm_size and the
    embedding width before any array is read. A file of an earlier version holding one
    memory per rank is read when it holds one, refused when several. ValueError saying
    what does not fit; WeightsFileError for a damaged file."""
    expected = {"embeddings": (np.float32, (size, dim)), "labels": (np.int64, (size,)), "position": (np.int64, (2,))}
    with NpzFile(path) as saved:
        if sorted(saved.members) != sorted(expected):
            raise ValueError(f"it holds {sorted(saved.members)[:5]}, not {sorted(expected)}")
        per_rank = _per_rank_memories(saved.members, expected)
        for name, (dtype, shape) in expected.items():
            got_dtype, got_shape = saved.members[name]
            if got_dtype != dtype or got_shape != (1,) * per_rank + shape:
                raise ValueError(f"{name} is {got_dtype} {got_shape}, not {np.dtype(dtype)} {shape} "
                                 f"(--xbm_size={size} x {dim})")
        state = {name: saved.read(name).reshape(shape) for name, (_, shape) in expected.items()}
    head, filled = (int(v) for v in state["position"])
    if not (0 <= head < size and 0 <= filled <= size) or not np.isfinite(state["embeddings"]).all():
        raise ValueError(f"its position {[head, filled]} or embeddings are not a memory of {size} rows")
    return state


def _per_rank_memories(members, expected):
    """1 when the file has the earlier versions' leading rank axis (holding one memory),
    else 0; ValueError when it holds the memories of several ranks."""
    shape = members["embeddings"][1]
    if len(shape) != len(expected["embeddings"][1]) + 1:
        return 0
    if shape[0] != 1:
        raise ValueError(f"it holds {shape[0]} memories, one per rank, as versions before the shared memory "
                         f"saved them: they cannot be resumed as one; start a new run from it with "
                         f"--pretrained_model")
    return 1
