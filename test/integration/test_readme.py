"""The README's configuration table is generated from the binary's key tables: keep them equal."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_readme_config_table_matches_binary(chanced_bin):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    table = subprocess.run([chanced_bin, "config", "markdown"], capture_output=True, text=True,
                           env=env, check=True).stdout.strip()
    text = (ROOT / "README.md").read_text()
    begin = text.index("\n", text.index("<!-- BEGIN CONFIG TABLE")) + 1
    end = text.index("<!-- END CONFIG TABLE -->")
    assert text[begin:end].strip() == table, (
        "README.md's configuration table is stale: run tools/update_readme_config.sh")


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile and "\ntest:" in makefile
