"""The rlops exception hierarchy.

Every error rlops raises on purpose derives from :class:`RlopsError`; the CLI
prints its message on one line and exits with code 2, never a traceback.
Messages name the offending field and what is allowed, so the user knows what
to change.
"""

from __future__ import annotations


class RlopsError(Exception):
    """Base class of every error rlops raises on purpose."""


class ConfigError(RlopsError, ValueError):
    """A configuration key or value is unknown or out of range."""


class EnvError(RlopsError):
    """An environment is unknown, malformed, or produced invalid data (NaN/Inf)."""


class ArtifactError(RlopsError):
    """A policy artifact is missing, of an unsupported format, or tampered with."""


class CheckpointError(RlopsError):
    """No complete checkpoint could be found or a checkpoint failed its checksum."""


class ReplayError(RlopsError):
    """Replay data or state is invalid, or replay cannot proceed.

    Raised when a batch does not match its spec, a priority is negative or not
    finite, a buffer holds too few items to sample, a rate limiter timed out,
    or a persistent replay directory is missing, foreign or corrupted.
    """


class ActorFailure(RlopsError):
    """Actors of a distributed run failed beyond what the runtime may repair.

    Raised when an actor cannot start, or when actors keep crashing, dying or
    hanging after ``runtime.max_restarts`` replacements. The message names the
    last cause (the exception an actor raised, the signal that killed it, or
    the timeout it exceeded).
    """


class DataError(RlopsError):
    """Logged decisions cannot support the requested estimate or training.

    Raised for missing or out-of-range propensities, actions outside the
    action space, observations of the wrong size, or a log without the
    feedback an estimator needs; the message names the field and how many
    records are affected.
    """


class RegistryError(RlopsError):
    """A registry call cannot be carried out: an unknown policy, version, alias
    or request, a refused source path, a hash mismatch, or a database that is
    locked or unreachable. Nothing was written (every mutation is one
    transaction)."""


class PermissionDenied(RegistryError):
    """The acting identity lacks the role a registry action needs, or the action
    would break separation of duties (approving one's own request)."""


class Conflict(RegistryError):
    """Another change won a race: the alias moved, or a request for the same
    alias is already pending. Re-read the state and decide again."""
