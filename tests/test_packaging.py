"""The product wheel holds the bridge and nothing of the sandbox (ARCHITECTURE.md, "The sandbox").

Both wheels are built from this checkout the way ``make`` installs them, with pip and the
hatchling already in the environment: no build isolation, no index, so no network.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = "consent-bridge-sandbox"


def build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    assert importlib.util.find_spec("hatchling"), "hatchling is missing: pip install -e '.[dev]'"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--quiet", "-w", str(out)]
    built = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def requirements(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Every ``Requires-Dist`` of the wheel, by normalised project name."""
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(wheel.read(name).decode())
    found = {}
    for requirement in metadata.get_all("Requires-Dist") or []:
        project = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert project, requirement
        found[re.sub(r"[-_.]+", "-", project.group()).lower()] = requirement
    return found


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(ROOT, tmp_path_factory.mktemp("product"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(ROOT / "sandbox", tmp_path_factory.mktemp("sandbox"))


def test_the_product_wheel_holds_the_bridge_and_no_sandbox(product: zipfile.ZipFile) -> None:
    names = [PurePosixPath(n) for n in product.namelist()]
    tops = {n.parts[0] for n in names} - {"bridge"}
    assert len(tops) == 1 and re.fullmatch(r"consent_bridge-[^-]+\.dist-info", tops.pop())
    modules = {n.with_suffix("").as_posix() for n in names if n.suffix == ".py"}
    assert {"bridge/__init__", "bridge/model", "bridge/cli/app", "bridge/adapters/base"} <= modules
    # The console's and the portal's pages, the files they serve and the portal's compiled
    # translations travel in the wheel: nothing from a CDN.
    files = {n.as_posix() for n in names}
    shipped = {"bridge/web/static/htmx.min.js", "bridge/web/static/console.css",
               "bridge/web/console/templates/base.html", "bridge/web/portal/templates/base.html",
               "bridge/web/portal/locales/nl/LC_MESSAGES/messages.mo",
               "bridge/web/portal/locales/sv/LC_MESSAGES/messages.mo"}  # fmt: skip
    assert shipped <= files
    sandboxed = [
        n.as_posix()
        for n in names
        if {"bridge_sandbox", "sandbox", "emulators"} & set(n.parts)
        or n.stem == "demo"
        or n.stem.startswith(("demo_", "emulator"))
    ]
    assert sandboxed == []


def test_the_product_does_not_depend_on_the_sandbox(product: zipfile.ZipFile) -> None:
    required = requirements(product)
    assert "pydantic" in required  # the metadata was read
    assert SANDBOX not in required, required[SANDBOX]


def test_the_sandbox_wheel_holds_the_emulators_and_the_demo(sandbox: zipfile.ZipFile) -> None:
    names = set(sandbox.namelist())
    assert {
        "bridge_sandbox/__init__.py",
        "bridge_sandbox/demo.py",
        "bridge_sandbox/emulators/hubspot.py",
        "bridge_sandbox/emulators/salesforce.py",
        "bridge_sandbox/emulators/lawful_bases.py",
    } <= names
    assert not [n for n in names if n.startswith("bridge/")]
    assert "consent-bridge" in requirements(sandbox)  # the sandbox depends on the product
