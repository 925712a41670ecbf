"""The training loop, with fake growers standing in for `sparkling_ir.Grower`.

The fakes change the model in a way whose effect is known exactly (zeroing the final norm
makes every logit 0, so the loss becomes ln 256), which shows when the loop measures what.
Real growth runs in tests/test_train_end_to_end.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.runtime import GrowthReport
from sparkling_ir.schedule.ir import AtStep, ByFactor, GrowthEvent, Schedule, TrainSteps, Widen
from sparkling_ir.train.data import Corpus, split_corpus
from sparkling_ir.train.flops import flops_per_token
from sparkling_ir.train.loop import TrainConfig, evaluate, train
from sparkling_ir.train.lr import WarmupCosine
from sparkling_ir.train.metrics import EventRecord, StepRecord

STEPS = 20
MODEL = GPTConfig(block_size=16, n_layer=1, n_embd=16, n_head=2, head_dim=8, ffn_dim=32)
UNIFORM_LOSS = math.log(256)  # cross-entropy of all-zero logits over 256 bytes


def make_config(**changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": MODEL,
        "batch_size": 4,
        "steps": STEPS,
        "lr": WarmupCosine(peak=1e-2, min=1e-3, warmup_steps=2, total_steps=STEPS),
        "eval_batches": 2,
        "eval_interval": 5,
    }
    settings.update(changes)
    return TrainConfig(**settings)


def make_schedule(event_step: int | None = 10) -> Schedule:
    events: tuple[GrowthEvent, ...] = ()
    if event_step is not None:
        widen = Widen(axis="hidden", amount=ByFactor(factor=2))
        events = (GrowthEvent(trigger=AtStep(step=event_step), widens=(widen,)),)
    return Schedule(name="fake", train=TrainSteps(steps=STEPS), events=events)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    # A repetitive text that a one-block model learns within a few dozen updates.
    return split_corpus(b"the quick brown fox jumps over the lazy dog. " * 200, "fox")


class FakeGrower:
    """Zeroes the final norm after `at` updates and reports it as growth; records its inputs."""

    instances: list[FakeGrower] = []

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        schedule: Schedule,
        *,
        example_inputs: Sequence[Any],
        tokens_per_step: int | None = None,
        min_lr: float | None = None,
        at: int = 10,
        poison: bool = False,
    ) -> None:
        assert isinstance(model, GPT)
        self.model = model
        self.optimizer = optimizer
        self.example_inputs = example_inputs
        self.tokens_per_step = tokens_per_step
        self.min_lr = min_lr
        self.at = at
        self.poison = poison
        self.completed = 0
        FakeGrower.instances.append(self)

    @property
    def event_steps(self) -> tuple[int, ...]:
        return (self.at,)

    def step(self) -> list[GrowthReport]:
        self.completed += 1
        if self.completed != self.at:
            return []
        with torch.no_grad():
            fill = math.nan if self.poison else 0.0
            self.model.ln_f.weight.fill_(fill)
            self.model.ln_f.bias.fill_(fill)
        return [GrowthReport(
            event_index=0, step=self.at, changes=("hidden 16 -> 32",),
            params_before=100, params_after=200,
        )]

    def new_entry_lr(self, group: int = 0) -> float | None:
        return 0.5 if self.completed >= self.at else None


class RecordingObserver:
    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.events: list[EventRecord] = []

    def on_step(self, record: StepRecord) -> None:
        self.steps.append(record)

    def on_growth(self, event: EventRecord) -> None:
        self.events.append(event)


def test_loss_decreases_without_events(corpus: Corpus) -> None:
    result = train(make_schedule(None), corpus, make_config(steps=60, lr=WarmupCosine(
        peak=1e-2, min=1e-3, warmup_steps=5, total_steps=60,
    )))

    first = sum(record.loss for record in result.steps[:5]) / 5
    last = sum(record.loss for record in result.steps[-5:]) / 5
    assert first > 5.0  # near ln 256 at initialisation
    assert last < first - 2.0
    assert result.final_val_loss < first - 2.0
    assert result.events == []


def test_same_seed_gives_same_losses(corpus: Corpus) -> None:
    first = train(make_schedule(None), corpus, make_config(seed=1))
    second = train(make_schedule(None), corpus, make_config(seed=1))
    other = train(make_schedule(None), corpus, make_config(seed=2))

    assert [r.loss for r in first.steps] == [r.loss for r in second.steps]
    assert [r.loss for r in first.steps] != [r.loss for r in other.steps]


def test_grower_gets_run_settings(corpus: Corpus) -> None:
    FakeGrower.instances.clear()
    config = make_config()

    train(make_schedule(), corpus, config, make_grower=FakeGrower)

    (grower,) = FakeGrower.instances
    (example,) = grower.example_inputs
    assert example.shape == (config.batch_size, MODEL.block_size)
    assert grower.tokens_per_step == config.batch_size * MODEL.block_size
    assert grower.min_lr == config.lr.min
    assert isinstance(grower.optimizer, torch.optim.AdamW)


def test_schedule_without_events_builds_no_grower(corpus: Corpus) -> None:
    FakeGrower.instances.clear()

    train(make_schedule(None), corpus, make_config(), make_grower=FakeGrower)

    assert FakeGrower.instances == []


def test_validation_loss_measured_around_growth(corpus: Corpus) -> None:
    observer = RecordingObserver()

    result = train(
        make_schedule(), corpus, make_config(), make_grower=FakeGrower, observer=observer
    )

    (event,) = result.events
    assert event.step == 10
    assert event.val_loss_before is not None
    assert event.val_loss_before < UNIFORM_LOSS - 0.1  # trained, before the change
    assert event.val_loss_after == pytest.approx(UNIFORM_LOSS)  # right after it
    assert (event.params_before, event.params_after) == (100, 200)
    assert event.summary.startswith("step 10: grew hidden 16 -> 32")
    assert observer.events == [event]
    assert len(observer.steps) == STEPS


def test_event_train_losses_split_at_event(corpus: Corpus) -> None:
    result = train(make_schedule(), corpus, make_config(), make_grower=FakeGrower)

    (event,) = result.events
    losses = [record.loss for record in result.steps]
    assert event.train_loss_before == pytest.approx(sum(losses[0:10]) / 10)
    assert event.train_loss_after == pytest.approx(sum(losses[10:20]) / 10)


def test_learning_rates_recorded_per_update(corpus: Corpus) -> None:
    config = make_config()

    result = train(make_schedule(), corpus, config, make_grower=FakeGrower)

    assert [r.lr for r in result.steps] == [config.lr.at(step) for step in range(STEPS)]
    assert [r.lr_new for r in result.steps] == [None] * 10 + [0.5] * 10


def test_base_lr_set_on_optimizer(corpus: Corpus) -> None:
    FakeGrower.instances.clear()
    config = make_config()

    train(make_schedule(), corpus, config, make_grower=FakeGrower)

    optimizer = FakeGrower.instances[0].optimizer
    assert optimizer is not None
    assert [group["lr"] for group in optimizer.param_groups] == [config.lr.at(STEPS - 1)] * 2


def test_weight_decay_only_on_matrices(corpus: Corpus) -> None:
    FakeGrower.instances.clear()

    train(make_schedule(), corpus, make_config(), make_grower=FakeGrower)

    optimizer = FakeGrower.instances[0].optimizer
    assert optimizer is not None
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1
    assert all(param.dim() == 2 for param in decayed["params"])
    assert undecayed["weight_decay"] == 0.0
    assert all(param.dim() == 1 for param in undecayed["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_evaluations_at_interval_and_end(corpus: Corpus) -> None:
    result = train(make_schedule(None), corpus, make_config(steps=12, eval_interval=5, lr=(
        WarmupCosine(peak=1e-2, min=1e-3, warmup_steps=0, total_steps=12)
    )))

    assert [record.step for record in result.evals] == [5, 10, 12]
    assert result.final_val_loss == result.evals[-1].val_loss


def test_flops_counted_per_update(corpus: Corpus) -> None:
    config = make_config()

    result = train(make_schedule(None), corpus, config)

    per_token = flops_per_token(GPT(MODEL), MODEL.block_size)
    assert result.flops == STEPS * config.tokens_per_step * per_token
    assert result.tokens == STEPS * config.tokens_per_step


def test_non_finite_loss_warns_once(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    def poisoning_grower(*args: Any, **kwargs: Any) -> FakeGrower:
        return FakeGrower(*args, **kwargs, poison=True)

    with caplog.at_level(logging.WARNING, logger="sparkling_ir.train.loop"):
        result = train(make_schedule(), corpus, make_config(), make_grower=poisoning_grower)

    warnings = [r.message for r in caplog.records if "training loss is nan" in r.message]
    assert len(warnings) == 1
    assert warnings[0].startswith("training loss is nan at step 10;")
    assert result.to_json()["final_val_loss"] is None


def test_unapplied_event_warns(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    def late_grower(*args: Any, **kwargs: Any) -> FakeGrower:
        return FakeGrower(*args, **kwargs, at=STEPS + 5)

    with caplog.at_level(logging.WARNING, logger="sparkling_ir.train.loop"):
        result = train(make_schedule(), corpus, make_config(), make_grower=late_grower)

    assert result.events == []
    assert any("0 of 1 growth events were applied" in r.message for r in caplog.records)


def test_evaluate_weights_batches_by_size() -> None:
    torch.manual_seed(0)
    model = GPT(MODEL)
    inputs = torch.randint(0, 256, (5, MODEL.block_size))
    targets = torch.randint(0, 256, (5, MODEL.block_size))

    split = evaluate(model, [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])])
    whole = evaluate(model, [(inputs, targets)])

    assert split == pytest.approx(whole, rel=1e-6)
