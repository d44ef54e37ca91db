"""The step compiler: a recurrent cell's time step, traced from its own graph and run as one
graph node per step (see `step.py`)."""

from .step import CompiledStep, Plan, compile_steps, explain, use_compiled_steps

__all__ = ["CompiledStep", "Plan", "compile_steps", "explain", "use_compiled_steps"]
