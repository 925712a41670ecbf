"""Turn a schedule and the `sparkling train` flags into the plan of one run.

The plan's schedule is the one the Grower receives, so that the Grower and the training loop agree
on the run: `--steps` replaces the schedule's train length, and the effective base learning
rate is written into it. That rate is the schedule's `lr` line with any `--lr`, `--min-lr`,
`--warmup` flag replacing its part, or the defaults where the schedule has no `lr` line.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sparkling_ir.models.nanogpt import GPTConfig
from sparkling_ir.schedule import load_schedule, resolve_event_steps, resolve_train_steps
from sparkling_ir.schedule.ir import CosineLR, RewarmupLR, Schedule, TrainSteps
from sparkling_ir.train.counts import count_noun
from sparkling_ir.train.data import VOCAB_SIZE, Corpus, max_validation_batches
from sparkling_ir.train.loop import TrainConfig
from sparkling_ir.train.lr import WarmupCosine

DEFAULT_PEAK_LR = 3e-3
DEFAULT_MIN_LR_FRACTION = 0.1  # of the peak
DEFAULT_WARMUP_FRACTION = 0.05  # of the run
EVALS_PER_RUN = 20  # validation evaluations when --eval-every is not given
DEFAULT_EVAL_BATCHES = 8
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class UsageError(Exception):
    """A command-line value is invalid; `sparkling train` prints it and exits with status 2."""


@dataclass(frozen=True)
class Plan:
    """One run: the schedule as the Grower receives it, the training config, the event steps."""

    schedule: Schedule
    config: TrainConfig
    event_steps: tuple[int, ...]

    def describe(self, corpus: Corpus) -> dict[str, Any]:
        """Return the run's settings, for `metrics.json`."""
        config = self.config
        return {
            "model": asdict(config.model),
            "steps": config.steps,
            "batch_size": config.batch_size,
            "block_size": config.model.block_size,
            "tokens_per_step": config.tokens_per_step,
            "lr": asdict(config.lr),
            "weight_decay": config.weight_decay,
            "betas": list(config.betas),
            "grad_clip": config.grad_clip,
            "seed": config.seed,
            "device": config.device,
            "eval_batches": config.eval_batches,
            "eval_interval": config.eval_interval,
            "event_steps": list(self.event_steps),
            "corpus": {
                "source": corpus.source,
                "train_bytes": int(corpus.train.numel()),
                "validation_bytes": int(corpus.validation.numel()),
            },
            "schedule": self.schedule.without_spans().model_dump(mode="json", exclude_none=True),
        }


def read_schedule(path: Path) -> Schedule:
    """Load the schedule at `path`.

    Raises `ScheduleError` if the file is missing, unreadable or invalid, located at line 1
    when it cannot be read, as `sparkling check` and `sparkling plan` report it.
    """
    return load_schedule(path)


def check_flags(args: argparse.Namespace) -> None:
    """Check the flags that need no schedule or text, so that a run fails before any work.

    Raises `UsageError` for a `--device` that torch cannot train on, or a `--min-lr` above
    `--lr`.
    """
    check_device(args.device)
    if args.lr is not None and args.min_lr is not None and args.min_lr > args.lr:
        raise UsageError(
            f"--min-lr {args.min_lr:g} is above --lr {args.lr:g}; the cosine decays from "
            "--lr down to --min-lr, so pass a --min-lr at most --lr"
        )


def make_plan(schedule: Schedule, args: argparse.Namespace) -> Plan:
    """Resolve `schedule` and the parsed flags into a `Plan`.

    Raises `UsageError` for an invalid flag value and `ScheduleError` for a schedule that does
    not fit the run (an event outside it, a re-warmup that outlasts it). `check_flags` checks
    the device, and `fit_eval_batches` fits the validation batches to the text, so neither
    is done here.
    """
    model = model_config(args)
    tokens_per_step = args.batch_size * args.block_size
    if args.steps is not None:
        schedule = schedule.model_copy(update={"train": TrainSteps(steps=args.steps)})
    steps = resolve_train_steps(schedule, tokens_per_step)
    base_lr = effective_lr(schedule.base_lr, args, steps)
    lr = warmup_cosine(base_lr, steps)
    schedule = schedule.model_copy(update={"base_lr": base_lr})
    # Raises a located ScheduleError for events outside the run, out of order, or with a
    # re-warmup that outlasts it.
    event_steps = resolve_event_steps(schedule, tokens_per_step)

    config = TrainConfig(
        model=model,
        batch_size=args.batch_size,
        steps=steps,
        lr=lr,
        seed=args.seed,
        device=args.device,
        eval_batches=args.eval_batches or DEFAULT_EVAL_BATCHES,
        eval_interval=args.eval_every or max(1, steps // EVALS_PER_RUN),
    )
    check_lr_fits_float32(schedule, base_lr.peak, config.betas[0])
    return Plan(schedule=schedule, config=config, event_steps=tuple(event_steps))


def fit_eval_batches(plan: Plan, corpus: Corpus, requested: int | None) -> Plan:
    """Set the number of validation batches to what the holdout of `corpus` can fill.

    Without `requested` (no `--eval-batches`), that is `DEFAULT_EVAL_BATCHES` or the maximum if
    lower. Raises `UsageError` if `requested` is above the maximum, because every evaluation
    would then measure the same held-out bytes again (and take longer for nothing).
    """
    config = plan.config
    holdout = int(corpus.validation.numel())
    available = max_validation_batches(holdout, config.batch_size, config.model.block_size)
    if requested is None:
        count = min(DEFAULT_EVAL_BATCHES, available)
    elif requested > available:
        raise UsageError(
            f"--eval-batches {requested} is more than the validation holdout provides: its "
            f"{holdout:,} bytes fill at most {count_noun(available, 'batch', 'batches')} of "
            f"{config.batch_size} non-overlapping windows (block size "
            f"{config.model.block_size}); pass --eval-batches {available} or fewer"
        )
    else:
        count = requested
    return replace(plan, config=replace(config, eval_batches=count))


def check_lr_fits_float32(schedule: Schedule, peak: float, beta1: float) -> None:
    """Raise `UsageError` if AdamW's step size would overflow float32 in this run.

    The largest rate is the peak times the largest re-warmup factor of new entries. AdamW
    divides the rate by its bias correction `1 - beta1 ** t`, which is smallest (`1 - beta1`)
    at the first update of a parameter, and torch converts the result to float32.
    """
    factors = [
        event.lr.peak_factor for event in schedule.events if isinstance(event.lr, RewarmupLR)
    ]
    largest = peak * max([1.0, *factors])
    limit = FLOAT32_MAX * (1.0 - beta1)
    if largest <= limit:
        return
    source = f"peak {peak:g}" if largest == peak else (
        f"peak {peak:g} x re-warmup factor {max(factors):g}"
    )
    raise UsageError(
        f"learning rate {largest:.4g} ({source}) is too large: AdamW divides it by "
        f"1 - beta1 = {1.0 - beta1:g}, which overflows float32 above {limit:.4g}; "
        "pass a smaller --lr or lower the peak in the schedule's lr line"
    )


def model_config(args: argparse.Namespace) -> GPTConfig:
    try:
        return GPTConfig(
            vocab_size=VOCAB_SIZE,
            block_size=args.block_size,
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            n_head=args.n_head,
            head_dim=args.head_dim,
            ffn_dim=args.ffn_dim or 4 * args.n_embd,
        )
    except ValueError as error:
        raise UsageError(f"invalid model size: {error}") from error


def check_device(device: str) -> None:
    """Raise `UsageError` unless torch can allocate a tensor with data on `device`."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"invalid --device {device!r}: {error}") from error
    if parsed.type == "meta":
        raise UsageError(
            f"--device {device}: the meta device stores shapes but no data, so no model can "
            "train on it; use --device cpu or cuda"
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device}: CUDA is not available to torch {torch.__version__}; "
            "use --device cpu"
        )
    try:
        torch.zeros(1, device=parsed)
    # torch 2.13 (CPU build, Linux) raised AssertionError for xpu and mtia, which it was
    # built without, NotImplementedError for mps and vulkan, and ImportError for hpu.
    # RuntimeError is its usual type for a device it cannot use.
    except (AssertionError, NotImplementedError, ImportError, RuntimeError) as error:
        raise UsageError(
            f"--device {device}: torch {torch.__version__} cannot allocate a tensor on it "
            f"({first_sentence(str(error))}); use --device cpu"
        ) from error


def first_sentence(text: str) -> str:
    """Return the first sentence of the first line of `text`, for a one-line message."""
    line = text.strip().split("\n", 1)[0]
    return line.split(". ", 1)[0].rstrip(".")


def effective_lr(base_lr: CosineLR | None, args: argparse.Namespace, steps: int) -> CosineLR:
    """Return the schedule's lr line with the given flags replacing their parts.

    Without an lr line: peak `--lr` (3e-3), minimum `--min-lr` (0.1 x peak), warmup
    `--warmup` (5% of the run).
    """
    if base_lr is None:
        peak = args.lr if args.lr is not None else DEFAULT_PEAK_LR
        base_lr = CosineLR(
            peak=peak,
            min=DEFAULT_MIN_LR_FRACTION * peak,
            warmup_steps=round(DEFAULT_WARMUP_FRACTION * steps),
        )
    flags = {"peak": args.lr, "min": args.min_lr, "warmup_steps": args.warmup}
    update: dict[str, Any] = {}
    for name, value in flags.items():
        if value is not None:
            # The value no longer comes from the file, so no message should point there.
            update[name] = value
            update[f"{name}_span"] = None
    return base_lr.model_copy(update=update)


def warmup_cosine(base_lr: CosineLR, steps: int) -> WarmupCosine:
    try:
        return WarmupCosine(
            peak=base_lr.peak, min=base_lr.min, warmup_steps=base_lr.warmup_steps,
            total_steps=steps,
        )
    except ValueError as error:
        raise UsageError(
            f"invalid learning-rate schedule: {error}; check the schedule's lr line and "
            "--lr, --min-lr, --warmup"
        ) from error

