"""data/download_sop.sh: a failed download leaves no file where the user is told to put
the zip (it downloads to a temporary name), a served zip is unpacked, and what is not a
zip is not left in place. Only a local HTTP server is contacted."""
import functools
import http.server
import os
import subprocess
import threading
import zipfile

import environment
import pytest

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "data", "download_sop.sh")
ZIP = "Stanford_Online_Products.zip"


def run(target, url):
    return subprocess.run(["bash", SCRIPT, str(target)], capture_output=True, text=True, timeout=1800,
                          env=environment.clean(SOP_URL=url))


@pytest.fixture
def server(tmp_path):
    """A local HTTP server of tmp_path/served; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def test_no_network_leaves_no_zip_and_no_empty_file(tmp_path):
    target = tmp_path / "data"
    done = run(target, f"http://127.0.0.1:9/{ZIP}")
    assert done.returncode == 1
    assert "error: could not download" in done.stderr and f"place it at {target / ZIP}" in done.stderr
    assert os.listdir(target) == []


def test_served_zip_is_placed_and_unpacked(tmp_path, server):
    folder, base = server
    with zipfile.ZipFile(folder / ZIP, "w") as archive:
        archive.writestr("Stanford_Online_Products/Ebay_train.txt", "image_id class_id super_class_id path\n")
        archive.writestr("Stanford_Online_Products/Ebay_test.txt", "image_id class_id super_class_id path\n")
    target = tmp_path / "data"
    done = run(target, f"{base}/{ZIP}")
    assert done.returncode == 0, done.stderr
    assert f"done: --data_dir={target / 'Stanford_Online_Products'}" in done.stdout
    assert sorted(os.listdir(target)) == ["Stanford_Online_Products", ZIP]
    assert (target / ZIP).read_bytes() == (folder / ZIP).read_bytes()
    again = run(target, "http://127.0.0.1:9/unused")  # complete zip in place: unpack only
    assert again.returncode == 0 and "downloading" not in again.stdout


def test_what_is_not_a_zip_is_not_left_in_place(tmp_path, server):
    folder, base = server
    (folder / ZIP).write_text("<html>mirror moved</html>")
    target = tmp_path / "data"
    done = run(target, f"{base}/{ZIP}")
    assert done.returncode == 1
    assert "did not give a readable zip" in done.stderr
    assert os.listdir(target) == []
