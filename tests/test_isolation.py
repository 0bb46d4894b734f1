"""The suite reads neither the user's ``.env`` nor the service's variables from their shell.

A user who followed the README has a ``.env`` next to the Makefile (here: the folder the
suite is started from) holding ``METRICS_TOKEN`` and friends, and may have exported some
of them too. A representative test, run by a real pytest from that folder, still sees
the defaults: ``tests/conftest.py`` runs each test in an empty home with those
variables removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER_SETTINGS = (
    "METRICS_TOKEN=users-metrics-token\n"
    "API_TOKEN=users-api-token\n"
    "ADMIN_TOKEN=users-admin-token\n"
    "DATABASE_URL=sqlite:////nonexistent/folder/contacts.db\n"
    "TAWKTO_REQUIRED_FIELDS=email\n"  # malformed: every service start would fail
    "FORM_RATE_LIMIT=1\n"
)
REPRESENTATIVE = [
    "tests/test_metrics.py::test_metrics_are_off_without_a_token_and_bearer_protected_with_one",
    "tests/test_settings.py::test_defaults_use_an_embedded_sqlite_file",
]


def test_a_users_dotenv_and_environment_do_not_reach_the_tests(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(USER_SETTINGS)
    shell = {k: v for k, v in os.environ.items() if k != "CONTACT_ADAPTER_HOME"}
    shell.update(METRICS_TOKEN="exported-metrics-token", LOG_LEVEL="loud", PORT="not-a-port")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
        + [str(ROOT / test) for test in REPRESENTATIVE],
        cwd=project,
        env=shell,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
