"""The training loop of `sparkling train`: the bundled GPT, AdamW, and a Grower.

    result = train(schedule, corpus, config, observer=observer)

`train` builds the model from `config.model`, trains it for `config.steps` updates on batches
from `corpus`, and lets the grower apply the schedule's growth events after the updates it
names. Before every update the loop sets the base learning rate `config.lr` on the optimizer's
own param groups. After growth, the grower gives new entries their own learning rate.

The loop prints nothing: progress goes to an `Observer`, and the numbers come back in a
`RunResult`. With the same config, schedule and seed, two runs produce the same losses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from sparkling_ir.compile.emit import count_parameters
from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.runtime import Grower, GrowthReport
from sparkling_ir.schedule.ir import Schedule
from sparkling_ir.train.data import BatchStream, Corpus, validation_batches
from sparkling_ir.train.flops import flops_per_token
from sparkling_ir.train.lr import WarmupCosine, set_base_lr
from sparkling_ir.train.metrics import (
    LOSS_WINDOW,
    EvalRecord,
    EventRecord,
    RunResult,
    StepRecord,
    fill_event_train_losses,
    mean_loss,
)

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """The model and optimizer settings of one run; `steps` is the number of updates."""

    model: GPTConfig
    batch_size: int
    steps: int
    lr: WarmupCosine
    seed: int = 0
    device: str = "cpu"
    weight_decay: float = 0.1  # on 2-D weights only
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm
    eval_batches: int = 8
    eval_interval: int = 50  # updates between validation evaluations

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.block_size


class GrowerLike(Protocol):
    """The part of `sparkling_ir.Grower` that the loop uses."""

    @property
    def event_steps(self) -> tuple[int, ...]: ...

    def step(self) -> list[GrowthReport]: ...

    def new_entry_lr(self, group: int = 0) -> float | None: ...


class GrowerFactory(Protocol):
    """A callable that builds a grower from a model, its optimizer and a schedule, like
    `sparkling_ir.Grower` itself."""

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        schedule: Schedule,
        *,
        example_inputs: Sequence[Any],
        tokens_per_step: int | None = None,
        min_lr: float | None = None,
    ) -> GrowerLike: ...


class Observer(Protocol):
    """A receiver of the loop's progress, for display; the loop ignores what it returns."""

    def on_step(self, record: StepRecord) -> None: ...

    def on_growth(self, event: EventRecord) -> None: ...


class NullObserver:
    def on_step(self, record: StepRecord) -> None:
        pass

    def on_growth(self, event: EventRecord) -> None:
        pass


class StaticGrower:
    """The grower of a schedule without events: nothing to trace, nothing ever grows."""

    event_steps: tuple[int, ...] = ()

    def step(self) -> list[GrowthReport]:
        return []

    def new_entry_lr(self, group: int = 0) -> float | None:
        return None


def train(
    schedule: Schedule,
    corpus: Corpus,
    config: TrainConfig,
    *,
    make_grower: GrowerFactory | None = None,
    observer: Observer | None = None,
    label: str = "progressive",
) -> RunResult:
    """Train the bundled GPT on `corpus` for `config.steps` updates, growing it as scheduled.

    `schedule` must already be resolved to this run: its train length is `config.steps` and its
    events fall inside the run. `make_grower` defaults to `sparkling_ir.Grower`. Errors of the
    grower (`GrowthError`, `TraceError`) propagate.
    """
    make_grower = make_grower or Grower
    run = _Run(schedule, corpus, config, make_grower, observer or NullObserver(), label)
    for step in range(config.steps):
        run.update(step)
        run.grow_if_due(completed=step + 1)
        run.evaluate_if_due(completed=step + 1)
    return run.result()


class _Run:
    """The state of one training run; `train` drives it one update at a time."""

    def __init__(
        self,
        schedule: Schedule,
        corpus: Corpus,
        config: TrainConfig,
        make_grower: GrowerFactory,
        observer: Observer,
        label: str,
    ) -> None:
        # Wall time includes building the grower, which traces the model: a cost of growth.
        self.start_time = time.perf_counter()
        self.config = config
        self.observer = observer
        self.label = label
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)

        self.model = GPT(config.model).to(self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.own_groups = len(self.optimizer.param_groups)
        self.stream = BatchStream(
            corpus.train, config.batch_size, config.model.block_size, config.seed
        )
        self.val_batches = [
            (inputs.to(self.device), targets.to(self.device))
            for inputs, targets in validation_batches(
                corpus.validation, config.batch_size, config.model.block_size,
                config.eval_batches,
            )
        ]
        example = self.val_batches[0][0]
        self.grower = start_grower(
            make_grower, self.model, self.optimizer, schedule, example, config
        )

        self.steps: list[StepRecord] = []
        self.evals: list[EvalRecord] = []
        self.events: list[EventRecord] = []
        self.flops = 0
        self.flops_per_token = flops_per_token(self.model, config.model.block_size)
        self.params_start = count_parameters(self.model)
        self.warned_non_finite = False

    def update(self, step: int) -> None:
        """Make the update with 0-based index `step` and record its loss and learning rates."""
        lr = self.config.lr.at(step)
        set_base_lr(self.optimizer, lr, self.own_groups)
        lr_new = self.grower.new_entry_lr(0)
        inputs, targets = self.stream.next_batch()
        loss = train_step(
            self.model, self.optimizer, inputs.to(self.device), targets.to(self.device),
            self.config.grad_clip,
        )
        self.steps.append(StepRecord(step=step, loss=loss, lr=lr, lr_new=lr_new))
        self.flops += self.config.tokens_per_step * self.flops_per_token
        self.warn_if_non_finite(loss, step)
        self.observer.on_step(self.steps[-1])

    def grow_if_due(self, completed: int) -> None:
        """Let the grower apply the events due after `completed` updates, and record them.

        The validation loss is measured right before and right after, on the same batches.
        Events that fall on one step share both measurements.
        """
        due = completed in self.grower.event_steps
        val_before = evaluate(self.model, self.val_batches) if due else None
        reports = self.grower.step()
        if not reports:
            return
        if not due:
            logger.warning("growth at step %d was not listed in event_steps", completed)
        val_after = evaluate(self.model, self.val_batches)
        self.flops_per_token = flops_per_token(self.model, self.config.model.block_size)
        for report in reports:
            self.events.append(event_record(report, val_before, val_after))
            self.observer.on_growth(self.events[-1])

    def evaluate_if_due(self, completed: int) -> None:
        if completed % self.config.eval_interval == 0 or completed == self.config.steps:
            self.evals.append(EvalRecord(completed, evaluate(self.model, self.val_batches)))

    def warn_if_non_finite(self, loss: float, step: int) -> None:
        if math.isfinite(loss) or self.warned_non_finite:
            return
        self.warned_non_finite = True
        logger.warning(
            "training loss is %s at step %d; the run goes on, but a lower --lr may be needed",
            loss, step,
        )

    def result(self) -> RunResult:
        wall_time = time.perf_counter() - self.start_time
        warn_unfired_events(self.grower, self.events)
        fill_event_train_losses(self.events, self.steps)
        return RunResult(
            label=self.label,
            model_start=asdict(self.config.model),
            model_final=asdict(self.model.current_config()),
            params_start=self.params_start,
            params_final=count_parameters(self.model),
            tokens=self.config.steps * self.config.tokens_per_step,
            flops=self.flops,
            wall_time_s=wall_time,
            final_train_loss=final_train_loss(self.steps, self.config.steps),
            final_val_loss=self.evals[-1].val_loss,
            steps=self.steps,
            evals=self.evals,
            events=self.events,
        )


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """Build AdamW with weight decay on 2-D weights (matrices, embeddings) but not on gains or
    biases.

    Group 0 is the decayed group, group 1 the rest.
    """
    decayed = [param for param in model.parameters() if param.dim() >= 2]
    undecayed = [param for param in model.parameters() if param.dim() < 2]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr.at(0), betas=config.betas)


def start_grower(
    make_grower: GrowerFactory,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    example: torch.Tensor,
    config: TrainConfig,
) -> GrowerLike:
    """Build the grower of `schedule`, or a `StaticGrower` if the schedule has no events.

    `example` is a validation batch, so that tracing does not draw from the training stream
    and a run with growth trains on the same batches as one without.
    """
    if not schedule.events:
        return StaticGrower()
    return make_grower(
        model,
        optimizer,
        schedule,
        example_inputs=(example,),
        tokens_per_step=config.tokens_per_step,
        min_lr=config.lr.min,
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    grad_clip: float,
) -> float:
    """Make one update on `(inputs, targets)`, each `(batch, seq)`; return the loss before it."""
    logits = model(inputs)  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.autograd.backward(loss)
    # model.parameters() is read again on every step: growth may replace the Parameters.
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def event_record(
    report: GrowthReport, val_before: float | None, val_after: float
) -> EventRecord:
    return EventRecord(
        index=report.event_index,
        step=report.step,
        changes=tuple(report.changes),
        summary=report.summary(),
        params_before=report.params_before,
        params_after=report.params_after,
        val_loss_before=val_before,
        val_loss_after=val_after,
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Batch]) -> float:
    """Return the mean cross-entropy of `model` over every target in `batches`, in nats.

    Each batch counts by its number of targets, because the last one may be smaller.
    """
    was_training = model.training
    model.eval()
    total = 0.0
    targets_seen = 0
    for inputs, targets in batches:
        logits = model(inputs)  # (batch, seq, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        total += float(loss.item()) * targets.numel()
        targets_seen += targets.numel()
    model.train(was_training)
    return total / targets_seen


def final_train_loss(steps: list[StepRecord], total: int) -> float:
    loss = mean_loss(steps, total - LOSS_WINDOW, total)
    return math.nan if loss is None else loss


def warn_unfired_events(grower: GrowerLike, events: list[EventRecord]) -> None:
    if len(events) < len(grower.event_steps):
        logger.warning(
            "%d of %d growth events were applied; the others are due after the run ends",
            len(events), len(grower.event_steps),
        )
