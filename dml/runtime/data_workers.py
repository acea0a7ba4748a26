"""DataLoader worker processes: how many, how they pass batches, how they take signals.

* Count: --num_workers when given. Left at its default, the CPU keeps 2 (decoding
  competes with training for the same cores), while a GPU rank takes the cores
  available to it less one for itself: two workers decode ~200-270 images/s at 224
  px, far below what a GPU trains ResNet50 at.
* Shared memory: workers hand batches over through /dev/shm; Docker gives containers
  64 MB by default, less than a few prefetched batches of 224 px images. Every rank
  on the machine shares it, and a training rank's test loader runs while its
  training loader's workers hold their batches, so the need counted is the sum over
  both loaders, times the local ranks. When /dev/shm is smaller, batches go through
  pipes (slower), said in one line; `docker run --shm-size=8g` avoids it.
* Signals: paddle.distributed.launch sends SIGTERM to each rank's whole process
  group, workers included, and a signal sent by a cluster scheduler to every process
  reaches them too. A worker killed that way makes Paddle raise "DataLoader process
  ... killed by signal" in the training process, which then dies without its
  checkpoint. Workers ignore SIGINT, and SIGTERM from anyone but their parent; the
  training process notes the signal, stops after the step and ends its workers itself
  (and a worker whose parent died ends on its own).
"""
import os
import signal
import threading

#: Batches each worker prepares ahead (Paddle's DataLoader prefetch_factor default).
PREFETCH = 2
#: Margin over the batches in flight before /dev/shm is deemed large enough.
SHM_MARGIN = 2
SHM_PATH = "/dev/shm"
MAX_GPU_WORKERS = 16
_said = set()


class DefaultWorkers(int):
    """The default of --num_workers: an int (printed and saved as the number), marked
    so the scripts can tell "not given" from an explicit value."""


def worker_count(requested, device, nranks=1, cores=None):
    """The number of decode workers for one rank (see the module docstring)."""
    if device != "gpu" or not isinstance(requested, DefaultWorkers):
        return int(requested)
    cores = cores or len(os.sched_getaffinity(0))
    local_ranks = int(os.environ.get("PADDLE_LOCAL_SIZE", nranks if nranks else 1) or 1)
    return max(int(requested), min(MAX_GPU_WORKERS, cores // max(local_ranks, 1) - 1))


def ignore_stop_signals(worker_id=None):
    """worker_init_fn of every DataLoader: see "Signals" in the module docstring.

    SIGINT is ignored. SIGTERM is blocked and taken by a thread that ends the worker
    when its parent sent it (multiprocessing ends daemonic workers that way when the
    parent exits; ignored, they would make that exit wait forever) and ignores it
    from anyone else."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it
    threading.Thread(target=_end_on_parents_sigterm, args=(os.getppid(),), daemon=True,
                     name="sigterm-from-parent").start()


def _end_on_parents_sigterm(parent):
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def shm_free_bytes(path=SHM_PATH):
    """Free bytes of the shared-memory file system (None where there is none)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def shm_needed(loaders, local_ranks=1):
    """Bytes of /dev/shm the batches in flight take: `loaders` are one rank's
    (workers, bytes per batch) pairs that are alive at the same time (a training
    loader and its periodic test's), times the ranks on this machine."""
    return SHM_MARGIN * PREFETCH * local_ranks * sum(workers * size for workers, size in loaders)


def use_shared_memory(loaders, free_bytes=None, local_ranks=None):
    """Whether decode workers may pass batches through /dev/shm: shm_needed of `loaders`
    for every rank on this machine (the launcher's PADDLE_LOCAL_SIZE) must fit. Says so
    in one line (once per process and need) when not."""
    if not any(workers > 0 for workers, _ in loaders):
        return False
    local_ranks = local_ranks or _local_ranks()
    free = shm_free_bytes() if free_bytes is None else free_bytes
    needed = shm_needed(loaders, local_ranks)
    if free is None or free >= needed:
        return True
    if needed in _said:
        return False
    _said.add(needed)
    workers = "+".join(str(w) for w, _ in loaders if w > 0)
    ranks = f" on each of {local_ranks} ranks" if local_ranks > 1 else ""
    print(f"{SHM_PATH} has {free / 2**20:.0f} MB free, less than the ~{needed / 2**20:.0f} MB "
          f"{workers} decode workers{ranks} need for their batches: passing batches through pipes instead "
          f"(slower; in Docker, start the container with --shm-size=8g)", flush=True)
    return False


def _local_ranks():
    try:
        return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", "1")))
    except ValueError:
        return 1
