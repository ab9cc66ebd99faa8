"""Replay: Storage x Sampler x Writer, each with ``state_dict`` / ``load_state_dict``.

numpy only (no torch), so actors, learners and tools can all import it.

* :class:`TransitionSpec` / :class:`FieldSpec`: the fields of an item; batches
  are ``dict[str, np.ndarray]`` of ``[B, *field.shape]`` checked against it.
* Storages: :class:`RingStorage` (in memory), :class:`MemmapStorage`
  (``np.memmap`` files + an atomically replaced JSON header; survives the process).
* Samplers: :class:`UniformSampler`, :class:`PrioritizedSampler` (proportional
  prioritized replay, Schaul et al. 2016, on the vectorized :class:`SumTree`).
* Writer: :class:`NStepWriter` (n-step returns from vector-env steps; bootstrap
  on truncation, not on termination).
* :class:`RateLimiter`: Reverb-style samples-per-insert control that times out
  with a message instead of hanging.
* :class:`ReplayBuffer` composes them; :func:`make_replay` builds the usual one.

>>> spec = TransitionSpec.transitions((4,), n_step=True)
>>> buffer = ReplayBuffer(RingStorage(spec, 1000), PrioritizedSampler(1000, seed=0))
>>> writer = NStepWriter(n=3, gamma=0.99, num_envs=2)
"""

from rlops.replay.buffer import ReplayBuffer, Sample, make_replay
from rlops.replay.rate_limiter import RateLimiter
from rlops.replay.samplers import PrioritizedSampler, Sampler, UniformSampler, check_priorities
from rlops.replay.spec import Batch, FieldSpec, TransitionSpec
from rlops.replay.storage import MemmapStorage, RingStorage, Storage
from rlops.replay.sum_tree import SumTree
from rlops.replay.writers import NStepWriter

__all__ = [
    "Batch",
    "FieldSpec",
    "MemmapStorage",
    "NStepWriter",
    "PrioritizedSampler",
    "RateLimiter",
    "ReplayBuffer",
    "RingStorage",
    "Sample",
    "Sampler",
    "Storage",
    "SumTree",
    "TransitionSpec",
    "UniformSampler",
    "check_priorities",
    "make_replay",
]
