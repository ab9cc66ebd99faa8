"""Offline learners: a contextual-bandit policy (IPS/DR) and discrete CQL, from logged arrays.

Both run a fixed number of minibatch gradient steps over the log and return
an :class:`~rlops.algos.offline.artifact.OfflineResult`; save it with
:func:`~rlops.algos.offline.artifact.save_offline_policy`. Same log, config
and seed give the same weights: parameter init runs under a forked, seeded
torch RNG and minibatches are drawn from a seeded numpy generator.

>>> data = to_bandit(load_decisions("decisions.sqlite"))  # doctest: +SKIP
>>> result = train_bandit(data, BanditConfig(objective="dr"), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from rlops.algos.dqn.loss import td_targets
from rlops.algos.offline.artifact import OfflineResult
from rlops.algos.offline.config import BanditConfig, CQLConfig
from rlops.algos.offline.data import (
    BanditLog,
    EpisodeLog,
    check_finite,
    episodes_to_transitions,
    normalize,
    obs_norm_stats,
)
from rlops.algos.offline.loss import cql_loss, dr_terms, ips_terms, policy_value_loss
from rlops.algos.offline.networks import MASKED_LOGIT, OfflineQNetwork, PolicyNetwork
from rlops.core.errors import DataError
from rlops.nets import MLP
from rlops.observability import MetricSink

LOG_POINTS = 100
"""Metric writes per run (every ``steps // LOG_POINTS`` gradient steps)."""


def _tensor(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def _check_bandit(log: BanditLog) -> None:
    """Cheap checks at the learner's boundary (the log reader does the thorough ones)."""
    obs = np.asarray(log.observations)
    n = int(np.asarray(log.actions).shape[0])
    if n == 0:
        raise DataError("log: no rewarded decision to learn from")
    if obs.ndim != 2 or obs.shape[0] != n:
        raise DataError(f"observation: expected [n={n}, d] observations, got shape {obs.shape}")
    check_finite("observation", obs)
    check_finite("reward", np.asarray(log.rewards))
    p = np.asarray(log.propensities, dtype=np.float64)
    bad = int(((p <= 0) | (p > 1 + 1e-9) | ~np.isfinite(p)).sum())
    if bad:
        raise DataError(
            f"propensity: {bad} decision(s) outside (0, 1]; importance weights need the "
            "logging policy's probability of each logged action"
        )
    a = np.asarray(log.actions)
    outside = int(((a < 0) | (a >= log.n_actions)).sum())
    if outside:
        raise DataError(f"action: {outside} decision(s) outside [0, {log.n_actions})")


def _batches(rng: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
    """Indices of one minibatch: the whole set when it is small, else uniform with replacement."""
    if n <= batch_size:
        return np.arange(n)
    return rng.integers(0, n, size=batch_size)


def _every(steps: int) -> int:
    return max(1, steps // LOG_POINTS)


@contextlib.contextmanager
def _seeded_torch(seed: int, threads: int) -> Iterator[None]:
    """Seed torch's global RNG and set its thread count inside, restore both after.

    The forked RNG keeps the caller's torch random state untouched.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


def _cross_fitted_rewards(
    x: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    n_actions: int,
    config: BanditConfig,
    rng: np.random.Generator,
    logger: MetricSink | None,
) -> torch.Tensor:
    """``[n, K]`` reward estimates ``q(x_i, a)`` for DR, each from a model that never saw ``i``.

    Per fold, a small MLP ``x -> r[K]`` is fitted by squared error on the
    logged action's output using the other folds, then predicts its own fold
    (cross-fitting; Chernozhukov et al. 2018), so the DR correction is not
    cancelled by a model that memorised the rewards it corrects.
    """
    n, folds = x.shape[0], config.reward_model_folds
    if n < folds:
        raise DataError(f"log: DR with {folds}-fold cross-fitting needs >= {folds} decisions")
    fold = rng.permutation(n) % folds
    q_hat = torch.empty(n, n_actions)
    every = _every(config.total_steps)
    for k in range(folds):
        train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = MLP(x.shape[1], config.reward_model_hidden_sizes, n_actions, "relu")
        opt = torch.optim.Adam(model.parameters(), lr=config.reward_model_lr)
        for i in range(1, config.reward_model_steps + 1):
            idx = torch.from_numpy(train[_batches(rng, train.size, config.batch_size)])
            pred = model(x[idx]).gather(1, actions[idx].unsqueeze(1)).squeeze(1)
            loss = F.mse_loss(pred, rewards[idx])
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            step = k * config.reward_model_steps + i
            if logger is not None and step % every == 0:
                logger.write({"losses/reward_model": float(loss.detach())}, step=step)
        with torch.no_grad():
            q_hat[held] = model(x[torch.from_numpy(held)])
    return q_hat


def train_bandit(
    log: BanditLog,
    config: BanditConfig,
    *,
    seed: int = 0,
    logger: MetricSink | None = None,
) -> OfflineResult:
    """Learn a softmax policy maximising the IPS or DR estimate of its value on the log.

    Args:
        log: one-step logged decisions (``rlops.evaluation.ope.data.to_bandit``).
        config: hyperparameters.
        seed: seeds parameter init, cross-fitting folds and minibatches.
        logger: receives ``losses/reward_model`` (DR) and then ``losses/policy``,
            ``charts/estimated_value_in_sample``, ``charts/entropy`` with the gradient
            step (reward models' first, ``config.total_steps`` in all) as ``step``.

    Returns:
        The policy (``categorical`` head). ``metrics`` holds the final
        in-sample estimate of its value (``charts/estimated_value_in_sample``, an
        optimistic number: the policy was chosen to maximise it) and the log's
        mean reward (``charts/logged_mean_reward``, the behaviour's on-policy value).

    Raises:
        DataError: empty log, non-finite values, propensities outside (0, 1].
    """
    _check_bandit(log)
    stats = obs_norm_stats(log.observations) if config.normalize_obs else None
    x = _tensor(normalize(log.observations, stats))
    actions = _tensor(np.asarray(log.actions), torch.int64)
    rewards = _tensor(np.asarray(log.rewards))
    props = _tensor(np.asarray(log.propensities))
    masks = None if log.masks is None else _tensor(np.asarray(log.masks), torch.bool)
    n, k = x.shape[0], int(log.n_actions)
    rng = np.random.default_rng(seed)
    every = _every(config.total_steps)
    done = config.total_steps - config.steps  # reward-model steps before the policy's
    # IPS on translated rewards estimates V - baseline; reported values add it back.
    baseline = 0.0
    with _seeded_torch(seed, config.torch_threads):
        if config.objective == "ips":
            baseline = float(rewards.mean()) if config.ips_baseline else 0.0
            terms = ips_terms(
                actions, rewards, props, k, max_weight=config.max_weight, baseline=baseline
            )
        else:
            q_hat = _cross_fitted_rewards(x, actions, rewards, k, config, rng, logger)
            terms = dr_terms(q_hat, actions, rewards, props, max_weight=config.max_weight)
        policy = PolicyNetwork(x.shape[1], k, config.hidden_sizes, config.activation)
        opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        start = time.perf_counter()
        for step in range(1, config.steps + 1):
            idx = torch.from_numpy(_batches(rng, n, config.batch_size))
            out = policy_value_loss(
                policy.log_probs(x[idx], None if masks is None else masks[idx]),
                terms[idx],
                config.entropy_coef,
            )
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(out.loss)
            opt.step()
            if logger is not None and ((done + step) % every == 0 or step == config.steps):
                logger.write(
                    {
                        "losses/policy": float(out.loss.detach()),
                        "charts/estimated_value_in_sample": float(out.value.detach()) + baseline,
                        "charts/entropy": float(out.entropy.detach()),
                        "perf/gradient_steps_per_s": step / (time.perf_counter() - start),
                    },
                    step=done + step,
                )
        with torch.no_grad():
            final = policy_value_loss(policy.log_probs(x, masks), terms, 0.0)
    metrics = {
        "charts/estimated_value_in_sample": float(final.value) + baseline,
        "charts/entropy": float(final.entropy),
        "charts/logged_mean_reward": float(rewards.mean()),
    }
    return OfflineResult(
        algo=f"bandit-{config.objective}",
        tensors=policy.numpy_tensors(),
        network=policy.spec(),
        obs_norm=stats,
        metrics=metrics,
        hyperparameters=dataclasses.asdict(config),
        seed=seed,
        samples=n,
    )


def train_cql(
    log: EpisodeLog,
    config: CQLConfig,
    *,
    seed: int = 0,
    logger: MetricSink | None = None,
) -> OfflineResult:
    """Learn a Q-network with discrete CQL(H) from logged episodes.

    Transitions are ``(s_t, a_t, r_t, s_{t+1})`` with ``done`` at each
    episode's last logged step (:func:`~rlops.algos.offline.data.episodes_to_transitions`).

    Args:
        log: logged episodes (``rlops.evaluation.ope.data.to_episodes``).
        config: hyperparameters.
        seed: seeds parameter init and minibatches.
        logger: receives ``losses/td``, ``losses/conservative``, ``losses/q_mean``
            at the gradient step as ``step``.

    Returns:
        The greedy policy as a ``q`` head with ``config.epsilon`` exploration.
        ``metrics`` holds the final losses and ``charts/greedy_agrees_with_log``
        (the share of logged decisions whose action is the learned greedy one).

    Raises:
        DataError: no logged step, non-finite observations or rewards.
    """
    t = episodes_to_transitions(log)
    check_finite("observation", t.obs)
    check_finite("reward", t.rewards)
    stats = obs_norm_stats(t.obs) if config.normalize_obs else None
    obs, next_obs = _tensor(normalize(t.obs, stats)), _tensor(normalize(t.next_obs, stats))
    actions = _tensor(t.actions, torch.int64)
    scale = config.reward_scale
    if scale is None:
        largest = float(np.abs(t.rewards).max()) if t.rewards.size else 0.0
        scale = 1.0 / largest if largest > 1e-8 else 1.0
    rewards = _tensor(t.rewards * scale)
    terminated = _tensor(t.terminated, torch.bool)
    masks = None if t.masks is None else _tensor(t.masks, torch.bool)
    next_masks = None if t.next_masks is None else _tensor(t.next_masks, torch.bool)
    n, k = t.n, int(log.n_actions)
    rng = np.random.default_rng(seed)
    every = _every(config.steps)
    with _seeded_torch(seed, config.torch_threads):
        q = OfflineQNetwork(obs.shape[1], k, config.hidden_sizes, config.activation)
        opt = torch.optim.Adam(q.online.parameters(), lr=config.lr)
        discounts = torch.full((min(n, config.batch_size),), config.gamma)
        start = time.perf_counter()
        for step in range(1, config.steps + 1):
            idx = torch.from_numpy(_batches(rng, n, config.batch_size))
            with torch.no_grad():
                nxt = next_obs[idx]
                next_target, next_online = q.target(nxt), q(nxt) if config.double_q else None
                if next_masks is not None:
                    m = next_masks[idx]
                    next_target = next_target.masked_fill(~m, float("-inf"))
                    if next_online is not None:
                        next_online = next_online.masked_fill(~m, float("-inf"))
                targets = td_targets(
                    rewards[idx], discounts, terminated[idx], next_target, next_online
                )
            q_all = q(obs[idx])
            out = cql_loss(
                q_all,
                actions[idx],
                targets,
                config.alpha,
                mask=None if masks is None else masks[idx],
                huber=config.huber,
            )
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(out.loss)
            torch.nn.utils.clip_grad_norm_(q.online.parameters(), config.max_grad_norm)
            opt.step()
            if step % config.target_update_interval == 0:
                q.update_target(config.tau)
            if logger is not None and (step % every == 0 or step == config.steps):
                logger.write(
                    {
                        "losses/td": float(out.td.detach()),
                        "losses/conservative": float(out.conservative.detach()),
                        "losses/q_mean": float(q_all.detach().mean()),
                        "perf/gradient_steps_per_s": step / (time.perf_counter() - start),
                    },
                    step=step,
                )
        with torch.no_grad():
            q_log = q(obs)
            eligible = q_log if masks is None else q_log.masked_fill(~masks, MASKED_LOGIT)
            agree = float((eligible.argmax(dim=1) == actions).float().mean())
    metrics = {
        "losses/td": float(out.td.detach()),
        "losses/conservative": float(out.conservative.detach()),
        "losses/q_mean": float(q_log.mean()),
        "charts/greedy_agrees_with_log": agree,
        "charts/reward_scale": scale,
    }
    return OfflineResult(
        algo="cql",
        tensors=q.numpy_tensors(),
        network=q.spec(config.epsilon),
        obs_norm=stats,
        metrics=metrics,
        hyperparameters=dataclasses.asdict(config),
        seed=seed,
        samples=n,
    )
