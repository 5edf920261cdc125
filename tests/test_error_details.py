"""Browsers never see a traceback or an exception's text; the server log keeps both (issue 9, item 9).

Streamlit reads ``.streamlit/config.toml`` from the working directory (and next to the main script)
once per process, so every check runs in a subprocess started in the repository root: what is tested
is the project's file as Streamlit's own config machinery loads it, not a value set by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "db_password=hunter2 in /srv/app/secret.txt"

# An uncaught exception in the page body and one in a fragment (the dashboard draws in fragments).
PAGES = {
    "page": f"raise RuntimeError({SECRET!r})",
    "fragment": f"""
import streamlit as st

@st.fragment
def panel():
    raise RuntimeError({SECRET!r})

panel()
""",
}

PROBE = f"""
import json
from streamlit.testing.v1 import AppTest

shown = {{}}
for name, page in {PAGES!r}.items():
    at = AppTest.from_string(page, default_timeout=30).run()
    shown[name] = [{{"message": e.message, "trace": list(e.stack_trace), "type": e.proto.type}} for e in at.exception]
print(json.dumps(shown))
"""


# The dashboard itself, on a database file that is not SQLite: whatever the page shows, as JSON.
APP_PROBE = """
import json
import streamlit as st
from streamlit.testing.v1 import AppTest

at = AppTest.from_file("app.py", default_timeout=30).run()
print(json.dumps({"exceptions": [{"message": e.message, "trace": list(e.stack_trace), "type": e.proto.type}
                                 for e in at.exception],
                  "errors": [e.value for e in at.error]}))
st.cache_resource.clear()  # stops an engine, if one started
"""


def run_in_repo_root(*args: str, home: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    # A private HOME: a developer's ~/.streamlit/config.toml must not decide the outcome.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "STREAMLIT_"))}, "HOME": str(home),
           **env_vars}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_project_config_sets_show_error_details_to_none(tmp_path):
    proc = run_in_repo_root("-m", "streamlit", "config", "show", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    i = lines.index('showErrorDetails = "none"')  # uncommented: set by a file, not the default
    assert lines[i - 1].endswith(str(ROOT / ".streamlit" / "config.toml"))


def test_uncaught_exceptions_show_no_details_in_the_browser_but_are_logged(tmp_path):
    proc = run_in_repo_root("-c", PROBE, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout.splitlines()[-1])
    assert {name: len(elements) for name, elements in shown.items()} == {"page": 1, "fragment": 1}
    for element in shown["page"] + shown["fragment"]:
        assert element["trace"] == [] and element["type"] == ""
        assert "RuntimeError" not in element["message"] and "hunter2" not in element["message"]
        assert "redacted" in element["message"]  # Streamlit's plain, generic text
    # The server log keeps the whole story for the operator.
    assert proc.stderr.count("Traceback") >= 2 and SECRET in proc.stderr


def test_the_dashboard_never_shows_a_traceback_for_a_broken_database(tmp_path):
    """A failure the page does not anticipate ends in a plain message, never in Python's details."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "simulated.sqlite3").write_bytes(b"not a database " * 1000)
    proc = run_in_repo_root("-c", APP_PROBE, home=tmp_path, QUANT_SOURCE="simulated", QUANT_DATA_DIR=str(data))
    assert proc.returncode == 0, proc.stderr
    page = json.loads(proc.stdout.splitlines()[-1])
    assert page["exceptions"] or page["errors"]  # the user is told that something went wrong
    for element in page["exceptions"]:
        assert element["trace"] == [] and element["type"] == "" and "redacted" in element["message"]
    for text in [e["message"] for e in page["exceptions"]] + page["errors"]:
        assert "Traceback" not in text and 'File "' not in text and ", line " not in text  # no stack frames
