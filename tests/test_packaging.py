"""The installable package: pyproject.toml against the requirements files, the wheel's
contents, the `dml` command, the root names of the original example, the import graph."""
import ast
import pathlib
import re
import subprocess
import sys
import zipfile

import environment
import pytest
import tomllib
from packaging.requirements import Requirement

import dml
from dml import console

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
#: requirements file -> the pyproject group whose dependencies it pins exactly
GROUPS = {"requirements.txt": None, "requirements-index.txt": "index", "requirements-onnx.txt": "onnx",
          "requirements-test.txt": "test", "requirements-bench.txt": "bench", "requirements-serve.txt": "serve",
          "requirements-calibrate.txt": "calibrate", "requirements-plot.txt": "plot"}
ROOT_NAMES = ("losses", "models", "reader", "imgtool", "utility")


def exact_pins(name):
    """{package: version} of a requirements file's `package==version` lines."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (version,) = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            pins[requirement.name.lower()] = version
    return pins


def group(name):
    """{package: Requirement} of one pyproject group (None: the core dependencies)."""
    texts = PROJECT["dependencies"] if name is None else PROJECT["optional-dependencies"][name]
    requirements = [Requirement(text) for text in texts]
    return {r.name.lower(): r for r in requirements if r.name != PROJECT["name"]}


@pytest.mark.parametrize("requirements_file", GROUPS)
def test_requirements_pins_and_pyproject_agree(requirements_file):
    pins, declared = exact_pins(requirements_file), group(GROUPS[requirements_file])
    assert set(pins) == set(declared), f"{requirements_file} and pyproject.toml name different packages"
    for package, version in pins.items():
        assert declared[package].specifier.contains(version), \
            f"{package}=={version} of {requirements_file} is outside pyproject.toml's {declared[package]}"


def test_the_version_is_the_packages():
    assert PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dml.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", dml.__version__)
    assert dml.__version__.split(".dev")[0] in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_the_wheel_holds_only_the_dml_package_and_the_dml_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                          env=environment.clean())
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    (dist_info,) = [top for top in tops if top.endswith(".dist-info")]
    assert tops == {"dml", dist_info}, "only the dml package is installed, no generic top-level names"
    assert "dml/losses/arcmarginloss.py" in names and "dml/weights/__init__.py" in names
    assert "dml/serve/page.html" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert re.search(r"^dml = dml\.console:main$", entry_points, re.M)
    assert f"{dist_info}/licenses/LICENSE" in names


def run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=environment.clean(), **kwargs)


def test_dml_command_lists_the_commands_and_its_version(capsys):
    assert console.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dml {dml.__version__}"
    assert console.main([]) == 0
    listing = capsys.readouterr().out
    for name in console.COMMANDS:
        assert f"  {name} " in listing
    assert console.main(["train"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def root_scripts():
    """{root script: the dml command running the same main} for the command scripts."""
    found = {}
    for name, (module, _) in console.COMMANDS.items():
        script = ROOT / (module.rsplit(".", 1)[1] + ".py")
        if module.startswith("dml.commands.") and script.exists():
            found[script.name] = name
    return found


def flags_of(help_text):
    return sorted(set(re.findall(r"--[a-z_]+", help_text)))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(root_scripts()))
def test_each_root_script_and_its_dml_subcommand_share_one_main(script):
    assert len(root_scripts()) == 8
    by_script, by_command = run(script, "--help"), run("-m", "dml", root_scripts()[script], "--help")
    assert by_script.returncode == by_command.returncode == 0, by_script.stderr + by_command.stderr
    assert flags_of(by_script.stdout) == flags_of(by_command.stdout) != []
    assert f"usage: dml {root_scripts()[script]}" in by_command.stdout


def test_root_names_are_the_packages_own_objects():
    import imgtool
    import losses
    import models
    import reader
    import utility
    from dml import losses as dml_losses
    from dml import models as dml_models
    from dml.data import imgtool as dml_imgtool
    from dml.data import reader as dml_reader
    from dml.retrieval import metrics

    for name in dml_losses.__all__:
        assert getattr(losses, name) is getattr(dml_losses, name), name
    for name in dml_models.__all__:
        assert getattr(models, name) is getattr(dml_models, name), name
    for shim, module in ((reader, dml_reader), (imgtool, dml_imgtool)):
        for name in module.__all__:
            assert getattr(shim, name) is getattr(module, name), name
    assert utility.recall_topk is metrics.recall_topk


def test_every_loss_class_of_the_catalog_is_importable_from_the_package():
    from dml import losses

    for entry in losses.SPECS:
        assert getattr(losses, entry.cls.__name__) is entry.cls
        assert entry.cls.__name__ in losses.__all__


@pytest.mark.slow
def test_python_m_losses_prints_the_catalog_table():
    from dml import losses

    done = run("-m", "losses")
    assert done.returncode == 0 and done.stdout.strip() == losses.markdown_table()


def package_modules():
    """{dotted name: path} of every module of the dml package."""
    modules = {}
    for path in (ROOT / "dml").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def module_level_imports(name, path, modules):
    """The dml modules `name` imports when it is imported (top level, if and try blocks)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    statements = [node for top in tree.body
                  for node in (ast.walk(top) if isinstance(top, (ast.If, ast.Try)) else [top])]
    for node in statements:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def test_the_library_imports_no_root_name_and_has_no_import_cycle():
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        imports = module_level_imports(name, path, modules)
        upward = sorted(i for i in imports if i.split(".")[0] in ROOT_NAMES)
        assert not upward, f"{name} imports the root names {upward}: import from dml instead"
        graph[name] = {i for i in imports if i in modules and i != name}
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for child in graph[node]:
            assert state.get(child) != "open", "import cycle: " + " -> ".join(trail + [node, child])
            if child not in state:
                visit(child, trail + [node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_no_sys_path_edits_outside_the_tests():
    offenders = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("tests", ".venv") or "site-packages" in relative.parts:
            continue
        if re.search(r"sys\.path\.(insert|append)", path.read_text()):
            offenders.append(str(relative))
    assert not offenders


@pytest.mark.slow
def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=environment.clean(NO_COLOR="1"))
    assert done.returncode == 0, done.stdout[-3000:]
