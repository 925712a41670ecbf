"""`sparkling axes` and `sparkling plan` on the bundled GPT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkling_ir.cli import main

SCHEDULES = Path(__file__).resolve().parent.parent / "schedules"


def test_axes_table_lists_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["axes", "--n-layer", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["axis", "role", "size", "fan-out", "fan-in", "elementwise", "status"]
    assert lines[1].split()[:3] == ["hidden", "hidden", "64"]
    assert lines[2].split()[:3] == ["blocks.0.mlp:ffn", "ffn", "256"]
    assert lines[3].split()[:3] == ["blocks.0.attn:heads", "heads", "4"]


def test_axes_json_has_members(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["axes", "--n-layer", "1", "--format", "json"]) == 0
    axes = json.loads(capsys.readouterr().out)
    hidden = next(a for a in axes if a["role"] == "hidden")
    members = {(m["param"], m["dim"]): m["tags"] for m in hidden["members"]}
    assert members[("blocks.0.attn.c_attn.weight", 1)] == ["fan_in"]
    assert members[("blocks.0.ln_1.weight", 0)] == ["elementwise"]
    assert hidden["frozen"] == []


def test_axes_rejects_invalid_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["axes", "--n-head", "0"]) == 2
    assert "--n-head must be a positive integer, got 0" in capsys.readouterr().err


def test_plan_prints_each_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SCHEDULES / "tinygpt_2x.grow"), "--n-layer", "1"]) == 0
    out = capsys.readouterr().out
    assert "  axis   hidden (hidden): 64 -> 128" in out
    assert "  output lm_head x 0.5 (tied wte.weight)" in out
    assert "  param  blocks.0.mlp.c_proj.weight [64, 256] -> [128, 512]" in out


def test_plan_reports_schedule_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "bad.grow"
    schedule.write_text("schedule bad {\n  train 100 steps\n  at step 10 {\n    widen hidden x1.7\n"
                        "    lr new same\n  }\n}\n")
    assert main(["plan", str(schedule)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{schedule}:4:5: error: widen hidden x1.7 gives 108.8")
