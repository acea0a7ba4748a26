"""A short soak (bench/soak.py runs the long one): memory stays flat, and once training
returns no decode worker, child process or file of ours is left open."""
import json
import os
import subprocess
import sys
import sysconfig

import environment
import pytest

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_soak_with_workers_does_not_grow_or_leak(demo_dir):
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--iterations=80", "--early=20",
                           "--batch=6", "--test_every=40", "--display=40", f"--data_dir={demo_dir}"],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT, env=environment.clean())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads([line for line in done.stdout.splitlines() if line.startswith("soak: ")][-1][6:])
    assert report["rss_ratio"] <= 1.3, report  # a short run still warms up; bench/soak.py holds 1.2 over 2000
    assert len(report["workers"]) == 2, report  # the decode workers really ran
    assert report["children_after"] == [] and report["workers_alive_after_exit"] == [], report
    # Paddle's DataLoader keeps a few pipes, matplotlib the fonts it drew curves.png with (its
    # font cache, in site-packages); no file of ours (images, lists, checkpoints) stays open
    libraries = sysconfig.get_paths()["purelib"] + os.sep
    assert not [fd for fd in report["new_fds"] if fd.startswith("/") and not fd.startswith(libraries)], report
