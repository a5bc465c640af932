"""environment.yml (Binder, conda users) must install what pyproject.toml says the book needs.

The conda section may hold only Python and pip; everything else comes from PyPI through pip, like
`make setup`. The pip section must provide every core dependency of the package and every
dependency of the extras the chapters need, either by naming it or by installing the package
itself with those extras; pins must agree with constraints.txt.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the book extra (jupyter-book)")
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10")

ROOT = Path(__file__).resolve().parent.parent
#: Extras that the chapters of the book import from (simulation, data handling, widgets, and
#: LiberTEM for chapter 6's UDF section).
BOOK_EXTRAS = ("data", "sim", "book", "live")
#: Conda packages allowed in environment.yml: everything else must come through pip.
CONDA_ALLOWED = {"python", "pip"}


# --------------------------------------------------------------------------------------------
# Helpers: read the two files into comparable sets of normalised names
# --------------------------------------------------------------------------------------------


def load_environment(path: Path = ROOT / "environment.yml") -> dict:
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(env, dict) and "dependencies" in env, f"{path} has no dependencies list"
    return env


def load_pyproject(path: Path = ROOT / "pyproject.toml") -> dict:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def split_dependencies(env: dict) -> tuple[list[str], list[str]]:
    """Return (conda specs, pip lines) of an environment.yml mapping."""
    conda, pip_lines = [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"unexpected mapping in dependencies: {entry}"
            pip_lines.extend(str(line) for line in entry["pip"])
        else:
            conda.append(str(entry))
    return conda, pip_lines


def conda_name_and_version(spec: str) -> tuple[str, str]:
    """Split a conda match spec such as ``python=3.11`` into (name, version part)."""
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip())
    assert match, f"cannot parse conda spec {spec!r}"
    return canonicalize_name(match.group(1)), match.group(2).lstrip("=<>!~ ")


def expand_requirements(requirements: list[str], pyproject: dict) -> set[str]:
    """Normalised names of ``requirements``, expanding the project's own extras recursively."""
    project = pyproject["project"]
    own_name = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    names: set[str] = set()
    pending = list(requirements)
    seen_extras: set[str] = set()
    while pending:
        req = Requirement(pending.pop())
        name = canonicalize_name(req.name)
        if name != own_name:
            names.add(name)
            continue
        for extra in req.extras - seen_extras:
            assert extra in extras, f"pyproject.toml has no extra {extra!r}"
            seen_extras.add(extra)
            pending.extend(extras[extra])
    return names


def required_names(pyproject: dict, book_extras: tuple[str, ...] = BOOK_EXTRAS) -> set[str]:
    """Names the book needs: core dependencies plus those of the book's extras."""
    project = pyproject["project"]
    own = project["name"]
    return expand_requirements(
        list(project["dependencies"]) + [f"{own}[{extra}]" for extra in book_extras], pyproject
    )


def provided_names(pip_lines: list[str], pyproject: dict) -> tuple[set[str], bool]:
    """Names a pip section installs, and whether it installs the local package itself."""
    own = pyproject["project"]["name"]
    requirements, local = [], False
    for raw in pip_lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        editable = re.match(r"^(-e|--editable)(=|\s+)(.*)$", line)
        target = editable.group(3).strip() if editable else line
        if target.startswith((".", "file:")):
            local = True
            extras = re.search(r"\[([^\]]*)\]", target)
            requirements.append(f"{own}[{extras.group(1)}]" if extras else own)
            requirements.extend(pyproject["project"]["dependencies"])
        elif target.startswith("-"):
            continue  # a pip option line such as --extra-index-url
        else:
            requirements.append(target)
    return expand_requirements(requirements, pyproject), local


def pins(lines: list[str]) -> dict[str, SpecifierSet]:
    """Map normalised name -> specifier of every plain requirement line that has one."""
    result = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("-", ".", "file:")):
            continue
        req = Requirement(line)
        if req.specifier:
            result[canonicalize_name(req.name)] = req.specifier
    return result


def missing_from(env: dict, pyproject: dict) -> set[str]:
    """Names the book needs that the environment's pip section does not install."""
    _, pip_lines = split_dependencies(env)
    provided, _ = provided_names(pip_lines, pyproject)
    return required_names(pyproject) - provided


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env() -> dict:
    return load_environment()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return load_pyproject()


def test_conda_section_holds_only_a_pinned_python_and_pip(env, pyproject):
    conda, pip_lines = split_dependencies(env)
    names = {conda_name_and_version(spec)[0] for spec in conda}
    assert names == CONDA_ALLOWED, f"conda section must be only python and pip, got {conda}"
    assert pip_lines, "the pip section is empty: the package and its dependencies come from pip"
    python_version = dict(conda_name_and_version(spec) for spec in conda)["python"]
    assert python_version, "pin Python in environment.yml (e.g. python=3.11): Binder reads it"
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert requires.contains(python_version), (
        f"python={python_version} in environment.yml is outside requires-python {requires}"
    )


def test_book_extras_exist_in_pyproject(pyproject):
    extras = pyproject["project"].get("optional-dependencies", {})
    assert set(BOOK_EXTRAS) <= set(extras), f"pyproject.toml lacks extras {BOOK_EXTRAS}"


def test_pip_section_installs_the_package_and_everything_the_book_needs(env, pyproject):
    _, pip_lines = split_dependencies(env)
    provided, local = provided_names(pip_lines, pyproject)
    assert local, "environment.yml must install this package (e.g. `-e .[data,sim,book]`)"
    missing = required_names(pyproject) - provided
    assert not missing, f"environment.yml does not install {sorted(missing)}"
    # The book needs the executable-book stack and the simulation code in particular.
    for name in ("jupyter-book", "abtem", "hyperspy", "torch", "pyro-ppl", "ipywidgets"):
        assert name in provided, f"environment.yml does not install {name}"


def test_the_coverage_check_finds_a_missing_extra(env, pyproject):
    # Same file, but the package installed without the simulation extra: abTEM must be missed.
    doctored = {
        "dependencies": [
            "python=3.11",
            "pip",
            {"pip": ["torch==2.13.0", "-e .[data,book]"]},
        ]
    }
    missing = missing_from(doctored, pyproject)
    assert {"abtem", "ase"} <= missing
    assert "jupyter-book" not in missing and "hyperspy" not in missing
    assert not missing_from(env, pyproject)


def exact_version(spec: SpecifierSet) -> Version:
    """The version of an exact ``==`` pin (one specifier), else an AssertionError."""
    (only,) = list(spec)
    assert only.operator == "==" and "*" not in only.version, f"{spec} is not an exact pin"
    return Version(only.version)


def test_pins_agree_with_constraints(env):
    _, pip_lines = split_dependencies(env)
    constraint_lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    constraints = pins(constraint_lines)
    assert "torch" in constraints, "constraints.txt no longer pins torch"
    env_pins = pins(pip_lines)
    assert "torch" in env_pins, "environment.yml must pin torch (the CPU build of the same release)"
    # The same release as `make` installs; environment.yml's pin may carry the CPU build's local
    # label ("+cpu"), which constraints.txt (served by a CPU-only index) does not need.
    env_torch, make_torch = exact_version(env_pins["torch"]), exact_version(constraints["torch"])
    assert env_torch.public == make_torch.public, (
        f"environment.yml pins torch {env_torch}, constraints.txt {make_torch}: "
        "pin the same release in both"
    )
    for name, spec in env_pins.items():
        if name in constraints and name != "torch":
            assert spec == constraints[name], (
                f"{name}: environment.yml pins {spec}, constraints.txt {constraints[name]}"
            )


#: Where CPU-only torch wheels come from; PyPI's own Linux torch wheels depend on CUDA.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def pip_index_urls(pip_lines: list[str]) -> list[str]:
    """The index URLs that pip option lines (--index-url, --extra-index-url, -i) add."""
    urls = []
    for raw in pip_lines:
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"^(--extra-index-url|--index-url|-i)(=|\s+)(\S+)$", line)
        if match:
            urls.append(match.group(3).rstrip("/"))
    return urls


def torch_is_cpu_only(pip_lines: list[str]) -> tuple[bool, str]:
    """Whether a pip section installs a CPU-only torch build, and why not if it does not.

    A CPU build is an exact pin whose local version label is ``cpu`` (PyTorch's name for its CPU
    wheels), fetched from PyTorch's CPU index; PyPI's plain ``torch`` on Linux depends on the
    CUDA libraries (several GB), which Binder has no GPU for.
    """
    spec = pins(pip_lines).get("torch")
    if spec is None:
        return False, "torch is not pinned: pip would take PyPI's CUDA build"
    version = exact_version(spec)
    if version.local != "cpu":
        return False, f"torch=={version} is not the CPU build (pin torch=={version.public}+cpu)"
    if CPU_TORCH_INDEX not in pip_index_urls(pip_lines):
        return False, f"the CPU build needs the line `--extra-index-url {CPU_TORCH_INDEX}`"
    return True, ""


def test_binder_gets_a_cpu_only_torch(env):
    _, pip_lines = split_dependencies(env)
    ok, why = torch_is_cpu_only(pip_lines)
    assert ok, f"environment.yml: {why}"


def test_the_cpu_check_rejects_the_cuda_build():
    index = f"--extra-index-url {CPU_TORCH_INDEX}"
    assert torch_is_cpu_only([index, "torch==2.13.0+cpu", "-e .[book]"])[0]
    assert not torch_is_cpu_only(["torch==2.13.0", "-e .[book]"])[0]  # PyPI's CUDA wheel
    assert not torch_is_cpu_only([index, "torch==2.13.0", "-e .[book]"])[0]  # CUDA if newest
    assert not torch_is_cpu_only(["torch==2.13.0+cpu"])[0]  # not on PyPI: needs the index
    assert not torch_is_cpu_only([index, "torch==2.13.0+cu126"])[0]
    assert not torch_is_cpu_only([index, "-e .[book]"])[0]  # unpinned


# --------------------------------------------------------------------------------------------
# Colab: the set-up cell of every chapter
# --------------------------------------------------------------------------------------------
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COLAB_REPO = "https://github.com/rrvae-nb/rrvae-nb"


def colab_cell(path: Path) -> str:
    import json

    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    assert "google.colab" in "".join(cells[0]["source"]), f"{path.name}: no Colab set-up first"
    return "".join(cells[0]["source"])


def test_colab_cell_clones_the_repository_installs_it_and_points_the_data_at_it(monkeypatch):
    # A pip install from git has no data/ folder (shipped datasets, cached weights): the cell must
    # clone the repository, install the package from the clone and tell rrvae_nb where data/ is.
    # Run it as IPython would on Colab, with the shell and %pip calls recorded instead of run.
    import json
    import os
    import sys
    import types

    from IPython.core.inputtransformer2 import TransformerManager

    from rrvae_nb import datasets

    calls = []

    class Shell:
        def system(self, cmd):
            calls.append(("!", cmd))

        def run_line_magic(self, name, line, **_):
            calls.append((name, line))

    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv(datasets.DATA_ENV, "restored after the test")
    code = TransformerManager().transform_cell(colab_cell(CHAPTERS[0]))
    exec(compile(code, "colab-cell", "exec"), {"get_ipython": Shell})
    clone = "/content/rrvae-nb"
    if not os.path.isdir(clone):
        assert calls[0][0] == "!" and calls[0][1].split()[:2] == ["git", "clone"]
        assert COLAB_REPO in calls[0][1] and calls[0][1].split()[-1] == clone
        calls = calls[1:]
    assert calls == [("pip", f'install --quiet "{clone}[data,sim]"')]
    assert datasets.default_data_dir() == Path(clone) / "data"
    # the Open-in-Colab badge opens the chapter from the same repository
    for p in CHAPTERS:
        first = "".join(json.loads(p.read_text(encoding="utf-8"))["cells"][0]["source"])
        repo = COLAB_REPO.split("github.com/")[1]
        assert f"colab.research.google.com/github/{repo}/blob/main/notebooks/{p.name}" in first
