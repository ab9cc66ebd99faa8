"""Business simulators: pricing, autoscaling, content selection.

numpy-batched, same-step-autoreset vector envs (the :mod:`rlops.envs.base`
contract), each with a frozen params dataclass whose numeric fields
:class:`~rlops.envs.randomization.DomainRandomization` can draw per episode,
dynamics documented with units in the module docstring, and the baselines
teams run today. They register as ``rlops/Pricing-v0``,
``rlops/Autoscaling-v0`` and ``rlops/ContentFeed-v0``.
"""
