"""Synthetic contextual bandits with a known answer, for testing off-policy estimators.

The protocol follows the synthetic benchmark of the Open Bandit Pipeline
(Saito et al. 2020, "Open Bandit Dataset and Pipeline", ``SyntheticBanditDataset``
with ``logistic_reward_function``); it is re-implemented here from its
description, not copied:

* contexts ``x ~ N(0, I_d)``; actions ``a in {0..K-1}`` embedded one-hot;
* expected reward ``q(x, a) = sigmoid(z(x, a))`` with a random logit that is
  linear in the context, the action and their interaction::

      z(x, a) = c0 + c . x + alpha_a + m0_a + m_a . x

  every coefficient drawn from ``Uniform(-1, 1)`` once per environment seed,
  then standardised to mean 0 and standard deviation 1 over ``x ~ N(0, I)``
  and a uniformly drawn action. OBP standardises by the moments of each drawn
  sample; here the population moments are computed exactly (they have a closed
  form for Gaussian contexts), so every sample of one environment shares one
  reward function;
* binary rewards ``r ~ Bernoulli(q(x, a))``;
* behaviour policy ``softmax(beta * q(x, .))`` (``beta = -3`` prefers the worse
  actions, which makes evaluating a good policy hard);
* evaluation policy: a multinomial logistic classifier learned on an
  independent logged sample by inverse-propensity-weighted classification
  (OBP's ``IPWLearner`` with a logistic regression: maximise
  ``sum_i (r_i / p_i) log p(a_i | x_i)``). OBP's published benchmark
  evaluated ``IPWLearner.predict_proba``, which is ``softmax`` of the
  classifier's probabilities: a near-uniform policy tilted towards the learned
  actions (``kind="obp"``, the default here, so that the reference numbers
  compare like with like). ``kind="greedy"`` evaluates the deterministic
  argmax policy instead, a much harder problem for importance weighting;
* ground truth: ``value`` is the mean of ``sum_a pi_e(a|x_i) q(x_i, a)`` over the
  logged contexts themselves (OBP's ``calc_ground_truth_policy_value``; the
  reference relative errors are measured against it), and
  ``population_value`` is the same mean over a large fresh context sample (the
  quantity a confidence interval over decisions should cover).

>>> problem = make_problem(seed=0, n_rounds=2000)
>>> problem.data.n, problem.data.n_actions, problem.target.shape
(2000, 30, (2000, 30))
>>> bool(0.0 < problem.value < 1.0)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from rlops.core.config import check
from rlops.evaluation.ope.data import BanditData

__all__ = [
    "IPWPolicy",
    "PolicyKind",
    "SyntheticBandit",
    "SyntheticBanditConfig",
    "SyntheticProblem",
    "learn_ipw_policy",
    "make_problem",
]


@dataclass(frozen=True, kw_only=True)
class SyntheticBanditConfig:
    """The environment of the OBP-style synthetic protocol."""

    n_actions: int = 30
    """``K``, the number of actions."""
    dim_context: int = 5
    """``d``, the context dimension."""
    beta: float = -3.0
    """Inverse temperature of the behaviour policy ``softmax(beta * q(x, .))``;
    negative values prefer low-reward actions."""

    def __post_init__(self) -> None:
        check(self.n_actions >= 2, "n_actions", f"must be >= 2, got {self.n_actions}")
        check(self.dim_context >= 1, "dim_context", f"must be >= 1, got {self.dim_context}")
        check(np.isfinite(self.beta), "beta", f"must be finite, got {self.beta}")


class SyntheticBandit:
    """One random environment: a fixed reward function and behaviour policy.

    >>> env = SyntheticBandit(SyntheticBanditConfig(n_actions=4, dim_context=2), seed=1)
    >>> data, q = env.sample(100, np.random.default_rng(0))
    >>> data.behaviour.shape, q.shape
    ((100, 4), (100, 4))
    """

    def __init__(self, config: SyntheticBanditConfig | None = None, *, seed: int = 0) -> None:
        """Args:
        config: the environment's sizes and behaviour temperature.
        seed: draws the reward function's coefficients.
        """
        self.config = config or SyntheticBanditConfig()
        k, d = self.config.n_actions, self.config.dim_context
        rng = np.random.default_rng(seed)
        c0 = rng.uniform(-1.0, 1.0)
        c = rng.uniform(-1.0, 1.0, size=d)
        alpha = rng.uniform(-1.0, 1.0, size=k)
        m = rng.uniform(-1.0, 1.0, size=(d + 1, k))
        # z(x, a) = offset_a + x . slope[:, a]
        offset = c0 + alpha + m[0]
        slope = c[:, None] + m[1:]
        # Exact moments over x ~ N(0, I) and a ~ Uniform(K): E z = mean_a offset_a,
        # Var z = Var_a(offset_a) + mean_a |slope_a|^2.
        mean = offset.mean()
        std = np.sqrt(offset.var() + np.mean(np.sum(slope**2, axis=0)))
        self._offset = (offset - mean) / std
        self._slope = slope / std

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, d]`` standard normal contexts."""
        return rng.standard_normal((n, self.config.dim_context))

    def expected_reward(self, contexts: np.ndarray) -> np.ndarray:
        """``q(x, a)``: ``[n, K]`` expected rewards in (0, 1)."""
        logits = self._offset + contexts @ self._slope
        out: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return out

    def behaviour(self, contexts: np.ndarray) -> np.ndarray:
        """``[n, K]`` behaviour distributions ``softmax(beta * q(x, .))``."""
        return _softmax(self.config.beta * self.expected_reward(contexts))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[BanditData, np.ndarray]:
        """Log ``n`` decisions of the behaviour policy.

        Returns:
            ``(data, q)``: the log (with ``behaviour`` filled in) and the
            expected rewards ``[n, K]`` of its contexts.
        """
        x = self.contexts(n, rng)
        q = self.expected_reward(x)
        mu = _softmax(self.config.beta * q)
        actions = sample_actions(mu, rng)
        rows = np.arange(n)
        rewards = (rng.random(n) < q[rows, actions]).astype(np.float64)
        data = BanditData(
            observations=x,
            actions=actions,
            rewards=rewards,
            propensities=mu[rows, actions],
            n_actions=self.config.n_actions,
            behaviour=mu,
        )
        return data, q

    def population_value(
        self,
        policy: IPWPolicy,
        rng: np.random.Generator,
        *,
        n: int = 200_000,
        chunk: int = 50_000,
    ) -> float:
        """``E_x sum_a pi(a|x) q(x, a)`` estimated on ``n`` fresh contexts (Monte Carlo)."""
        total = 0.0
        for start in range(0, n, chunk):
            x = self.contexts(min(chunk, n - start), rng)
            total += float(np.sum(policy.distribution(x) * self.expected_reward(x)))
        return total / n


PolicyKind = Literal["obp", "greedy", "classifier"]
"""How :class:`IPWPolicy` turns its classifier into action probabilities:

* ``obp``: ``softmax(classifier probabilities / 1)``, what OBP's
  ``IPWLearner.predict_proba`` returns and what its published synthetic
  benchmark evaluated. The classifier's probabilities lie in [0, 1], so this
  policy is close to uniform (tilted towards the learned actions): weights stay
  near 1 and the problem is easy for importance weighting;
* ``greedy``: the classifier's argmax (``IPWLearner.predict``), a deterministic
  policy; importance weights are ``1 / mu(a|x)`` on matching actions and the
  problem is much harder (effective sample size about 1.5% here);
* ``classifier``: the classifier's probabilities themselves.
"""


class IPWPolicy:
    """A multinomial logistic classifier ``p(a|x) = softmax(W [1, x])`` used as a policy."""

    def __init__(self, weights: np.ndarray, *, kind: PolicyKind = "obp") -> None:
        """Args:
        weights: ``[K, d + 1]`` (the first column multiplies a constant 1).
        kind: how probabilities are formed (see :data:`PolicyKind`).
        """
        self.weights = weights
        self.kind = kind

    def distribution(self, contexts: np.ndarray) -> np.ndarray:
        """``[n, K]`` action distributions."""
        probs = _softmax(_with_bias(contexts) @ self.weights.T)
        if self.kind == "classifier":
            return probs
        if self.kind == "obp":
            return _softmax(probs)
        out = np.zeros_like(probs)
        out[np.arange(len(probs)), np.argmax(probs, axis=1)] = 1.0
        return out


def learn_ipw_policy(
    data: BanditData, *, kind: PolicyKind = "obp", l2: float = 1e-2, max_iter: int = 100
) -> IPWPolicy:
    """Learn a policy from a log by inverse-propensity-weighted classification.

    Minimises ``-sum_i (r_i / p_i) log p(a_i | x_i) + l2/2 |W|^2`` over a
    multinomial logistic classifier ``p``: the reduction of off-policy
    learning to weighted classification that OBP's ``IPWLearner`` uses
    (Zadrozny 2003; Dudik et al. 2011). Rewards must be non-negative.

    The optimiser is Newton's method with the Hessian's per-action diagonal
    blocks (cross-action terms dropped) and a backtracking line search: a
    handful of small ``[d+1, d+1]`` solves per step instead of one
    ``[K(d+1)]^2`` system, so it stays fast on a few shared cores.

    Args:
        data: an independent log (not the one the policy will be evaluated on).
        kind: how the policy turns class probabilities into actions.
        l2: ridge penalty (OBP used scikit-learn's ``C=100``, i.e. ``l2 = 1/C``).
        max_iter: optimiser steps at most.
    """
    x = _with_bias(data.observations)
    n, dim = x.shape
    k = data.n_actions
    sample_w = data.rewards / data.propensities
    y = np.zeros((n, k))
    y[np.arange(n), data.actions] = 1.0
    w = np.zeros((k, dim))
    outer = np.einsum("nd,ne->nde", x, x).reshape(n, dim * dim)
    eye = np.eye(dim)

    def loss(weights: np.ndarray) -> float:
        logits = x @ weights.T
        nll = -np.sum(sample_w * (np.sum(y * logits, axis=1) - _logsumexp(logits)))
        return float(nll + 0.5 * l2 * np.sum(weights**2))

    current = loss(w)
    for _ in range(max_iter):
        p = _softmax(x @ w.T)
        grad = ((p - y) * sample_w[:, None]).T @ x + l2 * w  # [K, dim]
        curvature = (p * (1.0 - p) * sample_w[:, None]).T @ outer  # [K, dim*dim]
        hess = curvature.reshape(k, dim, dim) + l2 * eye
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        t, candidate = 1.0, current
        while t > 1e-6:
            candidate = loss(w - t * step)
            if candidate <= current:
                break
            t /= 2.0
        if candidate > current:
            break
        w = w - t * step
        improvement, current = current - candidate, candidate
        if improvement <= 1e-9 * max(1.0, abs(current)):
            break
    return IPWPolicy(w, kind=kind)


class SyntheticProblem(NamedTuple):
    """One OPE task with a known answer.

    Attributes:
        data: the log to evaluate on (``n`` decisions, behaviour distributions included).
        target: ``[n, K]`` the evaluation policy's distributions on the logged contexts.
        expected_reward: ``[n, K]`` ``q(x_i, a)`` on the logged contexts.
        value: ``mean_i sum_a target[i, a] q(x_i, a)`` on the logged contexts (OBP's ground truth).
        population_value: the evaluation policy's value over fresh contexts (Monte Carlo).
        env: the environment.
        policy: the evaluation policy.
    """

    data: BanditData
    target: np.ndarray
    expected_reward: np.ndarray
    value: float
    population_value: float
    env: SyntheticBandit
    policy: IPWPolicy


def make_problem(
    seed: int,
    *,
    n_rounds: int = 10_000,
    config: SyntheticBanditConfig | None = None,
    kind: PolicyKind = "obp",
    population_rounds: int = 200_000,
) -> SyntheticProblem:
    """One run of the OBP-style protocol: a fresh environment, policy and log for ``seed``.

    The evaluation policy is learned on an independent training log of the
    same size, then the evaluation log is drawn, as in OBP's
    ``examples/synthetic`` benchmark.

    Args:
        seed: draws the environment, both logs and the Monte Carlo contexts.
        n_rounds: decisions in the training log and in the evaluation log.
        config: the environment (OBP's 30 actions, 5 context dimensions, ``beta = -3``).
        kind: the evaluation policy's form (see :data:`PolicyKind`).
        population_rounds: fresh contexts for ``population_value``.
    """
    env = SyntheticBandit(config, seed=seed)
    rng = np.random.default_rng([seed, 1])
    train, _ = env.sample(n_rounds, rng)
    policy = learn_ipw_policy(train, kind=kind)
    data, q = env.sample(n_rounds, rng)
    target = policy.distribution(data.observations)
    value = float(np.mean(np.sum(target * q, axis=1)))
    population = env.population_value(policy, rng, n=population_rounds)
    return SyntheticProblem(data, target, q, value, population, env, policy)


def sample_actions(distributions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``[n, K]`` distributions (inverse CDF, vectorised)."""
    cdf = np.cumsum(distributions, axis=1)
    u = rng.random(len(distributions)) * cdf[:, -1]
    actions: np.ndarray = np.minimum((cdf <= u[:, None]).sum(axis=1), distributions.shape[1] - 1)
    return actions.astype(np.int64)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones((len(x), 1)), x], axis=1)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    out: np.ndarray = top + np.log(np.sum(np.exp(logits - top[:, None]), axis=1))
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = z / z.sum(axis=1, keepdims=True)
    return out
