"""Offline learning from decision logs: the hybrid online loop's "new candidate" step.

* :func:`train_bandit`: a softmax policy maximising the IPS or doubly robust
  estimate of its value on one-step logs (contextual bandits);
* :func:`train_cql`: discrete conservative Q-learning, CQL(H) (Kumar et al.
  2020), on logged episodes;
* :func:`save_offline_policy`: either result as a normal policy artifact
  (``categorical`` or ``q`` head) with the log's lineage in its manifest.

Input is any object shaped like ``rlops.evaluation.ope.data.BanditData`` or
``EpisodeData`` (this package sits below ``evaluation`` and does not import it)::

    records = load_decisions("decisions.sqlite")
    result = train_bandit(to_bandit(records), BanditConfig(objective="dr"), seed=0)
    save_offline_policy("runs/offline/artifact", result, lineage=log_lineage(...))

Torch-backed parts load on first use, so configs validate without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.algos.offline.config import BanditConfig, CQLConfig
from rlops.core.lazy import lazy_exports

_LAZY = {
    "OfflineResult": "rlops.algos.offline.artifact",
    "PolicyNetwork": "rlops.algos.offline.networks",
    "OfflineQNetwork": "rlops.algos.offline.networks",
    "check_discrete": "rlops.algos.offline.data",
    "cql_loss": "rlops.algos.offline.loss",
    "default_algo": "rlops.algos.offline.data",
    "dr_terms": "rlops.algos.offline.loss",
    "episodes_to_transitions": "rlops.algos.offline.data",
    "ips_terms": "rlops.algos.offline.loss",
    "log_lineage": "rlops.algos.offline.artifact",
    "policy_value_loss": "rlops.algos.offline.loss",
    "save_offline_policy": "rlops.algos.offline.artifact",
    "train_bandit": "rlops.algos.offline.learner",
    "train_cql": "rlops.algos.offline.learner",
}

if TYPE_CHECKING:
    from rlops.algos.offline.artifact import OfflineResult, log_lineage, save_offline_policy
    from rlops.algos.offline.data import check_discrete, default_algo, episodes_to_transitions
    from rlops.algos.offline.learner import train_bandit, train_cql
    from rlops.algos.offline.loss import cql_loss, dr_terms, ips_terms, policy_value_loss
    from rlops.algos.offline.networks import OfflineQNetwork, PolicyNetwork

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "BanditConfig",
    "CQLConfig",
    "OfflineQNetwork",
    "OfflineResult",
    "PolicyNetwork",
    "check_discrete",
    "cql_loss",
    "default_algo",
    "dr_terms",
    "episodes_to_transitions",
    "ips_terms",
    "log_lineage",
    "policy_value_loss",
    "save_offline_policy",
    "train_bandit",
    "train_cql",
]
