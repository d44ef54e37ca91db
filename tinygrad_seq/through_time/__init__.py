"""Tools for studying how gradients travel through time, in one place.

- `gradients_through_time`: ∂L/∂a<t> at every step and each step's term of ∂L/∂W, from one
  ordinary BPTT pass (`gradients`).
- `state_jacobians`: ∂s<t>/∂s<k> for every k < t and their singular values; `pascanu_bound`,
  the tanh RNN's bound (σ_max(W_aa))^(t−k) on them (`jacobians`).
- `measure`, `decay_table`, `spectrum_table`, `clip_report`: the vanishing and exploding
  set-ups of `tinygrad-seq vanishing` (`decay`), and `format_*`/`plot_decay` to show them
  (`report`).
"""

from .decay import (
    CELLS,
    THRESHOLD,
    ClipReport,
    DecayRow,
    clip_report,
    decay_table,
    make_cell,
    measure,
    reach,
    spectrum_table,
)
from .gradients import GradientsThroughTime, gradients_through_time
from .jacobians import StateJacobians, pascanu_bound, state_jacobians
from .report import format_clip_report, format_spectrum, format_table, plot_decay

__all__ = [
    "CELLS",
    "THRESHOLD",
    "ClipReport",
    "DecayRow",
    "GradientsThroughTime",
    "StateJacobians",
    "clip_report",
    "decay_table",
    "format_clip_report",
    "format_spectrum",
    "format_table",
    "gradients_through_time",
    "make_cell",
    "measure",
    "pascanu_bound",
    "plot_decay",
    "reach",
    "spectrum_table",
    "state_jacobians",
]
