"""The shape the architecture promises, checked on the code itself."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.adapters.registry import VENDORS

PACKAGE = Path(__file__).resolve().parents[1] / "bridge"


def test_no_product_code_outside_a_vendor_folder_names_a_vendor() -> None:
    """Adding a CRM touches its folder and the registry, nothing else: every other module
    (code, comments and docstrings alike) is vendor-neutral."""
    vendor_folders = {PACKAGE / "adapters" / name for name in VENDORS}
    allowed = {PACKAGE / "adapters" / "registry.py"}
    names = re.compile("|".join(re.escape(name) for name in VENDORS), re.IGNORECASE)
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in allowed and not any(folder in path.parents for folder in vendor_folders)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if names.search(line)
    ]
    assert found == []


def test_the_scan_sees_every_vendor_folder() -> None:
    """The scan above can fail: each registered vendor's folder exists and names itself."""
    for name in VENDORS:
        folder = PACKAGE / "adapters" / name
        assert any(name in p.read_text().lower() for p in folder.glob("*.py")), folder
