"""sparkling_ir: declarative width-progressive training.

Write when and how to widen a model in a `.grow` schedule, and let `Grower` widen the model,
its optimizer state and the learning rates of the new entries in the middle of training.
"""

from sparkling_ir.errors import (
    DataError,
    GrowthError,
    OptimizerStateError,
    ScheduleError,
    ScheduleSyntaxError,
    SparklingError,
    TraceError,
)
from sparkling_ir.runtime import Grower, GrowthReport
from sparkling_ir.schedule import load_schedule, parse_schedule
from sparkling_ir.schedule.ir import Schedule

__all__ = [
    "DataError",
    "Grower",
    "GrowthError",
    "GrowthReport",
    "OptimizerStateError",
    "Schedule",
    "ScheduleError",
    "ScheduleSyntaxError",
    "SparklingError",
    "TraceError",
    "load_schedule",
    "parse_schedule",
]
