"""Continuous batching over one shared context. No ctypes here."""
from .engine import Engine, EngineConfig, GenerationExhausted
from .events import FinalEvent, ProgressEvent, TokenEvent
from .request import FinishReason, GenerationOptions, Request, Status
from .scheduler import Plan, PlanEntry, QueueFull, Scheduler

__all__ = ["Engine", "EngineConfig", "GenerationExhausted", "FinalEvent", "TokenEvent",
           "ProgressEvent", "FinishReason", "GenerationOptions", "Request", "Status", "Plan",
           "PlanEntry", "QueueFull", "Scheduler"]
