"""The optimizer after growth: remapped state and per-entry learning rates.

`prepare_state_remap` moves each widened parameter's optimizer state to the new shape,
`[S, 0]` by default. `EntryLR` gives the new entries their own re-warmup lr inside the
shared Parameters. Both key everything by fully qualified parameter name.
"""

from sparkling_ir.optim.lr import EntryLR, LabelSwap, rewarmup_lr
from sparkling_ir.optim.state import (
    StateContext,
    StateRule,
    StateSwap,
    find_state_rule,
    prepare_state_remap,
    register_state_rule,
    remap_state,
)

__all__ = [
    "EntryLR",
    "LabelSwap",
    "StateContext",
    "StateRule",
    "StateSwap",
    "find_state_rule",
    "prepare_state_remap",
    "register_state_rule",
    "remap_state",
    "rewarmup_lr",
]
