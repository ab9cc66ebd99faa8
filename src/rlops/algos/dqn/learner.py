"""The DQN learner: replay in, TD updates out, versioned greedy weights published."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from rlops.algos.dqn.config import DQNConfig
from rlops.algos.dqn.loss import td_loss_grads, td_targets
from rlops.algos.dqn.networks import QNetwork
from rlops.core.batch import Transitions
from rlops.nets.optim import FlatAdam, clip_grad_norm

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "discount")
"""Fields of a replayed transition (see :mod:`rlops.replay`)."""


class Replay(Protocol):
    """What the learner needs from a replay buffer (:class:`rlops.replay.ReplayBuffer`)."""

    def add(self, batch: Mapping[str, np.ndarray]) -> Any: ...

    def sample(self, batch_size: int) -> tuple[Mapping[str, np.ndarray], np.ndarray, np.ndarray]:
        """Return ``(batch, indices, importance_weights)``."""
        ...

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None: ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Writer(Protocol):
    """Turns per-step vector-env transitions into (n-step) replay items."""

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> Mapping[str, np.ndarray] | None:
        """Return the completed transitions (fields :data:`FIELDS`), or None."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def store_fragment(writer: Writer, replay: Replay, batch: Transitions) -> int:
    """Feed a fragment's steps through the n-step ``writer`` into ``replay``.

    Returns:
        The number of replay items inserted.
    """
    inserted = 0
    for t in range(batch.num_steps):
        items = writer.add(
            batch.observations[t],
            batch.actions[t],
            batch.rewards[t],
            batch.next_observations[t],
            batch.terminated[t],
            batch.truncated[t],
        )
        if items is not None and len(items["reward"]):
            replay.add(items)
            inserted += len(items["reward"])
    return inserted


class DQNLearner:
    """Double/dueling/n-step/prioritized DQN on a :class:`QNetwork`.

    ``step(transitions)`` writes the fragment into replay (through the n-step
    writer), updates the target network when ``target_update_interval`` env
    steps have passed, then runs ``gradient_steps`` TD updates once
    ``learning_starts`` env steps are in.

    Args:
        config: DQN hyperparameters.
        obs_dim: observation size.
        n_actions: number of discrete actions.
        total_steps: training budget (epsilon and PER beta schedules).
        replay: the replay buffer.
        writer: the n-step writer feeding it.
        seed: seeds parameter init.
    """

    def __init__(
        self,
        config: DQNConfig,
        obs_dim: int,
        n_actions: int,
        total_steps: int,
        replay: Replay,
        writer: Writer | Sequence[Writer],
        seed: int,
    ) -> None:
        self.config = config
        self.total_steps = total_steps
        self.replay = replay
        self.writers = list(writer) if isinstance(writer, Sequence) else [writer]
        torch.manual_seed(seed)
        self.net = QNetwork(
            obs_dim, n_actions, config.hidden_sizes, config.activation, config.dueling
        )
        self.optimizer = FlatAdam(self.net.flat, lr=config.lr, eps=config.adam_eps)
        self.version = 0
        self.env_steps = 0
        self.gradient_steps = 0
        self.inserted = 0
        self.last_target_update = 0

    def get_variables(self) -> tuple[int, dict[str, np.ndarray]]:
        """``(version, greedy Q-network weights in the artifact layout)``."""
        return self.version, self.net.numpy_tensors()

    def epsilon(self) -> float:
        """Current exploration rate."""
        return self.config.epsilon(self.env_steps, self.total_steps)

    @torch.no_grad()
    def step(self, batch: Transitions) -> dict[str, float]:
        """Store a fragment and run the scheduled updates.

        Returns:
            ``losses/td``, ``losses/q_mean``, ``losses/grad_norm`` (when updates
            ran), ``replay/size``, ``charts/epsilon``, ``charts/gradient_steps``.
        """
        cfg = self.config
        self.inserted += store_fragment(self._writer_for(batch.source), self.replay, batch)
        self.env_steps += batch.num_steps * batch.num_envs
        if cfg.prioritized:
            # Anneal the importance-sampling exponent to 1 (Schaul et al. 2016, sec. 3.4).
            sampler = getattr(self.replay, "sampler", None)
            if sampler is not None and hasattr(sampler, "beta"):
                progress = min(1.0, self.env_steps / self.total_steps)
                sampler.beta = cfg.per_beta + (1.0 - cfg.per_beta) * progress
        if self.env_steps - self.last_target_update >= cfg.target_update_interval:
            self.net.update_target(cfg.tau)
            self.last_target_update = self.env_steps
        metrics: dict[str, float] = {}
        if self.env_steps >= cfg.learning_starts and len(self.replay) >= cfg.batch_size:
            losses, q_means, norms = [], [], []
            for _ in range(cfg.gradient_steps):
                loss, q_mean, norm = self._update()
                losses.append(loss)
                q_means.append(q_mean)
                norms.append(norm)
            if losses:
                metrics["losses/td"] = float(np.mean(losses))
                metrics["losses/q_mean"] = float(np.mean(q_means))
                metrics["losses/grad_norm"] = float(np.mean(norms))
        self.version += 1
        metrics["replay/size"] = float(len(self.replay))
        metrics["replay/inserted"] = float(self.inserted)
        if self.inserted:
            # Sampled items per inserted item: fixed by gradient_steps per fragment.
            sampled = self.gradient_steps * self.config.batch_size
            metrics["replay/samples_per_insert"] = sampled / self.inserted
        metrics["charts/epsilon"] = self.epsilon()
        metrics["charts/gradient_steps"] = float(self.gradient_steps)
        metrics["charts/policy_version"] = float(self.version)
        return metrics

    def _update(self) -> tuple[float, float, float]:
        cfg = self.config
        items, indices, weights = self.replay.sample(cfg.batch_size)
        obs = torch.from_numpy(np.asarray(items["obs"], dtype=np.float32))
        next_obs = torch.from_numpy(np.asarray(items["next_obs"], dtype=np.float32))
        actions = torch.from_numpy(np.asarray(items["action"], dtype=np.int64)).unsqueeze(1)
        rewards = torch.from_numpy(np.asarray(items["reward"], dtype=np.float32))
        discounts = torch.from_numpy(np.asarray(items["discount"], dtype=np.float32))
        terminated = torch.from_numpy(np.asarray(items["terminated"], dtype=bool))

        next_target, _ = self.net.forward_cached(next_obs, target=True)
        next_online = self.net.forward_cached(next_obs)[0] if cfg.double_q else None
        targets = td_targets(rewards, discounts, terminated, next_target, next_online)
        q_all, cache = self.net.forward_cached(obs)
        q_taken = q_all.gather(1, actions).squeeze(1)
        w = torch.from_numpy(np.asarray(weights, dtype=np.float32)) if cfg.prioritized else None
        loss = td_loss_grads(q_taken, targets, w, cfg.huber)
        grad_q = torch.zeros_like(q_all).scatter_(1, actions, loss.grad_q_taken.unsqueeze(1))
        self.net.backward(cache, grad_q)
        norm = clip_grad_norm(self.net.flat, cfg.max_grad_norm)
        self.optimizer.step()
        self.gradient_steps += 1
        if cfg.prioritized:
            priorities = loss.td_errors.abs().numpy().astype(np.float64) + cfg.per_eps
            self.replay.update_priorities(indices, priorities)
        return float(loss.loss), float(q_taken.mean()), norm

    def _writer_for(self, source: int) -> Writer:
        if not 0 <= source < len(self.writers):
            raise ValueError(
                f"fragment from actor stream {source}, but this learner has "
                f"{len(self.writers)} n-step writer(s) (streams 0..{len(self.writers) - 1})"
            )
        return self.writers[source]

    def state_dict(self) -> dict[str, Any]:
        """Tensors (weights, target, Adam moments) and JSON-able counters + replay state."""
        opt = self.optimizer.state_dict()
        return {
            "tensors": {
                "net/flat": self.net.flat.detach().clone(),
                "net/target": self.net.target.clone(),
                "optim/exp_avg": opt["exp_avg"],
                "optim/exp_avg_sq": opt["exp_avg_sq"],
            },
            "meta": {
                "version": self.version,
                "env_steps": self.env_steps,
                "gradient_steps": self.gradient_steps,
                "inserted": self.inserted,
                "last_target_update": self.last_target_update,
                "optim_steps": opt["steps"],
                "lr": opt["lr"],
            },
            "replay": self.replay.state_dict(),
            "writer": [w.state_dict() for w in self.writers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly."""
        tensors, meta = state["tensors"], state["meta"]
        with torch.no_grad():
            self.net.flat.copy_(tensors["net/flat"])
            self.net.target.copy_(tensors["net/target"])
        self.optimizer.load_state_dict(
            {
                "exp_avg": tensors["optim/exp_avg"],
                "exp_avg_sq": tensors["optim/exp_avg_sq"],
                "steps": meta["optim_steps"],
                "lr": meta["lr"],
            }
        )
        self.version = int(meta["version"])
        self.env_steps = int(meta["env_steps"])
        self.gradient_steps = int(meta["gradient_steps"])
        self.inserted = int(meta.get("inserted", 0))
        self.last_target_update = int(meta["last_target_update"])
        self.replay.load_state_dict(state["replay"])
        writer_states = state["writer"]
        if isinstance(writer_states, Mapping):  # one stream (inline runs)
            writer_states = [writer_states]
        for writer, writer_state in zip(self.writers, writer_states, strict=False):
            writer.load_state_dict(writer_state)
