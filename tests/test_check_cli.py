"""`sparkling check`: exit status, `FILE: ok` lines, located errors on stderr, `--print`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparkling_ir.cli import main
from sparkling_ir.schedule import parse_schedule

VALID = "schedule s {\n    train 1000 steps\n    at 50% { widen ffn x2 }\n}\n"
INVALID = "schedule s {\n    train 1000 steps\n    at 150% { widen ffn x1 }\n}\n"


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_file_prints_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "good.grow", VALID)

    status = main(["check", path])

    captured = capsys.readouterr()
    assert status == 0
    assert captured.out == f"{path}: ok\n"
    assert captured.err == ""


def test_invalid_file_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.grow", INVALID)

    status = main(["check", path])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}:3:8: error: an event time given as a percentage of training must be above 0% "
        "and below 100%, got 150%",
        "        at 150% { widen ffn x1 }",
        "           ^",
        f"{path}:3:25: error: widening ffn by x1 leaves it unchanged; use a factor greater than 1",
        "        at 150% { widen ffn x1 }",
        "                            ^",
    ]


def test_every_file_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.grow", INVALID)
    syntax = write(tmp_path, "syntax.grow", "schedule s { train 10 }")
    good = write(tmp_path, "good.grow", VALID)
    missing = str(tmp_path / "missing.grow")

    status = main(["check", bad, syntax, missing, good])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == f"{good}: ok\n"
    error_heads = [line for line in captured.err.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in error_heads] == [
        f"{bad}:3:8", f"{bad}:3:25", f"{syntax}:1:23", f"{missing}:1:1",
    ]
    assert "cannot read the schedule file: No such file or directory" in error_heads[-1]


def test_print_writes_canonical_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write(tmp_path, "a.grow", VALID)
    second = write(tmp_path, "b.grow", VALID.replace("schedule s", "schedule t"))

    status = main(["check", "--print", first, second])

    captured = capsys.readouterr()
    assert status == 0
    body = (
        "    train 1000 steps\n"
        "\n"
        "    at 50% {\n"
        "        widen ffn x2\n"
        "        init sparkling\n"
        "        optimizer reset new\n"
        "        lr new rewarmup 250 steps to 1.3x\n"
        "    }\n"
        "}\n"
    )
    assert captured.out == f"# {first}\nschedule s {{\n{body}\n# {second}\nschedule t {{\n{body}"


def test_printed_form_is_valid_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.grow", VALID)

    main(["check", "--print", path])

    assert parse_schedule(capsys.readouterr().out).name == "s"


def test_check_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check"])

    assert caught.value.code == 2
    assert "FILE" in capsys.readouterr().err


def test_module_entry_point(tmp_path: Path) -> None:
    good = write(tmp_path, "good.grow", VALID)
    bad = write(tmp_path, "bad.grow", INVALID)

    result = subprocess.run(
        [sys.executable, "-m", "sparkling_ir", "check", good, bad],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == f"{good}: ok\n"
    assert f"{bad}:3:8: error: " in result.stderr
    assert "Traceback" not in result.stderr
