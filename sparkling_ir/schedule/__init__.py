"""The schedule language: `.grow` text to a validated `Schedule` IR, and back.

    schedule = load_schedule("schedules/hidden_2x.grow")
    print(format_schedule(schedule))                  # canonical text
    resolve_event_steps(schedule, tokens_per_step=8192)   # (2000,)

The package follows the pipeline: `syntax` (text to lark tree, syntax errors), `parse` (tree
to IR), `validate` (semantic rules), `resolve` (event times in steps), `format` (IR to
text), and `cli` (the `sparkling check` command). The language is described in
`docs/language.md` and its grammar in `grammar/grow.lark`.
"""

from sparkling_ir.schedule.format import format_schedule
from sparkling_ir.schedule.parse import load_schedule, parse_schedule
from sparkling_ir.schedule.resolve import resolve_event_steps, resolve_train_steps
from sparkling_ir.schedule.validate import check_schedule, validate_schedule

__all__ = [
    "check_schedule",
    "format_schedule",
    "load_schedule",
    "parse_schedule",
    "resolve_event_steps",
    "resolve_train_steps",
    "validate_schedule",
]
