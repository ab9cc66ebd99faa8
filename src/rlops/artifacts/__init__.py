"""The policy artifact: save/load, manifest, numpy inference."""

from rlops.artifacts.numpy_net import NetworkSpec, NumpyActorCritic
from rlops.artifacts.policy import (
    FORMAT_VERSION,
    Policy,
    build_manifest,
    content_hash,
    load_policy,
    save_policy,
)
from rlops.artifacts.spaces import space_from_json, space_to_json

__all__ = [
    "FORMAT_VERSION",
    "NetworkSpec",
    "NumpyActorCritic",
    "Policy",
    "build_manifest",
    "content_hash",
    "load_policy",
    "save_policy",
    "space_from_json",
    "space_to_json",
]
