"""Schedule IR to canonical `.grow` text: the schedule IR printing itself.

The canonical form is stable and diff-friendly. It has one statement per line and four-space
indents, `train` first, then the base `lr`, then each event after a blank line. Inside an
event the `widen` statements keep their order, followed by `init`, `optimizer` and `lr`,
which are written out even when they are the defaults. Numbers take their shortest exact
form (`6e-4`, `50%`, `2M tokens`). Comments are not kept, because the IR has none.

For every valid schedule `s`, `parse_schedule(format_schedule(s))` equals `s` apart from
spans; a test checks this on generated schedules. An invalid schedule (a fraction of 2, an
infinite factor) is printed as faithfully as the language allows, and may not parse back.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal

from sparkling_ir.schedule.ir import (
    AtFraction,
    AtStep,
    CosineLR,
    GrowthEvent,
    InheritLR,
    LRPolicy,
    Schedule,
    ToSize,
    TrainLength,
    TrainSteps,
    Trigger,
    Widen,
)

INDENT = "    "

# Exact for any float's shortest repr (at most 17 significant digits) divided by 100.
DECIMAL_CONTEXT = Context(prec=60)

_SUFFIXES = (("B", 9), ("M", 6), ("k", 3))  # suffix and power of ten
_OPTIMIZER_TEXT = {
    "reset_new": "optimizer reset new",
    "reset_all": "optimizer reset all",
    "copy": "optimizer copy",
}


def format_schedule(schedule: Schedule) -> str:
    """Return the canonical `.grow` text of `schedule`, ending in a newline."""
    lines = [f"schedule {schedule.name} {{", INDENT + _format_train(schedule.train)]
    if schedule.base_lr is not None:
        lines.append(INDENT + _format_base_lr(schedule.base_lr))
    for event in schedule.events:
        lines.append("")
        lines += [INDENT + line for line in _format_event(event)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_trigger(trigger: Trigger) -> str:
    """Return the text after `at`: `step 2000`, `50%` or `1M tokens`."""
    if isinstance(trigger, AtStep):
        return f"step {trigger.step}"
    if isinstance(trigger, AtFraction):
        return format_fraction(trigger.fraction)
    return f"{format_tokens(trigger.tokens)} tokens"


def format_tokens(count: int) -> str:
    """Write a token count with the largest suffix that leaves at most one decimal digit:
    `2M`, `1.5M`, `250k`, or the plain integer (`1234567`)."""
    for suffix, power in _SUFFIXES:
        unit = 10**power
        if abs(count) >= unit and count * 10 % unit == 0:
            return f"{_format_decimal(Decimal(count).scaleb(-power))}{suffix}"
    return str(count)


def format_fraction(fraction: float) -> str:
    """Write a fraction as a percentage (`50%`, `33.3%`) when that is exact with at most two
    decimals, else as a decimal (`0.123456`)."""
    if math.isfinite(fraction):
        percent = Decimal(repr(fraction)).scaleb(2, DECIMAL_CONTEXT).normalize(DECIMAL_CONTEXT)
        exponent = percent.as_tuple().exponent
        assert isinstance(exponent, int)  # finite numbers have an integer exponent
        exact = float(percent.scaleb(-2, DECIMAL_CONTEXT)) == fraction
        if exponent >= -2 and exact:
            return f"{_format_decimal(percent)}%"
    return format_real(fraction)


def format_real(value: float) -> str:
    """Write a float in its shortest exact form: `2`, `1.3`, `0.05`, `3e-3`.

    Values under 0.01 (learning rates, mostly) or from 1e16 up use an exponent. Infinities
    and NaN, which the language has no way to write, come out as Python writes them.
    """
    if not math.isfinite(value):
        return repr(value)
    number = Decimal(repr(value))
    if number == 0:
        return "0"
    if number.adjusted() < -2 or number.adjusted() > 15:
        return format(number.normalize(DECIMAL_CONTEXT), "e")
    return _format_decimal(number)


def _format_decimal(number: Decimal) -> str:
    """Write a decimal without exponent or trailing zeros: `2`, `1.5`, `100`."""
    return format(number.normalize(DECIMAL_CONTEXT), "f")


# ---- statements -------------------------------------------------------------------------------


def _format_train(train: TrainLength) -> str:
    if isinstance(train, TrainSteps):
        return f"train {train.steps} steps"
    return f"train {format_tokens(train.tokens)} tokens"


def _format_base_lr(lr: CosineLR) -> str:
    text = f"lr cosine peak {format_real(lr.peak)} min {format_real(lr.min)}"
    if lr.warmup_steps != 0:
        text += f" warmup {lr.warmup_steps} steps"
    return text


def _format_event(event: GrowthEvent) -> list[str]:
    body = [_format_widen(widen) for widen in event.widens]
    body += [
        f"init {event.init.method}",
        _OPTIMIZER_TEXT[event.optimizer.kind],
        _format_new_lr(event.lr),
    ]
    return [
        f"at {format_trigger(event.trigger)} {{",
        *(INDENT + line for line in body),
        "}",
    ]


def _format_widen(widen: Widen) -> str:
    if isinstance(widen.amount, ToSize):
        return f"widen {widen.axis} to {widen.amount.size}"
    return f"widen {widen.axis} x{format_real(widen.amount.factor)}"


def _format_new_lr(lr: LRPolicy) -> str:
    if isinstance(lr, InheritLR):
        return "lr new same"
    return f"lr new rewarmup {lr.warmup_steps} steps to {format_real(lr.peak_factor)}x"
