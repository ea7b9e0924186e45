"""The systemd units in deploy/systemd pass `systemd-analyze verify` and stay hardened.

`verify` checks that ExecStart binaries exist, and the units name the install location
(/opt/ferrumdeck/venv); the copies verified here point at this checkout's venv instead,
which changes nothing else in them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/ferrumdeck/venv/bin/ferrumdeck"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")


@pytest.fixture
def unit_copies(tmp_path: Path) -> Path:
    here = Path(sys.executable).parent / "ferrumdeck"
    assert here.exists(), "the ferrumdeck entry point is not installed in this venv"
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert INSTALLED in text
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(here)))
    return tmp_path


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_units_verify_cleanly(unit_copies: Path) -> None:
    names = [
        "ferrumdeck-migrate.service",
        "ferrumdeck-gateway.service",
        "ferrumdeck-worker@1.service",
    ]
    result = _analyze("verify", "--man=no", *names, cwd=unit_copies)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings to verify; treat any about our units as errors.
    complaints = [line for line in result.stderr.splitlines() if "ferrumdeck" in line]
    assert complaints == []


@pytest.mark.parametrize(
    "unit",
    ["ferrumdeck-migrate.service", "ferrumdeck-gateway.service", "ferrumdeck-worker@1.service"],
)
def test_units_are_hardened(unit_copies: Path, unit: str) -> None:
    result = _analyze("security", "--offline=yes", "--man=no", unit, cwd=unit_copies)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout
