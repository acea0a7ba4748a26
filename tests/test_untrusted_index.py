"""Index directories from elsewhere (tests/hostile_indexes.py builds real indexes with
index.py and tampers with them): every entry point refuses in one line with exit code
2, within a timeout, writing or deleting nothing outside the index directory (a canary
directory's tree is unchanged) and connecting nowhere the user did not name; the layout
rules (CURRENT, generations/, pruning) and the faiss file check in process."""
import argparse
import json
import os
import re
import shutil

import faiss
import numpy as np
import pytest
from hostile_indexes import ATTACKS, ROWS, Bases, Listener, generation_of, make_canary, run, tree, unit_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dml.errors import UserError
from dml.index import backends, faiss_file, gallery, manifest, store, untrusted
from dml.index.catalog import SPECS

RECORD = dict.fromkeys(manifest.MODEL_KEYS)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    pytest.importorskip("milvus_lite")
    return Bases(str(tmp_path_factory.mktemp("bases")))


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_hostile_index_every_entry_point(attack, bases, listener, tmp_path):
    """Each entry point as a child process on its own tampered copy: the exit code the
    attack expects (2: refused; 0 only where the tampered part is not used, e.g. a
    reader never opens .lock), one `error:` line, the index directory unchanged by a
    refusal, the canary unchanged always, no connection to the listener."""
    for entry in attack.entry_points:
        index_dir, canary, values = bases.prepare(attack, str(tmp_path / entry), listener.port)
        canary_before, index_before = tree(canary), tree(index_dir)
        code, out, err, _, _ = run(entry, values, timeout=60)
        assert code == attack.expected(entry), (entry, out, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (entry, err)
            assert tree(index_dir) == index_before, entry
        assert tree(canary) == canary_before, entry
    assert listener.connections == 0


def flat_index(tmp_path, name="idx"):
    index_dir = str(tmp_path / name)
    paths = [f"/gallery/{i:04d}.jpg" for i in range(ROWS)]
    gallery.build(index_dir, unit_rows(ROWS, 0), paths, np.arange(ROWS) % 6, RECORD, "flat", {})
    return index_dir


def test_pruning_removes_only_generations_of_the_index(tmp_path):
    """A commit removes stale NNNNNN directories and killed writers' NNNNNN.tmp-PID,
    and nothing else: not other names, not a link named like a generation, not what
    such a link points at."""
    index_dir = flat_index(tmp_path)
    canary = make_canary(str(tmp_path / "canary"))
    before = tree(canary)
    gens = os.path.join(index_dir, "generations")
    for name in ("000090", "000091.tmp-4242", "photos", "0001"):
        os.makedirs(os.path.join(gens, name))
    os.symlink(canary, os.path.join(gens, "000092"))
    open(os.path.join(gens, "000093"), "w").write("a file named like a generation\n")
    with store.writer(index_dir) as writer:
        gallery.add(writer, writer.current(), unit_rows(2, 5), ["/new/0.jpg", "/new/1.jpg"], None)
    assert sorted(os.listdir(gens)) == ["000001", "000092", "000093", "000094", "0001", "photos"]
    assert tree(canary) == before and os.path.islink(os.path.join(gens, "000092"))


@pytest.mark.parametrize("pointer", [b"../../elsewhere\n", b"/tmp\n", b"000001/..\n", b"", b"1\n", b"00000a\n",
                                     b"000001\n\n", b"\xff\xfe\n", b"0" * 80])
def test_current_must_name_a_generation(pointer, tmp_path):
    index_dir = flat_index(tmp_path)
    with open(os.path.join(index_dir, "CURRENT"), "wb") as handle:
        handle.write(pointer)
    with pytest.raises(UserError, match="CURRENT"):
        store.open_index(index_dir)


@given(st.lists(st.text(st.characters(min_codepoint=0, max_codepoint=0x300), max_size=6), max_size=8))
def test_bad_line_of_paths_text_is_the_first_empty_or_control_line(lines):
    """One pass over paths.txt's text finds the line a line-by-line scan finds."""
    text = "".join(line.replace("\n", "") + "\n" for line in lines)
    expected = next((number for number, line in enumerate(text.split("\n")[:-1], start=1)
                     if not line or any(ord(c) < 32 or ord(c) == 127 for c in line)), None)
    assert untrusted.bad_line(text) == expected


@pytest.mark.parametrize("array", [np.zeros((3, 4), np.float32), np.arange(5), np.zeros((2, 3, 4), ">f8")])
def test_npy_header_of_what_np_save_writes(array, tmp_path):
    path = str(tmp_path / "a.npy")
    np.save(path, array)
    fd, size = untrusted.open_regular(path)
    try:
        shape, dtype, offset = untrusted.npy_header(fd, path)
    finally:
        os.close(fd)
    assert (shape, dtype, size) == (array.shape, array.dtype, offset + array.nbytes)


@pytest.mark.parametrize("start", [b"\x93NUMPY\x01\x00" + (5000).to_bytes(2, "little"),
                                   b"\x93NUMPY\x02\x00" + (0xFFFF_FFF0).to_bytes(4, "little"),
                                   b"\x93NUMPY\x03\x00" + (100).to_bytes(4, "little"), b"PK\x03\x04", b""])
def test_npy_header_declared_length_and_version_checked_first(start, tmp_path):
    path = str(tmp_path / "a.npy")
    open(path, "wb").write(start + b" " * 6000)
    fd, _ = untrusted.open_regular(path)
    try:
        with pytest.raises(UserError, match="npy"):
            untrusted.npy_header(fd, path)
    finally:
        os.close(fd)


def test_fifo_and_link_files_are_refused_without_blocking(tmp_path):
    """A FIFO (no writer: a blocking open would hang) and a link to a real index file
    elsewhere, as each file of a generation."""
    index_dir = flat_index(tmp_path)
    gen = generation_of(index_dir)
    for name in ("index.json", "vectors.npy", "paths.txt", "labels.npy"):
        copy = str(tmp_path / f"copy-{name}")
        shutil.copytree(index_dir, copy)
        target = os.path.join(generation_of(copy), name)
        os.remove(target)
        os.mkfifo(target)
        with pytest.raises(UserError, match="FIFO"):
            store.open_index(copy)
        os.remove(target)
        os.symlink(os.path.join(gen, name), target)
        with pytest.raises(UserError, match="symbolic link"):
            store.open_index(copy)


@pytest.mark.parametrize("name", [".lock", "CURRENT"])
def test_writer_never_writes_through_a_link(name, tmp_path):
    """.lock a link to a file that does not exist (opening it would create it), CURRENT
    a link to a copy of itself outside: the writer refuses, both stay as they were."""
    index_dir = flat_index(tmp_path)
    outside = str(tmp_path / "outside")
    if name == "CURRENT":
        shutil.copy(os.path.join(index_dir, name), outside)
    os.remove(os.path.join(index_dir, name))
    os.symlink(outside, os.path.join(index_dir, name))
    before = tree(str(tmp_path))
    with pytest.raises(UserError, match="symbolic link"):
        with store.writer(index_dir) as writer:
            gallery.add(writer, writer.current(), unit_rows(1, 9), ["/new.jpg"], None)
    assert tree(str(tmp_path)) == before


def test_weights_not_a_regular_file_are_not_hashed(tmp_path):
    link = str(tmp_path / "weights.pdparams")
    os.symlink("/dev/zero", link)
    meta = {"weights": link, "weights_sha256": "0" * 64}
    with pytest.raises(UserError, match="character device"):
        manifest.network_of(meta, "idx")
    os.remove(link)
    os.mkfifo(link)
    with pytest.raises(UserError, match="FIFO"):
        manifest.network_of(meta, "idx")


def recorded_options(entry):
    """backend_options as index.py build records them for `entry` with its defaults."""
    args = argparse.Namespace(index_dir="/somewhere/gallery", milvus_uri="http://127.0.0.1:1",
                              **{flag.name: flag.default for flag in entry.flags if flag.name != "milvus_uri"})
    return backends.options(argparse.Namespace(backend=entry.name, **vars(args)))[0]


@pytest.mark.parametrize("entry", SPECS, ids=lambda entry: entry.name)
def test_recorded_backend_options_are_checked_by_the_flags(entry):
    """What build records passes; each recorded flag value that its flag would not
    give, a missing key and an unknown key are refused in one UserError."""
    if entry.requires:
        pytest.importorskip(entry.requires)
    options = recorded_options(entry)
    backends.check_recorded(entry.name, options, "index.json")
    for flag in entry.build_flags():
        for bad in (True, [1], None, "x" * 300, -1, 10 ** 12):
            with pytest.raises(UserError, match=flag.option):
                backends.check_recorded(entry.name, dict(options, **{flag.option: bad}), "index.json")
        with pytest.raises(UserError, match=flag.option):
            backends.check_recorded(entry.name, {k: v for k, v in options.items() if k != flag.option}, "index.json")
    with pytest.raises(UserError, match="damaged"):
        backends.check_recorded(entry.name, dict(options, surprise=1), "index.json")


def test_milvus_uri_comes_from_the_user(tmp_path, monkeypatch):
    """The URI of index.json is compared, never used: another one, or none given, is
    refused; the flag, or else DML_MILVUS_URI, is what a command uses."""
    index_dir = str(tmp_path / "idx")
    meta = {"backend": "milvus", "backend_options": {"milvus_uri": "http://127.0.0.1:1", "collection": "c",
                                                     "index_type": "FLAT"}}
    monkeypatch.delenv("DML_MILVUS_URI", raising=False)
    with pytest.raises(UserError, match="needs --milvus_uri"):
        backends.session(argparse.Namespace(milvus_uri=None), meta, index_dir)
    with pytest.raises(UserError, match="refusing to connect"):
        backends.session(argparse.Namespace(milvus_uri="http://127.0.0.1:2"), meta, index_dir)
    monkeypatch.setenv("DML_MILVUS_URI", "http://127.0.0.1:1/")
    assert backends.session(argparse.Namespace(milvus_uri=None), meta, index_dir) == {
        "milvus_uri": "http://127.0.0.1:1/"}
    inside = os.path.join(index_dir, "gallery.db")
    meta["backend_options"]["milvus_uri"] = "gallery.db"  # a Lite file recorded inside the index
    assert backends.session(argparse.Namespace(milvus_uri=inside), meta, index_dir)["milvus_uri"] == inside
    with pytest.raises(UserError, match="refusing to connect"):
        backends.session(argparse.Namespace(milvus_uri=str(tmp_path / "gallery.db")), meta, index_dir)


# --- the faiss files ---

@pytest.fixture(scope="module")
def faiss_samples(tmp_path_factory):
    return faiss_files(tmp_path_factory.mktemp("faiss"))


def faiss_files(tmp_path):
    """(path, check, count, options) of real hnsw and ivfpq files written by faiss, an
    ivfpq one with all its lists used and one with a single list used (faiss stores
    those sizes sparsely)."""
    rows = unit_rows(600, 3)
    hnsw = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(rows)
    found = [(hnsw, faiss_file.check_hnsw, {"hnsw_m": 8, "ef_construction": 40})]
    for spread in (rows, np.repeat(rows[:1], 40, axis=0)):  # one list holds them all
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(16), 16, 8, 4, 4, faiss.METRIC_INNER_PRODUCT)
        ivf.pq.cp.min_points_per_centroid = 1  # quiet: 600 points train 16 centroids well enough here
        ivf.train(rows)
        ivf.add(spread)
        found.append((ivf, faiss_file.check_ivfpq, {"nlist": 8, "pq_m": 4}))
    out = []
    for number, (index, check, options) in enumerate(found):
        path = os.path.join(str(tmp_path), f"{number}.faiss")
        faiss.write_index(index, path)
        out.append((path, check, index.ntotal, options))
    return out


def check_bytes(path, data, check, count, options):
    with open(path, "wb") as handle:
        handle.write(data)
    fd, size = untrusted.open_regular(path)
    try:
        check(faiss_file.Cursor(fd, size, path), 16, count, options)
    finally:
        os.close(fd)


def test_real_faiss_files_pass_and_every_truncation_is_refused(faiss_samples, tmp_path):
    ivf_files = [open(path, "rb").read() for path, check, _, _ in faiss_samples if check is faiss_file.check_ivfpq]
    layouts = {d[d.index(b"ilar") + 20:d.index(b"ilar") + 24] for d in ivf_files}  # after nlist, code size
    assert layouts == {b"full", b"sprs"}
    for original, check, count, options in faiss_samples:
        data = open(original, "rb").read()
        path = str(tmp_path / "sample.faiss")
        check_bytes(path, data, check, count, options)
        for cut in list(range(0, 200)) + list(range(200, len(data), 97)) + [len(data) - 1]:
            with pytest.raises(UserError, match="not a faiss file"):
                check_bytes(path, data[:cut], check, count, options)
        with pytest.raises(UserError, match="bytes after the end"):
            check_bytes(path, data + b"\0", check, count, options)
        with pytest.raises(UserError):
            check_bytes(path, data, check, count + 1, options)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_faiss_files_are_refused_or_safe_to_search(faiss_samples, data):
    """Random bytes overwritten: the check refuses (UserError, nothing else), or faiss
    reads the file and every answer is a row of the index (or -1)."""
    path, check, count, options = data.draw(st.sampled_from(faiss_samples))
    raw = bytearray(open(path, "rb").read())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    damaged = path + ".damaged"
    try:
        check_bytes(damaged, bytes(raw), check, count, options)
    except UserError:
        return
    index = faiss.read_index(damaged)
    _, rows = index.search(unit_rows(5, 4), 10)
    assert ((rows >= -1) & (rows < count)).all()


@pytest.mark.parametrize("edit,message", [
    (lambda meta: meta.update(dba={"n": 0, "alpha": 3.0}), "n must be an integer from 1"),
    (lambda meta: meta.update(dba={"n": 2, "alpha": "3"}), "dba alpha must be a number from 0 to 1000"),
    (lambda meta: meta.update(dba={"n": 2, "alpha": 3.0, "path": "/etc"}), "dba must be an object with n and alpha"),
    (lambda meta: meta["files"].pop("dba.npy"), "files lacks dba.npy"),
    (lambda meta: meta.pop("dba"), "files names dba.npy but dba is not set"),
])
def test_recorded_dba_is_checked_before_its_file_is_read(edit, message, tmp_path):
    index_dir = str(tmp_path / "idx")
    gallery.build(index_dir, unit_rows(ROWS, 0), [f"/g/{i}.jpg" for i in range(ROWS)], None, RECORD, "flat", {},
                  dba={"n": 2, "alpha": 3.0})
    directory = store.current_generation(index_dir)
    path = os.path.join(directory, "index.json")
    meta = json.load(open(path))
    edit(meta)
    json.dump(meta, open(path, "w"))
    with pytest.raises(UserError, match=re.escape(message)):
        store.open_index(index_dir)


def test_dba_vectors_of_another_shape_are_refused(tmp_path):
    index_dir = str(tmp_path / "idx")
    gallery.build(index_dir, unit_rows(ROWS, 0), [f"/g/{i}.jpg" for i in range(ROWS)], None, RECORD, "flat", {},
                  dba={"n": 2, "alpha": 3.0})
    directory = store.current_generation(index_dir)
    np.save(os.path.join(directory, "dba.npy"), np.zeros((ROWS - 1, 17), np.float32))
    meta = json.load(open(os.path.join(directory, "index.json")))
    meta["files"]["dba.npy"] = os.path.getsize(os.path.join(directory, "dba.npy"))
    json.dump(meta, open(os.path.join(directory, "index.json"), "w"))
    with pytest.raises(UserError, match=r"dba\.npy' holds float32 \(59, 17\); index\.json says float32 \(60, 16\)"):
        store.open_index(index_dir)
