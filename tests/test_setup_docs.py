"""What the README tells a new user to run is true: the .venv comes before the first
`python` command, the shared-flags table matches the scripts' parsers, the GPU install
goes through Paddle's index, and the GPU check line runs."""
import os
import re
import shutil
import subprocess
import sys

import environment
import pytest

from dml.commands import flag_table
from dml.runtime.device import cuda_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_venv_is_named_before_the_first_python_command():
    first_command = re.search(r"^python ", README, re.M)
    assert first_command, "the README shows python commands"
    venv = README.find("source .venv/bin/activate")
    assert 0 <= venv < first_command.start()
    assert README.find("`.venv/bin/python`") < first_command.start()


def test_readme_shared_flags_table_is_the_parsers_own():
    """The table is made from the commands' parsers (`python -m dml.commands`), never by hand."""
    table = flag_table.markdown_table()
    assert table in README, "README's shared-flags table is stale: paste `python -m dml.commands`"
    assert len(table.splitlines()) > 20 and "ViT_S16" in table


def pins(path):
    """{package: version} of a requirements file (options and comments left out)."""
    found = {}
    for line in open(os.path.join(ROOT, path)):
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            found[name.strip()] = version.strip()
    return found


def test_gpu_requirements_are_the_cpu_pins_with_the_gpu_wheel_from_paddles_index():
    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert gpu.pop("paddlepaddle-gpu") == cpu.pop("paddlepaddle")
    assert gpu == cpu
    options = [line.split() for line in open(os.path.join(ROOT, "requirements-gpu.txt")) if line.startswith("-")]
    assert options == [["--extra-index-url", "https://www.paddlepaddle.org.cn/packages/stable/cu126/"]]
    assert "REQUIREMENTS=requirements-gpu.txt bash scripts/setup_env.sh" in README


@pytest.fixture
def fake_checkout(tmp_path):
    """scripts/setup_env.sh beside the requirements files, with a .venv whose python
    only records how it was called (and says paddlepaddle is installed)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(os.path.join(ROOT, "scripts", "setup_env.sh"), tmp_path / "scripts")
    for name in ("requirements.txt", "requirements-gpu.txt"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls.log"\n'
                      '[ "$3" = show ] && [ "$5" = paddlepaddle ] && exit 0\n[ "$3" = show ] && exit 1\nexit 0\n')
    python.chmod(0o755)
    return tmp_path


@pytest.mark.slow
def test_setup_env_installs_the_requirements_named_by_REQUIREMENTS(fake_checkout):
    done = subprocess.run(["bash", str(fake_checkout / "scripts" / "setup_env.sh")], capture_output=True, text=True,
                          env=environment.clean(REQUIREMENTS="requirements-gpu.txt"), timeout=120)
    assert done.returncode == 0, done.stderr
    calls = (fake_checkout / ".venv" / "bin" / "calls.log").read_text().splitlines()
    assert "-m pip uninstall --quiet --yes paddlepaddle" in calls, calls
    assert calls[-2].endswith(f"-r {fake_checkout}/requirements-gpu.txt"), calls
    # then the toolkit itself, without its dependencies: the GPU wheel stays
    assert calls[-1].endswith(f"--no-deps -e {fake_checkout}"), calls
    assert (fake_checkout / ".venv" / ".installed-requirements-gpu.txt").exists()


@pytest.mark.slow
def test_setup_env_names_a_missing_requirements_file(fake_checkout):
    done = subprocess.run(["bash", str(fake_checkout / "scripts" / "setup_env.sh")], capture_output=True, text=True,
                          env=environment.clean(REQUIREMENTS="requirements-cuda.txt"), timeout=120)
    assert done.returncode == 2 and "requirements-cuda.txt not found" in done.stderr


@pytest.mark.slow
def test_the_readme_device_check_prints_the_device_the_scripts_use():
    line = re.search(r'^\.venv/bin/python -c "([^"]+)"', README, re.M)
    assert line, "README shows the one-line device check"
    done = subprocess.run([sys.executable, "-c", line.group(1)], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800, env=environment.clean())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == ("gpu" if cuda_available() else "cpu")


def included_pins(path, paddle_file):
    """pins() of a requirements file and every file it includes (`-r`), with
    requirements.txt read as `paddle_file`."""
    found = pins(path)
    for line in open(os.path.join(ROOT, path)):
        if line.startswith("-r "):
            name = line.split()[1]
            found.update(included_pins(paddle_file if name == "requirements.txt" else name, paddle_file))
    return found


def inclusions_of_requirements(path):
    """How many times `path` includes requirements.txt, directly or through other files."""
    count = 0
    for line in open(os.path.join(ROOT, path)):
        if line.startswith("-r "):
            name = line.split()[1]
            count += 1 if name == "requirements.txt" else inclusions_of_requirements(name)
    return count


@pytest.mark.slow
@pytest.mark.parametrize("wheel", ["paddlepaddle-gpu", "paddlepaddle"])
def test_setup_env_adds_test_requirements_to_the_installed_paddle(fake_checkout, wheel):
    """scripts/test.sh on a GPU install: the test requirements (which include
    requirements.txt, also through requirements-index.txt) are installed with the GPU
    wheel's pins in place of the CPU wheel's, and nothing is uninstalled; on a CPU
    install, with the CPU wheel's."""
    for name in os.listdir(ROOT):
        if name.startswith("requirements") and name.endswith(".txt"):
            shutil.copy(os.path.join(ROOT, name), fake_checkout)
    bin_dir = fake_checkout / ".venv" / "bin"
    (bin_dir / "python").write_text(
        '#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls.log"\n'
        f'[ "$3" = show ] && [ "$5" = {wheel} ] && exit 0\n[ "$3" = show ] && exit 1\n'
        '[ "$3" = install ] && [ "$6" = -r ] && cp "$7" "$(dirname "$0")/installed.txt"\nexit 0\n')
    done = subprocess.run(["bash", str(fake_checkout / "scripts" / "setup_env.sh"), "requirements-test.txt"],
                          capture_output=True, text=True, timeout=120, env=environment.clean())
    assert done.returncode == 0, done.stderr
    calls = (bin_dir / "calls.log").read_text().splitlines()
    assert not any("uninstall" in call for call in calls), calls
    installed = [line for line in (bin_dir / "installed.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    expected = included_pins("requirements-test.txt",
                             "requirements-gpu.txt" if wheel == "paddlepaddle-gpu" else "requirements.txt")
    assert {line.split("==")[0]: line.split("==")[1] for line in installed if "==" in line} == expected
    options = [line.split() for line in installed if line.startswith("-")]
    assert options == ([["--extra-index-url", "https://www.paddlepaddle.org.cn/packages/stable/cu126/"]]
                       * inclusions_of_requirements("requirements-test.txt") if wheel == "paddlepaddle-gpu" else [])
    assert (fake_checkout / ".venv" / ".installed-requirements-test.txt").exists()
