"""Torch modules: MLP torsos and policy/value heads."""

from rlops.nets.mlp import ACTIVATIONS, MLP, orthogonal_init
from rlops.nets.optim import FlatAdam, clip_grad_norm
from rlops.nets.stacked import StackedMLP

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "FlatAdam",
    "StackedMLP",
    "clip_grad_norm",
    "orthogonal_init",
]
