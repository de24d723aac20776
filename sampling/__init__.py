"""Continuous-batching sampling engine (plain Python + NumPy, no Ray)."""

from sampling.engine import SamplingEngine
from sampling.handle import SequenceHandle
from sampling.scheduler import QueueFull, Scheduler, Sequence

__all__ = ["QueueFull", "SamplingEngine", "Scheduler", "Sequence", "SequenceHandle"]
