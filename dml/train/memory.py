"""Cross-batch memory (XBM, Wang et al., "Cross-Batch Memory for Embedding Learning",
CVPR 2020): the last `size` embeddings of training, so a pair loss can compare each
batch with many more examples than the batch holds.

The memory keeps unit-length, detached embeddings and their labels in a ring buffer.
Each rank of a distributed run keeps its own; checkpoints save every rank's, so a
resumed run continues with exactly the memory it had.
"""
import numpy as np
import paddle

from dml.losses.normalize import l2_normalize
from dml.weights.npz_file import NpzFile


class CrossBatchMemory:
    """A FIFO of the last `size` (embedding, label) rows of dimension `dim`."""

    def __init__(self, size, dim):
        self.size, self.dim = size, dim
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
        """Add a batch (normalised and detached here), overwriting the oldest rows."""
        rows = l2_normalize(embeddings.detach().astype("float32"))
        labels = paddle.reshape(labels, [-1]).astype("int64")
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


def gathered_state(memory, nranks):
    """Every rank's memory state stacked along a new first axis (a collective: call
    it on every rank); the state of this process alone when there is one rank."""
    own = memory.state()
    if nranks <= 1:
        return {key: value[None] for key, value in own.items()}
    stacked = {}
    for key, value in own.items():
        parts = []
        paddle.distributed.all_gather(parts, paddle.to_tensor(value))
        stacked[key] = np.stack([part.numpy() for part in parts])
    return stacked


def rank_state(stacked, rank, nranks):
    """This rank's share of a gathered state; ValueError when the rank counts differ."""
    _check_ranks(stacked["embeddings"].shape[0], nranks)
    return {key: value[rank] for key, value in stacked.items()}


def _check_ranks(saved_ranks, nranks):
    if saved_ranks != nranks:
        raise ValueError(f"the checkpoint's cross-batch memory was saved by {saved_ranks} ranks, "
                         f"not {nranks}")


def read_saved(path, size, dim, rank, nranks):
    """This rank's state from a checkpoint's memory.npz (what gathered_state saved), read
    by the bounded parser, never np.load: the members' dtypes and shapes are checked
    against --xbm_size, the embedding width and the rank count before any array is read.
    ValueError saying what does not fit; WeightsFileError for a damaged file."""
    expected = {"embeddings": (np.float32, (nranks, size, dim)), "labels": (np.int64, (nranks, size)),
                "position": (np.int64, (nranks, 2))}
    with NpzFile(path) as saved:
        if sorted(saved.members) != sorted(expected):
            raise ValueError(f"it holds {sorted(saved.members)[:5]}, not {sorted(expected)}")
        for name, (dtype, shape) in expected.items():
            got_dtype, got_shape = saved.members[name]
            if len(got_shape) == len(shape) and got_shape[1:] == shape[1:]:
                _check_ranks(got_shape[0], nranks)
            if got_dtype != dtype or got_shape != shape:
                raise ValueError(f"{name} is {got_dtype} {got_shape}, not {np.dtype(dtype)} {shape} "
                                 f"(--xbm_size={size} x {dim} per rank)")
        state = rank_state({name: saved.read(name) for name in expected}, rank, nranks)
    head, filled = (int(v) for v in state["position"])
    if not (0 <= head < size and 0 <= filled <= size) or not np.isfinite(state["embeddings"]).all():
        raise ValueError(f"its position {[head, filled]} or embeddings are not a memory of {size} rows")
    return state
