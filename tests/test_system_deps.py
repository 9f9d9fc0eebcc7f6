"""`make test` on a fresh machine: the Debian packages the tests need are installed, or named in one line.

The Makefile's ``system-deps`` target runs here against a PATH of stand-in commands (``id``, ``sudo``,
``apt-get``), so neither the machine's packages nor its sudo rights are touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fake_path(tmp_path: Path, *, uid: int, sudo_ok: bool) -> tuple[str, Path]:
    """A bin folder with the shell tools make needs, stand-ins for id/sudo/apt-get, and no chromium/msgfmt/redis-server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "make", "env", "true"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run make"
        (bin_dir / tool).symlink_to(found)
    log = tmp_path / "apt.log"
    scripts = {
        "id": f"#!/bin/sh\necho {uid}\n",
        "sudo": "#!/bin/sh\n" + ('[ "$1" = -n ] && shift\nexec "$@"\n' if sudo_ok else "exit 1\n"),
        "apt-get": f'#!/bin/sh\necho "$@" >> {log}\n',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return str(bin_dir), log


def system_deps(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "system-deps"], cwd=ROOT, env={**os.environ, "PATH": path}, capture_output=True, text=True,
        timeout=60, executable=shutil.which("make"),
    )


def test_without_rights_it_stops_with_the_one_command_to_run(tmp_path):
    path, log = fake_path(tmp_path, uid=1000, sudo_ok=False)
    result = system_deps(path)
    assert result.returncode != 0
    assert "run: sudo apt-get install -y chromium fonts-dejavu-core gettext redis-server" in result.stderr, result.stderr
    assert not log.exists(), "nothing is installed without the rights to"


@pytest.mark.parametrize(("uid", "sudo_ok"), [(0, False), (1000, True)])
def test_as_root_or_with_sudo_it_installs_what_is_missing(tmp_path, uid, sudo_ok):
    path, log = fake_path(tmp_path, uid=uid, sudo_ok=sudo_ok)
    result = system_deps(path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].endswith("update -qq")
    assert calls[1].split()[-4:] == ["chromium", "fonts-dejavu-core", "gettext", "redis-server"], calls
