"""rlops/ContentFeed-v0: masks, the sensational cap, delayed reward, baselines, contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rlops.core.errors import ConfigError, EnvError
from rlops.envs import check_vector_env, make_vec, run_episodes
from rlops.envs.business.content_feed import (
    EPISODE_FIELDS,
    BaselinePolicy,
    ContentFeedParams,
    ContentFeedVectorEnv,
    make_content_feed,
    masks_from_obs,
    popularity_policy,
    random_policy,
)

A, K = ContentFeedParams().num_items, ContentFeedParams().num_topics


def _mean_return(
    env: ContentFeedVectorEnv, policy: BaselinePolicy, sessions: int, seed: int
) -> float:
    # run_episodes calls act(obs, env.action_masks()) for an env with action masks.
    return run_episodes(env, policy, sessions, seed).mean_return


def _balanced(env: ContentFeedVectorEnv) -> BaselinePolicy:
    """Best-quality non-sensational eligible item, avoiding the previous item's topic."""
    cat, p = env.catalogue, env.params
    start = p.num_items + 2 * p.num_topics

    def act(obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        last = obs[:, start : start + p.num_topics]  # one-hot previous topic
        score = np.where(masks & ~cat.sensational, cat.quality, -np.inf) - last[:, cat.topic]
        return score.argmax(axis=1)

    return act


def _always_sensational(env: ContentFeedVectorEnv) -> BaselinePolicy:
    """A sensational item whenever one is eligible (best quality first), else the best item."""
    cat = env.catalogue

    def act(obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        score = np.where(masks, cat.quality + 10.0 * cat.sensational, -np.inf)
        return score.argmax(axis=1)

    return act


def _rollout(env: ContentFeedVectorEnv, steps: int, seed: int) -> list[Any]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out: list[Any] = [obs]
    for _ in range(steps):
        obs, rewards, terminated, truncated, info = env.step(
            rng.integers(0, env.params.num_items, env.num_envs)
        )
        out += [obs, rewards, terminated, truncated, info["shown"], info["engagement"]]
    return out


# --------------------------------------------------------------------------- constraints


def test_shown_item_is_always_eligible_and_violations_are_counted() -> None:
    env = ContentFeedVectorEnv(16)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    total = np.zeros(16, dtype=np.int64)
    for _ in range(400):
        masks = env.action_masks()
        assert masks.any(axis=1).all()
        np.testing.assert_array_equal(masks, masks_from_obs(obs, A))
        chosen = rng.integers(0, A, 16)
        obs, _, _, _, info = env.step(chosen)
        rows = np.arange(16)
        assert masks[rows, info["shown"]].all(), "an ineligible item was shown"
        expected = (~masks[rows, chosen]).astype(np.int64)
        np.testing.assert_array_equal(info["constraint_violations"], expected)
        np.testing.assert_array_equal(info["shown"][expected == 0], chosen[expected == 0])
        np.testing.assert_array_equal(
            info["sensational_shown"], env.catalogue.sensational[info["shown"]]
        )
        total += expected
    np.testing.assert_array_equal(env.constraint_violations_total, total)
    assert total.sum() > 0
    env.reset(seed=1)
    assert env.constraint_violations_total.sum() == 0


def test_ineligible_choice_shows_the_best_quality_eligible_item() -> None:
    env = ContentFeedVectorEnv(1)
    env.reset(seed=3)
    masks = env.action_masks()
    sensational = np.flatnonzero(env.catalogue.sensational)
    assert not masks[0, sensational].any(), "cap 0.2: nothing sensational on the first step"
    eligible = np.flatnonzero(masks[0])
    fallback = eligible[np.argmax(env.catalogue.quality[eligible])]
    _, _, _, _, info = env.step(np.array([sensational[0]]))
    assert info["shown"].tolist() == [fallback]
    assert info["constraint_violations"].tolist() == [1]
    assert info["sensational_shown"].tolist() == [False]
    assert env.constraint_violations_total.tolist() == [1]


@pytest.mark.parametrize("cap", [0.0, 0.2, 0.5])
def test_sensational_share_never_exceeds_the_cap(cap: float) -> None:
    env = ContentFeedVectorEnv(32, params=ContentFeedParams(sensational_cap=cap))
    obs, _ = env.reset(seed=0)
    pushy = _always_sensational(env)
    sensational_items = np.flatnonzero(env.catalogue.sensational)
    shown = np.zeros(32)
    sensational = np.zeros(32)
    rng = np.random.default_rng(0)
    for t in range(600):
        # Alternate between the greedy policy and forcing a sensational item outright.
        actions = pushy(obs, env.action_masks()) if t % 2 else rng.choice(sensational_items, 32)
        obs, _, terminated, truncated, info = env.step(actions)
        shown += 1
        sensational += info["sensational_shown"]
        assert (sensational <= cap * shown + 1e-9).all()
        done = terminated | truncated
        shown[done] = 0
        sensational[done] = 0
    if cap > 0:
        assert sensational.sum() > 0 or env.constraint_violations_total.sum() > 0


# --------------------------------------------------------------------------- reward


def test_delayed_reward_hand_case() -> None:
    # Deterministic user: never leaves, clicks sensational items for sure (boost 1) and
    # never clicks anything else (affinity 0 on every topic, set through the state dict).
    params = ContentFeedParams(
        max_steps=6,
        delay=3,
        sensational_cap=1.0,
        unavailable_prob=0.0,
        sensational_boost=1.0,
        fatigue_click_penalty=0.0,
        base_leave_prob=0.0,
        fatigue_leave_prob=0.0,
        boredom_leave_prob=0.0,
    )
    env = ContentFeedVectorEnv(1, params=params)
    env.reset(seed=0)
    state = env.state_dict()
    state["arrays"]["affinity"][:] = 0.0
    env.load_state_dict(state)
    s = int(np.flatnonzero(env.catalogue.sensational)[0])
    n = int(np.flatnonzero(~env.catalogue.sensational)[0])
    rewards, engagement = [], []
    for t, item in enumerate([s, n, s, s, n, n], start=1):
        _, reward, terminated, truncated, info = env.step(np.array([item]))
        rewards.append(float(reward[0]))
        engagement.append(float(info["engagement"][0]))
        assert not terminated[0]
        assert truncated[0] == (t == 6)
    assert engagement == [1, 0, 1, 1, 0, 0]
    # r_t = e_{t-3}; the last step adds everything still pending: e_3 + e_4 + e_5 + e_6.
    assert rewards == [0, 0, 0, 1, 0, 1 + 1 + 0 + 0]


@pytest.mark.parametrize("delay", [0, 1, 4])
def test_reward_is_engagement_delay_steps_later_and_return_is_total_engagement(delay: int) -> None:
    env = ContentFeedVectorEnv(8, params=ContentFeedParams(delay=delay))
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    history: list[list[float]] = [[] for _ in range(8)]
    returns = np.zeros(8)
    engaged = np.zeros(8)
    finished = 0
    for _ in range(500):
        _, rewards, terminated, truncated, info = env.step(rng.integers(0, A, 8))
        done = terminated | truncated
        returns += rewards
        engaged += info["engagement"]
        for i in range(8):
            history[i].append(float(info["engagement"][i]))
            if not done[i]:
                t = len(history[i])
                expected = history[i][t - 1 - delay] if t > delay else 0.0
                assert rewards[i] == expected
        for i in np.flatnonzero(done):
            assert returns[i] == engaged[i]
            returns[i] = engaged[i] = 0.0
            history[i] = []
            finished += 1
    assert finished > 20


# --------------------------------------------------------------------------- baselines


def test_always_sensational_wins_short_term_but_loses_over_a_session() -> None:
    env = ContentFeedVectorEnv(512, params=ContentFeedParams(sensational_cap=1.0))
    balanced, pushy = _balanced(env), _always_sensational(env)
    first = {}
    for name, policy in (("balanced", balanced), ("sensational", pushy)):
        obs, _ = env.reset(seed=11)
        first[name] = float(env.step(policy(obs, env.action_masks()))[4]["engagement"].mean())
    assert first["sensational"] > first["balanced"] + 0.1  # the short-term gain

    env = ContentFeedVectorEnv(64, params=ContentFeedParams(sensational_cap=1.0))
    long_run_balanced = _mean_return(env, _balanced(env), 1000, seed=12)
    long_run_pushy = _mean_return(env, _always_sensational(env), 1000, seed=12)
    assert long_run_pushy < 0.5 * long_run_balanced  # measured ~2.3 vs ~10.2


def test_popularity_beats_random_and_baselines_never_violate() -> None:
    env = ContentFeedVectorEnv(64)
    popularity = _mean_return(env, popularity_policy(env.catalogue), 1000, seed=21)
    assert env.constraint_violations_total.sum() == 0
    rand = _mean_return(env, random_policy(0), 1000, seed=21)
    assert env.constraint_violations_total.sum() == 0
    assert popularity > rand + 0.5  # measured ~5.9 vs ~4.4


# --------------------------------------------------------------------------- contract


def test_same_seed_same_trajectory_different_seed_differs() -> None:
    one = _rollout(ContentFeedVectorEnv(4), 150, seed=7)
    two = _rollout(ContentFeedVectorEnv(4), 150, seed=7)
    other = _rollout(ContentFeedVectorEnv(4), 150, seed=8)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))


def test_action_masks_follow_autoreset_and_final_obs() -> None:
    env = ContentFeedVectorEnv(16, params=ContentFeedParams(max_steps=5))
    obs, _ = env.reset(seed=2)
    ended_once = False
    for _ in range(30):
        obs, _, terminated, truncated, info = env.step(np.zeros(16, dtype=np.int64))
        masks = env.action_masks()
        np.testing.assert_array_equal(masks, masks_from_obs(obs, A))
        done = terminated | truncated
        if done.any():
            ended_once = True
            np.testing.assert_array_equal(info["_final_obs"], done)
            # A new session: nothing shown yet, so nothing sensational is eligible.
            assert not masks[done][:, env.catalogue.sensational].any()
            assert (obs[done, -3] == 0).all()
            assert (info["final_obs"][done, -3] > 0).all()
    assert ended_once


def test_randomization_redraws_per_episode() -> None:
    spec = {"sensational_boost": [0.1, 0.5], "base_leave_prob": {"choice": [0.0, 0.2]}}
    env = make_content_feed(8, randomize=spec, max_steps=10)
    env.reset(seed=0)
    before = env.episode_params()
    assert np.unique(before["sensational_boost"]).size == 8
    assert ((before["sensational_boost"] >= 0.1) & (before["sensational_boost"] <= 0.5)).all()
    np.testing.assert_array_equal(before["sensational_cap"], np.full(8, 0.2))
    redrawn = np.zeros(8, dtype=bool)
    for _ in range(10):
        _, _, terminated, truncated, _ = env.step(np.zeros(8, dtype=np.int64))
        after = env.episode_params()
        done = terminated | truncated
        changed = after["sensational_boost"] != before["sensational_boost"]
        np.testing.assert_array_equal(changed, done)
        redrawn |= done
        before = after
    assert redrawn.all()  # max_steps=10: every session ended at least once
    again = make_content_feed(8, randomize=spec, max_steps=10)
    again.reset(seed=0)
    first = make_content_feed(8, randomize=spec, max_steps=10)
    first.reset(seed=0)
    for name, values in first.episode_params().items():
        np.testing.assert_array_equal(again.episode_params()[name], values)


def test_state_dict_round_trip_continues_identically() -> None:
    env = make_content_feed(6, randomize={"repeat_fatigue": [0.0, 0.3]})
    env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(23):
        env.step(rng.integers(0, A, 6))
    clone = make_content_feed(6, randomize={"repeat_fatigue": [0.0, 0.3]})
    clone.load_state_dict(env.state_dict())
    np.testing.assert_array_equal(clone.action_masks(), env.action_masks())
    for _ in range(60):
        actions = rng.integers(0, A, 6)
        out, out_clone = env.step(actions), clone.step(actions)
        for a, b in zip(out[:4], out_clone[:4]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(out[4]["shown"], out_clone[4]["shown"])
    np.testing.assert_array_equal(
        env.constraint_violations_total, clone.constraint_violations_total
    )
    with pytest.raises(EnvError, match="num_envs"):
        ContentFeedVectorEnv(2).load_state_dict(env.state_dict())
    with pytest.raises(EnvError, match="before reset"):
        ContentFeedVectorEnv(2).state_dict()


def test_check_vector_env_and_registry() -> None:
    check_vector_env(ContentFeedVectorEnv(4), steps=300)
    env = make_vec(
        "rlops/ContentFeed-v0",
        3,
        num_items=10,
        num_topics=3,
        randomize={"fatigue_decay": [0.7, 0.9]},
    )
    check_vector_env(env, steps=300)
    assert env.single_action_space.n == 10
    assert env.single_observation_space.shape == (10 + 3 * 3 + 3,)


def test_bad_actions_raise() -> None:
    env = ContentFeedVectorEnv(2)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(EnvError, match="integer"):
        env.step(np.zeros(2))
    with pytest.raises(EnvError, match=r"\[0, 16\)"):
        env.step(np.array([0, 16]))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_items": 1}, "ContentFeedParams.num_items"),
        ({"num_topics": 20}, "ContentFeedParams.num_topics"),
        ({"delay": -1}, "ContentFeedParams.delay"),
        ({"max_steps": 2.5}, "ContentFeedParams.max_steps"),
        ({"sensational_cap": 1.5}, "ContentFeedParams.sensational_cap"),
        ({"unavailable_prob": 1.0}, "ContentFeedParams.unavailable_prob"),
        ({"sensational_fraction": 0.99}, "ContentFeedParams.sensational_fraction"),
        ({"interest_concentration": 0.0}, "ContentFeedParams.interest_concentration"),
        ({"repeat_fatigue": -0.1}, "ContentFeedParams.repeat_fatigue"),
        ({"bogus": 1}, "env.kwargs.bogus"),
        ({"randomize": {"delay": [1, 2]}}, "env.kwargs.randomize.delay"),
        ({"randomize": {"nope": [1, 2]}}, "env.kwargs.randomize.nope"),
        ({"randomize": {"sensational_cap": [0.5, 1.5]}}, "randomize.sensational_cap"),
        ({"randomize": {"base_leave_prob": {"normal": [0.1, 0.1]}}}, "randomize.base_leave_prob"),
    ],
)
def test_bad_params_raise_config_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make_vec("rlops/ContentFeed-v0", 2, **kwargs)


def test_episode_fields_are_the_float_fields_except_the_catalogue_share() -> None:
    floats = {name for name, value in vars(ContentFeedParams()).items() if isinstance(value, float)}
    assert set(EPISODE_FIELDS) == floats - {"sensational_fraction"}
