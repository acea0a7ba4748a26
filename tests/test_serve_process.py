"""serve.py as a process: starts on a free port of 127.0.0.1 and says where, answers image
queries with search.py's hits, sees index.py's commits from another process without a
restart, stops on SIGTERM; startup mistakes are one line and exit code 2."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import environment
import numpy as np
import pytest
from test_index import NET, RUN, net, run  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "process-key-0123456789"


class Service:
    """serve.py started on --port 0; stopped with SIGTERM."""

    def __init__(self, index_dir, *flags):
        self.process = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), "--index_dir", index_dir,
                                         "--port", "0", "--use_gpu", "False", *flags],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                        env=environment.clean())
        for line in self.process.stdout:
            found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError(f"serve.py did not start: {self.process.stderr.read()[-3000:]}")

    def get(self, path, headers=None):
        return request(self.url + path.lstrip("/"), None, headers or {})

    def post_json(self, path, content, headers=None):
        return request(self.url + path.lstrip("/"), json.dumps(content).encode(),
                       {"Content-Type": "application/json", **(headers or {})})

    def post_image(self, path, image, fields=()):
        boundary = uuid.uuid4().hex
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
                 for name, value in fields]
        with open(image, "rb") as handle:
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\""
                         f"{os.path.basename(image)}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
                         + handle.read() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return request(self.url + path.lstrip("/"), body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return self.process.returncode, err


def request(url, data, headers):
    """(status, decoded JSON or bytes) of one request."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=120) as reply:
            status, content, kind = reply.status, reply.read(), reply.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, content, kind = err.code, err.read(), err.headers.get("content-type", "")
    return status, json.loads(content) if kind.startswith("application/json") else content


@pytest.fixture(scope="module")
def demo_index(net, demo_dir, tmp_path_factory):  # noqa: F811
    """index.py build from the first 30 demo test images."""
    out = tmp_path_factory.mktemp("served")
    with open(os.path.join(demo_dir, "Ebay_test.txt")) as handle:
        lines = handle.read().splitlines()
    (out / "gallery.txt").write_text("\n".join(lines[:31]) + "\n")
    (out / "more.txt").write_text("\n".join([lines[0]] + lines[31:]) + "\n")
    index_dir = str(out / "index")
    done = run("index.py", "build", "--index_dir", index_dir, "--image_list", str(out / "gallery.txt"),
               "--data_dir", demo_dir, *NET, *RUN, "--pretrained_model", net)
    assert done.returncode == 0, done.stderr
    return index_dir, str(out / "more.txt"), [os.path.join(demo_dir, line.split()[3]) for line in lines[1:]]


def search_py(index_dir, image, topk, tmp_path):
    out = str(tmp_path / f"{uuid.uuid4().hex}.json")
    done = run("search.py", "--index_dir", index_dir, "--image", image, "--topk", str(topk), *RUN, "--save_json", out)
    assert done.returncode == 0, done.stderr
    return json.load(open(out))["results"][0]["hits"]


def test_image_hits_equal_search_py_and_index_py_commits_are_seen(demo_index, demo_dir, tmp_path, net):  # noqa: F811
    index_dir, more_list, images = demo_index
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    service = Service(index_dir, "--api_key_file", str(key_file))
    try:
        assert service.get("/health")[0] == 200
        for image in (images[0], images[33]):
            status, reply = service.post_image("/search", image, [("topk", "7")])
            assert status == 200, reply
            expected = search_py(index_dir, image, 7, tmp_path)
            assert [h["path"] for h in reply["results"][0]["hits"]] == [h["path"] for h in expected]
            np.testing.assert_allclose([h["score"] for h in reply["results"][0]["hits"]],
                                       [h["score"] for h in expected], atol=1e-4)
        before = service.get("/info")[1]
        done = run("index.py", "add", "--index_dir", index_dir, "--image_list", more_list, "--data_dir", demo_dir,
                   *RUN)
        assert done.returncode == 0, done.stderr
        after = service.get("/info")[1]
        assert after["index"]["count"] == before["index"]["count"] + 10
        assert int(after["generation"]) == int(before["generation"]) + 1
        status, reply = service.post_image("/search", images[33], [("topk", "1")])
        assert reply["generation"] == after["generation"]
        assert reply["results"][0]["hits"][0]["path"] == os.path.abspath(images[33])
        status, reply = service.post_json("/remove", {"prefix": os.path.abspath(images[31])},
                                          {"Authorization": f"Bearer {KEY}"})
        assert status == 200 and reply["removed"] == 1
    finally:
        code, err = service.stop()
    assert code == 0, err
    assert "Traceback" not in err


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_startup_mistakes_are_one_line(demo_index, tmp_path):
    index_dir = demo_index[0]
    short = tmp_path / "short"
    short.write_text("abc\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        cases = {
            "holds no index": ["--index_dir", str(tmp_path)],
            "at least 16 characters": ["--index_dir", index_dir, "--api_key_file", str(short)],
            "cannot listen": ["--index_dir", index_dir, "--port", str(taken.getsockname()[1])],
            "--max_images": ["--index_dir", index_dir, "--max_images", "0"],
        }
        for message, flags in cases.items():
            done = subprocess.run([sys.executable, os.path.join(ROOT, "serve.py"), *flags, "--use_gpu", "False"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=300, env=environment.clean())
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            assert done.returncode == 2 and len(errors) == 1 and message in errors[0], done.stderr
            assert "Traceback" not in done.stderr
    finally:
        taken.close()
