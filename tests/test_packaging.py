"""The wheel ships the grammar, and an installed package finds it without the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_grammar_and_parses_from_it(tmp_path: Path) -> None:
    # Build from a copy, so that setuptools writes nothing into the checkout, and with the
    # setuptools of this environment (--no-build-isolation), so that no index is needed.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--quiet",
         "--wheel-dir", str(tmp_path / "wheel"), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert "sparkling_ir/grammar/grow.lark" in archive.namelist()
        archive.extractall(tmp_path / "installed")
    script = (
        "import sparkling_ir, sys\n"
        "assert sparkling_ir.__file__.startswith(sys.argv[1]), sparkling_ir.__file__\n"
        "s = sparkling_ir.parse_schedule('schedule s {\\n  train 10 steps\\n}\\n')\n"
        "print(s.name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "installed")],
        check=True, capture_output=True, text=True, cwd=tmp_path, env=env,
    )
    assert result.stdout.strip() == "s"
