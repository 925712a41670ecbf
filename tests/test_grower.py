"""The runtime API end to end: a Grower in a training loop with a real optimizer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sparkling_ir
from sparkling_ir.errors import BindError, GrowthError
from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.optim.lr import rewarmup_lr

SCHEDULE = """
schedule small {
    train 12 steps
    lr cosine peak 1e-2 min 1e-3 warmup 2 steps
    at step 4 {
        widen hidden x2
        widen ffn x2
        init sparkling
        optimizer %s
        lr new %s
    }
}
"""


def make_run(optimizer_policy: str = "reset new", lr_policy: str = "rewarmup 4 steps to 1.3x",
             seed: int = 0) -> tuple[GPT, torch.optim.AdamW, sparkling_ir.Grower, torch.Tensor]:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_embd=8, ffn_dim=16, n_head=2, head_dim=4)).double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    schedule = sparkling_ir.parse_schedule(SCHEDULE % (optimizer_policy, lr_policy), "small.grow")
    tokens = torch.randint(0, 256, (4, 9))
    grower = sparkling_ir.Grower(model, optimizer, schedule, example_inputs=(tokens[:, :-1],))
    return model, optimizer, grower, tokens


def train_step(model: GPT, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> float:
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def test_event_fires_after_its_step_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    model, optimizer, grower, tokens = make_run()
    assert grower.event_steps == (4,)
    reports = []
    with caplog.at_level(logging.INFO, logger="sparkling_ir.runtime"):
        for _ in range(5):
            train_step(model, optimizer, tokens)
            reports += grower.step()
    assert [r.step for r in reports] == [4]
    assert reports[0].params_after > reports[0].params_before
    assert reports[0].changes == ("hidden 8 -> 16", "ffn 16 -> 32 (in 2 layers)")
    assert any("step 4: grew hidden 8 -> 16" in m for m in caplog.messages)
    assert model.wte.weight.shape == (256, 16)


def test_growth_mid_training_preserves_loss() -> None:
    model, optimizer, grower, tokens = make_run()
    for _ in range(3):
        train_step(model, optimizer, tokens)
    train_step(model, optimizer, tokens)
    with torch.no_grad():
        before = model(tokens[:, :-1])
    grower.step(), grower.step(), grower.step()
    grower.step()  # the fourth completed step: growth
    with torch.no_grad():
        after = model(tokens[:, :-1])
    assert float((after - before).norm() / before.norm()) < 1e-10


def test_optimizer_follows_new_parameters() -> None:
    model, optimizer, grower, tokens = make_run()
    for _ in range(4):
        train_step(model, optimizer, tokens)
        grower.step()
    live = {id(p) for p in model.parameters()}
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert live == trained
    fc = model.blocks[0].mlp.c_fc.weight
    state = optimizer.state[fc]
    assert state["exp_avg"].shape == fc.shape
    # [S, 0]: new rows and new columns start with zero moments.
    assert torch.count_nonzero(state["exp_avg"][16:, :]) == 0
    assert torch.count_nonzero(state["exp_avg_sq"][:, 8:]) == 0
    assert torch.count_nonzero(state["exp_avg_sq"][:16, :8]) > 0


def adamw_reference(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                    exp_avg_sq: torch.Tensor, step: int, lr: torch.Tensor) -> torch.Tensor:
    """One AdamW step with a per-entry lr, written out (betas 0.9, 0.999, eps 1e-8, wd 0.1)."""
    beta1, beta2, eps, decay = 0.9, 0.999, 1e-8, 0.1
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    corrected_avg = exp_avg / (1 - beta1**step)
    denominator = (exp_avg_sq / (1 - beta2**step)).sqrt() + eps
    return param * (1 - lr * decay) - lr * corrected_avg / denominator


def test_adamw_step_after_growth() -> None:
    # One step after growth uses two learning rates inside one tensor.
    model, optimizer, grower, tokens = make_run()
    for _ in range(4):
        train_step(model, optimizer, tokens)
        grower.step()
    fc = model.blocks[1].mlp.c_fc.weight
    state = optimizer.state[fc]
    before = fc.detach().clone()
    exp_avg, exp_avg_sq = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    step = int(state["step"]) + 1
    group_lr = 1e-2
    optimizer.param_groups[0]["lr"] = group_lr
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    grad = fc.grad.detach().clone()
    optimizer.step()
    optimizer.zero_grad()
    # The first step after growth: eta_e is the group lr and the ramp starts there.
    new_lr = rewarmup_lr(group_lr, 0, 4, 1.3, 12 - 4 - 4, 1e-3)
    new = torch.zeros_like(fc, dtype=torch.bool)
    new[16:, :] = True
    new[:, 8:] = True
    lr = torch.where(new, torch.tensor(new_lr, dtype=fc.dtype), torch.tensor(group_lr, dtype=fc.dtype))
    expected = adamw_reference(before, grad, exp_avg, exp_avg_sq, step, lr)
    torch.testing.assert_close(fc.detach()[~new], expected[~new], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fc.detach()[new], expected[new], rtol=1e-10, atol=1e-14)


def test_new_entry_lr_follows_rewarmup() -> None:
    model, optimizer, grower, tokens = make_run()
    seen = []
    for _ in range(12):
        train_step(model, optimizer, tokens)
        grower.step()
        seen.append(grower.new_entry_lr())
    assert seen[:3] == [None, None, None]
    assert seen[3] == pytest.approx(1e-2)  # lr of the first step after growth: eta_e
    assert seen[-1] == pytest.approx(1e-3)
    assert max(x for x in seen if x is not None) == pytest.approx(1.3e-2)


def _rows_identical(weight: torch.Tensor, inner: int) -> bool:
    return torch.allclose(weight[:inner], weight[inner:], rtol=0, atol=1e-12)


def test_copied_units_stay_locked_without_asymmetry() -> None:
    # Negative control: copied state and a shared lr give copies identical updates forever.
    model, optimizer, grower, tokens = make_run("copy", "same")
    for _ in range(10):
        train_step(model, optimizer, tokens)
        grower.step()
    assert _rows_identical(model.blocks[0].mlp.c_fc.weight.detach(), 16)


def test_copied_units_diverge_with_sparkling() -> None:
    model, optimizer, grower, tokens = make_run()
    for _ in range(4):
        train_step(model, optimizer, tokens)
        grower.step()
    assert _rows_identical(model.blocks[0].mlp.c_fc.weight.detach(), 16)  # exact copy at growth
    for _ in range(3):
        train_step(model, optimizer, tokens)
        grower.step()
    weight = model.blocks[0].mlp.c_fc.weight.detach()
    assert not _rows_identical(weight, 16)
    assert float((weight[:16] - weight[16:]).abs().max()) > 1e-4


def test_bad_schedule_fails_at_construction_and_changes_nothing() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=8, ffn_dim=16, n_head=2, head_dim=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = sparkling_ir.parse_schedule(
        "schedule s {\n  train 10 steps\n  lr cosine peak 1e-3 min 1e-4\n"
        "  at step 5 {\n    widen hidden x1.3\n    lr new same\n  }\n}\n", "s.grow")
    params = list(model.parameters())
    with pytest.raises(BindError) as caught:
        sparkling_ir.Grower(model, optimizer, schedule, example_inputs=(torch.zeros(2, 4, dtype=torch.long),))
    assert str(caught.value).startswith("s.grow:5:5: error: widen hidden x1.3 gives 10.4")
    assert list(model.parameters()) == params
    assert not optimizer._optimizer_step_pre_hooks


def test_rewarmup_needs_a_minimum_lr() -> None:
    model = GPT(GPTConfig(n_layer=1, n_embd=8, ffn_dim=16, n_head=2, head_dim=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = sparkling_ir.parse_schedule(
        "schedule s {\n  train 1000 steps\n  at step 5 {\n    widen ffn x2\n  }\n}\n", "s.grow")
    with pytest.raises(GrowthError, match="min_lr=M"):
        sparkling_ir.Grower(model, optimizer, schedule, example_inputs=(torch.zeros(2, 4, dtype=torch.long),))
    grower = sparkling_ir.Grower(model, optimizer, schedule,
                                 example_inputs=(torch.zeros(2, 4, dtype=torch.long),), min_lr=0.0)
    assert grower.train_steps == 1000


def test_grower_accepts_a_schedule_path(tmp_path: Path) -> None:
    path = tmp_path / "s.grow"
    path.write_text("schedule s {\n  train 10 steps\n  at step 5 {\n    widen ffn x2\n    lr new same\n  }\n}\n")
    model = GPT(GPTConfig(n_layer=1, n_embd=8, ffn_dim=16, n_head=2, head_dim=4))
    grower = sparkling_ir.Grower(model, None, str(path), example_inputs=(torch.zeros(2, 4, dtype=torch.long),))
    assert grower.schedule.name == "s"
    with pytest.raises(TypeError, match="expects a Schedule or the path of a .grow file, got int"):
        sparkling_ir.Grower(model, None, 3, example_inputs=(torch.zeros(2, 4, dtype=torch.long),))  # type: ignore[arg-type]


def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_embd=8, ffn_dim=16, n_head=2, head_dim=4))


TOKENS = torch.zeros(2, 4, dtype=torch.long)


def one_event(body: str, train: int = 100) -> sparkling_ir.Schedule:
    return sparkling_ir.parse_schedule(
        f"schedule s {{\n  train {train} steps\n  lr cosine peak 1e-2 min 1e-3\n"
        f"  at step 5 {{\n    {body}\n    lr new rewarmup 2 steps\n  }}\n}}\n", "s.grow")


@pytest.mark.parametrize("size, message", [
    ("999999999999", "more than the largest tensor dim supported"),
    ("1000000000", "for the weights alone, more than the"),
])
def test_oversized_growth_fails_at_construction(size: str, message: str) -> None:
    model = small_gpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(GrowthError, match=message):
        sparkling_ir.Grower(model, optimizer, one_event(f"widen ffn to {size}"), example_inputs=(TOKENS,))
    assert not optimizer._optimizer_step_pre_hooks


def test_optimizer_missing_grown_params_fails_early() -> None:
    model = small_gpt()
    optimizer = torch.optim.AdamW(model.blocks.parameters(), lr=1e-2)
    with pytest.raises(GrowthError, match=r"does not hold 4 trainable parameter\(s\) .* e.g. ln_f.bias"):
        sparkling_ir.Grower(model, optimizer, one_event("widen hidden x2"), example_inputs=(TOKENS,))


@pytest.mark.parametrize("optimizer_type", [torch.optim.Rprop, torch.optim.ASGD])
def test_rewarmup_with_unsupported_optimizer_fails_early(optimizer_type: type) -> None:
    model = small_gpt()
    optimizer = optimizer_type(model.parameters(), lr=1e-2)
    with pytest.raises(GrowthError, match="cannot re-warm new entries"):
        sparkling_ir.Grower(model, optimizer, one_event("widen ffn x2"), example_inputs=(TOKENS,))
    assert not optimizer._optimizer_step_pre_hooks


def test_min_lr_per_param_group() -> None:
    model = small_gpt()
    optimizer = torch.optim.AdamW([
        {"params": list(model.blocks.parameters()), "lr": 1e-2},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("blocks.")], "lr": 1e-4},
    ])
    grower = sparkling_ir.Grower(model, optimizer, one_event("widen hidden x2", train=10),
                                 example_inputs=(TOKENS,), min_lr=[1e-3, 1e-5])
    for _ in range(10):
        model(TOKENS).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        grower.step()
    assert grower.new_entry_lr(0) == pytest.approx(1e-3)
    assert grower.new_entry_lr(1) == pytest.approx(1e-5)


def test_apply_event_rejects_repeats_and_unknown_index() -> None:
    model = small_gpt()
    grower = sparkling_ir.Grower(model, None, one_event("widen ffn x2"), example_inputs=(TOKENS,))
    grower.apply_event(0)
    with pytest.raises(GrowthError, match="event 0 of schedule s was already applied"):
        grower.apply_event(0)
    with pytest.raises(GrowthError, match="has 1 event\\(s\\), so there is no event 3"):
        grower.apply_event(3)


class Gate(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if float(x.sum()) > 0 else -x  # data-dependent: torch.fx cannot trace it


class GatedModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(4, 8)
        self.gate = Gate()
        self.down = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.gate(self.up(x)))


def test_leaf_modules_make_untraceable_code_usable() -> None:
    from sparkling_ir.graph.builtin_rules import same_shape
    from sparkling_ir.graph.rules import MODULE_RULES, register_module_rule

    schedule = sparkling_ir.parse_schedule(
        "schedule s {\n  train 10 steps\n  at step 2 {\n    widen ffn x2\n    lr new same\n  }\n}\n")
    with pytest.raises(sparkling_ir.TraceError, match="leaf_modules"):
        sparkling_ir.Grower(GatedModel(), None, schedule, example_inputs=(torch.randn(3, 4),))
    register_module_rule(Gate)(same_shape)
    try:
        model = GatedModel()
        grower = sparkling_ir.Grower(model, None, schedule, example_inputs=(torch.randn(3, 4),),
                                     leaf_modules=(Gate,))
        grower.apply_event(0)
        assert model.up.out_features == 16
    finally:
        del MODULE_RULES[Gate]
