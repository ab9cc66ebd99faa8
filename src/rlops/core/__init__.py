"""Interfaces, typed batches and errors shared by every rlops layer."""

from rlops.core.batch import Rollout, Transitions
from rlops.core.errors import (
    ArtifactError,
    CheckpointError,
    ConfigError,
    EnvError,
    ReplayError,
    RlopsError,
)
from rlops.core.interfaces import Actor, Learner, Saveable, VariableSource

__all__ = [
    "Actor",
    "ArtifactError",
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "Learner",
    "ReplayError",
    "RlopsError",
    "Rollout",
    "Saveable",
    "Transitions",
    "VariableSource",
]
