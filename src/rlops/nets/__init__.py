"""Torch modules: MLP torsos and policy/value heads."""

from rlops.nets.mlp import ACTIVATIONS, MLP, orthogonal_init

__all__ = ["ACTIVATIONS", "MLP", "orthogonal_init"]
