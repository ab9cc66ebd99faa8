"""Torch modules: MLP torsos and policy/value heads."""

from rlops.nets.mlp import ACTIVATIONS, MLP, orthogonal_init
from rlops.nets.optim import FlatAdam, clip_grad_norm

__all__ = ["ACTIVATIONS", "MLP", "FlatAdam", "clip_grad_norm", "orthogonal_init"]
