"""Hostile index directories: a real index built by index.py, then tampered with, one
attack each, and the entry points (index.py build/add/remove/info, search.py) run on
each in a child process with a timeout.

`python tests/hostile_indexes.py` prints, for every attack and entry point: exit code,
the stderr line, wall time and peak memory (`/usr/bin/time -v`), beside an untampered
index's `info` as the baseline.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable

import environment
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120
ROWS, DIM = 60, 16

ENTRY_POINTS = {
    "info": ["index.py", "info", "--index_dir", "{index}"],
    "search": ["search.py", "--index_dir", "{index}", "--features", "{queries}"],
    "add": ["index.py", "add", "--index_dir", "{index}", "--features", "{extra}"],
    "remove": ["index.py", "remove", "--index_dir", "{index}", "--prefix", "/gallery/000"],
    "build": ["index.py", "build", "--index_dir", "{index}", "--features", "{extra}"],
    "search_image": ["search.py", "--index_dir", "{index}", "--image", "{image}", "--use_gpu", "False"],
    "add_images": ["index.py", "add", "--index_dir", "{index}", "--image_list", "{image_list}", "--use_gpu", "False"],
}
WRITERS = ("add", "remove", "build")
USES_MILVUS = ("search", "add", "remove")


# --- a real index, built by index.py ---

def unit_rows(num, seed):
    rows = np.random.default_rng(seed).standard_normal((num, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def write_features(path, rows, paths, labels=None):
    np.save(path, rows)
    with open(path[:-4] + ".paths.txt", "w") as handle:
        handle.write("".join(p + "\n" for p in paths))
    if labels is not None:
        np.save(path[:-4] + ".labels.npy", labels)
    return path


def inputs(directory):
    """The files the entry points are given: gallery features, queries, extra rows, a
    query image and an image list."""
    os.makedirs(directory, exist_ok=True)
    given = {
        "gallery": write_features(os.path.join(directory, "gallery.npy"), unit_rows(ROWS, 0),
                                  [f"/gallery/{i:04d}.jpg" for i in range(ROWS)], np.arange(ROWS) % 6),
        "queries": write_features(os.path.join(directory, "queries.npy"), unit_rows(4, 1),
                                  [f"/queries/{i}.jpg" for i in range(4)]),
        "extra": write_features(os.path.join(directory, "extra.npy"), unit_rows(5, 2),
                                [f"/extra/{i}.jpg" for i in range(5)]),
        "image": os.path.join(directory, "query.png"),
        "image_list": os.path.join(directory, "images.txt"),
    }
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(given["image"])
    with open(given["image_list"], "w") as handle:
        handle.write(given["image"] + "\n")
    return given


def run(entry, values, timeout=TIMEOUT, measure=False):
    """Run one entry point; (return code, stdout, stderr, peak MiB or None, seconds or None)."""
    argv = [sys.executable] + [os.path.join(ROOT, a) if a.endswith(".py") else a.format(**values)
                               for a in ENTRY_POINTS[entry]] + values.get("flags", {}).get(entry, [])
    if measure:
        argv = ["/usr/bin/time", "-v"] + argv
    env = {k: v for k, v in os.environ.items() if k != "DML_MILVUS_URI"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the entry point too, not only /usr/bin/time
        proc.communicate()
        raise
    peak = seconds = None
    if measure:
        stderr, _, report = stderr.partition("\tCommand being timed:")
        stderr = "".join(line for line in stderr.splitlines(True) if not line.startswith("Command exited with"))
        peak = int(report.split("Maximum resident set size (kbytes): ")[1].split()[0]) / 1024
        clock = report.split("Elapsed (wall clock) time (h:mm:ss or m:ss): ")[1].split()[0].split(":")
        seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(clock)))
    return proc.returncode, stdout, stderr, peak, seconds


def build_index(directory, given, backend="flat", flags=()):
    index_dir = os.path.join(directory, f"index_{backend}")
    argv = [sys.executable, os.path.join(ROOT, "index.py"), "build", "--index_dir", index_dir,
            "--features", given["gallery"], "--backend", backend, *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT, env=environment.clean())
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return index_dir


# --- tampering ---

def generation_of(index_dir):
    with open(os.path.join(index_dir, "CURRENT")) as handle:
        return os.path.join(index_dir, "generations", handle.read().strip())


def edit_meta(index_dir, **changes):
    path = os.path.join(generation_of(index_dir), "index.json")
    meta = json.load(open(path))
    meta.update(changes)
    with open(path, "w") as handle:
        json.dump(meta, handle)


def replace_file(index_dir, name, data):
    """Write `name` of the live generation and record its new size in index.json (so
    the size check passes and the deeper checks are what refuses)."""
    gen = generation_of(index_dir)
    with open(os.path.join(gen, name), "wb") as handle:
        handle.write(data)
    meta = json.load(open(os.path.join(gen, "index.json")))
    edit_meta(index_dir, files=dict(meta["files"], **{name: len(data)}))


def fifo(path):
    if os.path.lexists(path):
        os.remove(path)
    os.mkfifo(path)


def fifo_in_generation(index_dir, name):
    """A generation's file replaced by a FIFO, index.json recording its size (0)."""
    fifo(os.path.join(generation_of(index_dir), name))
    meta = json.load(open(os.path.join(generation_of(index_dir), "index.json")))
    edit_meta(index_dir, files=dict(meta["files"], **{name: 0}))


def npy_bytes(dtype, shape, header_pad=0, version=(1, 0)):
    """An .npy file of zeros; `header_pad` spaces added to its header."""
    header = repr({"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(shape)}) + " " * header_pad
    header = header + " " * (-(len(header) + 11) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    body = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return b"\x93NUMPY" + bytes(version) + size + header.encode("latin1") + body


def hnsw_with_levels(index_dir, declared):
    """hnsw.faiss whose level table declares `declared` entries (the file stays small)."""
    path = os.path.join(generation_of(index_dir), "hnsw.faiss")
    data = bytearray(open(path, "rb").read())
    at = 4 + 33
    probas = struct.unpack_from("<Q", data, at)[0]
    at += 8 + 8 * probas
    cum = struct.unpack_from("<Q", data, at)[0]
    at += 8 + 4 * cum
    struct.pack_into("<Q", data, at, declared)
    return bytes(data)


def hnsw_bad_neighbour(index_dir):
    """hnsw.faiss with one neighbour id beyond the index's rows."""
    path = os.path.join(generation_of(index_dir), "hnsw.faiss")
    data = bytearray(open(path, "rb").read())
    at = 4 + 33
    for itemsize in (8, 4, 4, 8):  # probabilities, neighbours per level, levels, offsets
        at += 8 + itemsize * struct.unpack_from("<Q", data, at)[0]
    struct.pack_into("<i", data, at + 8, ROWS + 5)
    return bytes(data)


def canary_generation(index_dir, canary):
    """A copy of the live generation inside the canary (what a link would lead to)."""
    target = os.path.join(canary, "gens", os.path.basename(generation_of(index_dir)))
    shutil.copytree(generation_of(index_dir), target)
    return target


def link_generations(index_dir, canary, keep_current=True):
    canary_generation(index_dir, canary)
    os.makedirs(os.path.join(canary, "gens", "000777"))
    open(os.path.join(canary, "gens", "000777", "precious.txt"), "w").write("mine\n")
    shutil.rmtree(os.path.join(index_dir, "generations"))
    os.symlink(os.path.join(canary, "gens"), os.path.join(index_dir, "generations"))
    if not keep_current:
        os.remove(os.path.join(index_dir, "CURRENT"))


def link_generation(index_dir, canary):
    gen = generation_of(index_dir)
    target = canary_generation(index_dir, canary)
    shutil.rmtree(gen)
    os.symlink(target, gen)


def escape_current(index_dir, canary):
    canary_generation(index_dir, canary)
    rel = os.path.relpath(os.path.join(canary, "gens", os.path.basename(generation_of(index_dir))),
                          os.path.join(index_dir, "generations"))
    with open(os.path.join(index_dir, "CURRENT"), "w") as handle:
        handle.write(rel + "\n")


def link_current(index_dir, canary):
    pointer = os.path.join(canary, "pointer")
    shutil.copy(os.path.join(index_dir, "CURRENT"), pointer)
    os.remove(os.path.join(index_dir, "CURRENT"))
    os.symlink(pointer, os.path.join(index_dir, "CURRENT"))


def link_lock(index_dir, canary):
    lock = os.path.join(index_dir, ".lock")
    if os.path.lexists(lock):
        os.remove(lock)
    os.symlink(os.path.join(canary, "created-by-the-lock"), lock)


def weights_to_dev_zero(index_dir, canary, in_directory=False):
    """index.json's weights: a link to /dev/zero, or a directory holding one (weights
    may be a checkpoint directory)."""
    weights = os.path.join(canary, "weights")
    if in_directory:
        os.makedirs(weights)
    os.symlink("/dev/zero", os.path.join(weights, "model.pdparams") if in_directory else weights)
    edit_meta(index_dir, model="ResNet18", embedding_size=DIM, image_shape="3,32,32", weights=weights,
              weights_sha256="0" * 64)


def deep_json(index_dir, canary):
    with open(os.path.join(generation_of(index_dir), "index.json"), "w") as handle:
        handle.write("[" * 100_000 + "]" * 100_000)


@dataclass
class Attack:
    """A tampering of a built index, with the exit code each entry point must give
    (2 unless named); `base`: the backend of the index it starts from."""

    name: str
    tamper: Callable
    base: str = "flat"
    expect: dict = field(default_factory=dict)
    entry_points: tuple = ("info", "search", "add", "remove", "build")

    def expected(self, entry):
        return self.expect.get(entry, 2)


READERS_FINE = {"info": 0, "search": 0}

ATTACKS = [
    Attack("generations/ a link out of the index", link_generations),
    Attack("generations/ a link, no CURRENT (build into it)", lambda d, c: link_generations(d, c, False)),
    Attack("generations/NNNNNN a link out of the index", link_generation),
    Attack("CURRENT naming ../../elsewhere", escape_current),
    Attack("CURRENT a link out of the index", link_current),
    Attack(".lock a link out of the index", link_lock, expect=READERS_FINE),
    Attack("paths.txt a FIFO", lambda d, c: fifo_in_generation(d, "paths.txt")),
    Attack("vectors.npy a FIFO", lambda d, c: fifo_in_generation(d, "vectors.npy")),
    Attack("index.json a FIFO", lambda d, c: fifo(os.path.join(generation_of(d), "index.json"))),
    Attack("CURRENT a FIFO", lambda d, c: fifo(os.path.join(d, "CURRENT"))),
    Attack(".lock a FIFO", lambda d, c: fifo(os.path.join(d, ".lock")), expect=READERS_FINE),
    Attack("weights a link to /dev/zero", weights_to_dev_zero, expect={"info": 0},
           entry_points=("info", "search_image", "add_images")),
    Attack("weights a directory holding a link to /dev/zero", lambda d, c: weights_to_dev_zero(d, c, True),
           expect={"info": 0}, entry_points=("info", "search_image", "add_images")),
    Attack("index.json files: []", lambda d, c: edit_meta(d, files=[])),
    Attack("index.json nested 100,000 deep", deep_json),
    Attack("index.json count 2**40", lambda d, c: edit_meta(d, count=2 ** 40)),
    Attack("paths.txt not UTF-8", lambda d, c: replace_file(d, "paths.txt", b"/gallery/\xff\xfe.jpg\n" * ROWS)),
    Attack("labels.npy with a 64 KB header",
           lambda d, c: replace_file(d, "labels.npy", npy_bytes("<i8", (ROWS,), header_pad=65_000))),
    Attack("labels.npy declaring a 4 GB header",
           lambda d, c: replace_file(d, "labels.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFF_FFF0) + b"{")),
    Attack("vectors.npy of strings",
           lambda d, c: replace_file(d, "vectors.npy", npy_bytes("<U1", (ROWS, DIM)))),
    Attack("hnsw option ef_search 10**9", lambda d, c: edit_meta(
        d, backend_options={"hnsw_m": 8, "ef_construction": 40, "ef_search": 10 ** 9}), base="hnsw"),
    Attack("hnsw.faiss declaring 600M levels",
           lambda d, c: replace_file(d, "hnsw.faiss", hnsw_with_levels(d, 600_000_000)), base="hnsw"),
    Attack("hnsw.faiss truncated", lambda d, c: replace_file(
        d, "hnsw.faiss", open(os.path.join(generation_of(d), "hnsw.faiss"), "rb").read()[:5000]), base="hnsw"),
    Attack("hnsw.faiss neighbour out of range",
           lambda d, c: replace_file(d, "hnsw.faiss", hnsw_bad_neighbour(d)), base="hnsw"),
    Attack("milvus_uri: a listener of the attacker", lambda d, c: edit_meta(d, backend_options=dict(
        json.load(open(os.path.join(generation_of(d), "index.json")))["backend_options"],
        milvus_uri="http://127.0.0.1:{port}")), base="milvus", expect={"info": 0}),
    Attack("milvus_uri: a Milvus Lite file elsewhere", lambda d, c: edit_meta(d, backend_options=dict(
        json.load(open(os.path.join(generation_of(d), "index.json")))["backend_options"],
        milvus_uri=os.path.join(c, "evil.db"))), base="milvus", expect={"info": 0}),
]


def fill_port(index_dir, port):
    """Put the listener's port into a tampered milvus_uri."""
    path = os.path.join(generation_of(index_dir), "index.json")
    text = open(path).read()
    if "{port}" in text:
        open(path, "w").write(text.replace("{port}", str(port)))


# --- what must not change ---

def tree(directory):
    """Every entry under `directory` (links not followed): type, size, mtime."""
    found = {}
    for parent, dirs, names in os.walk(directory):
        for name in dirs + names:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            found[os.path.relpath(path, directory)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def make_canary(directory):
    os.makedirs(os.path.join(directory, "photos"))
    os.makedirs(os.path.join(directory, "000002"))
    open(os.path.join(directory, "notes.txt"), "w").write("keep me\n")
    open(os.path.join(directory, "photos", "a.jpg"), "wb").write(b"\xff\xd8 not really")
    open(os.path.join(directory, "000002", "x.bin"), "wb").write(b"x" * 100)
    return directory


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


class Bases:
    """The untampered indexes (flat, hnsw, milvus on a Milvus Lite file) and inputs."""

    def __init__(self, directory):
        self.directory = directory
        self.given = inputs(os.path.join(directory, "inputs"))
        self.trusted_db = os.path.join(directory, "trusted.db")
        self.indexes = {
            "flat": build_index(directory, self.given),
            "hnsw": build_index(directory, self.given, "hnsw", ["--hnsw_m", "8", "--ef_construction", "40"]),
            "milvus": build_index(directory, self.given, "milvus", ["--milvus_uri", self.trusted_db]),
        }

    def prepare(self, attack, workdir, port):
        """(tampered index directory, canary directory, values for the entry points)."""
        index_dir = os.path.join(workdir, "index")
        shutil.copytree(self.indexes[attack.base], index_dir, symlinks=True)
        canary = make_canary(os.path.join(workdir, "canary"))
        attack.tamper(index_dir, canary)
        if attack.base == "milvus":
            fill_port(index_dir, port)
        flags = {e: ["--milvus_uri", self.trusted_db] for e in USES_MILVUS} if attack.base == "milvus" else {}
        return index_dir, canary, dict(self.given, index=index_dir, flags=flags)


def main():
    with tempfile.TemporaryDirectory() as directory:
        bases = Bases(directory)
        listener = Listener()
        code, _, _, peak, seconds = run("info", dict(bases.given, index=bases.indexes["flat"]), measure=True)
        print(f"baseline: index.py info on an untampered index: exit {code}, {seconds:.1f} s, {peak:.0f} MiB\n")
        print("| attack | entry point | exit | time | peak memory | stderr |\n|---|---|---|---|---|---|")
        for number, attack in enumerate(ATTACKS):
            for entry in attack.entry_points:
                workdir = os.path.join(directory, f"attack{number}-{entry}")
                index_dir, canary, values = bases.prepare(attack, workdir, listener.port)
                code, _, stderr, peak, seconds = run(entry, values, measure=True)
                line = stderr.strip().splitlines()[-1][:110] if stderr.strip() else ""
                print(f"| {attack.name} | {entry} | {code} | {seconds:.1f} s | {peak:.0f} MiB | {line} |", flush=True)
        listener.close()
        print(f"\nconnections to the listener: {listener.connections}")


if __name__ == "__main__":
    main()
