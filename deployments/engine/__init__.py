"""Continuous-batching sampling engine (plain Python + NumPy, no Ray)."""

from deployments.engine.engine import SamplingEngine, SequenceHandle, sample_next
from deployments.engine.scheduler import QueueFull, Scheduler, Sequence

__all__ = ["QueueFull", "SamplingEngine", "Scheduler", "Sequence", "SequenceHandle", "sample_next"]
