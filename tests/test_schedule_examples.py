"""The example schedules in schedules/: each is documented, valid, canonical in meaning, and
resolves to steps for the bundled GPT's default of 2048 tokens per step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparkling_ir.cli import main
from sparkling_ir.schedule import format_schedule, load_schedule, parse_schedule, resolve_event_steps

SCHEDULES = Path(__file__).resolve().parent.parent / "schedules"
EXAMPLES = sorted(SCHEDULES.glob("*.grow"))
TOKENS_PER_STEP = 16 * 128  # the bundled GPT's default batch size x sequence length


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_passes_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check", str(path)])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out == f"{path}: ok\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_opens_with_title_and_paragraph(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[: lines.index(next(line for line in lines if not line.startswith("#")))]

    assert header[0].startswith(f"# {path.stem}: ")
    assert header[1] == "#"
    assert len(header) >= 3  # a paragraph after the title


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_name_matches_file(path: Path) -> None:
    assert load_schedule(path).name == path.stem


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_round_trips_through_format(path: Path) -> None:
    schedule = load_schedule(path)

    reparsed = parse_schedule(format_schedule(schedule), file=str(path))

    assert reparsed.without_spans() == schedule.without_spans()


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_resolves_to_steps(path: Path) -> None:
    schedule = load_schedule(path)

    steps = resolve_event_steps(schedule, TOKENS_PER_STEP)

    assert len(steps) == len(schedule.events)
    assert list(steps) == sorted(set(steps))


def test_examples_pass_check_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sparkling_ir", "check", *map(str, EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: ok" for path in EXAMPLES]
