"""rlops.nets: MLP layout and orthogonal initialisation."""

from __future__ import annotations

import pytest
import torch

from rlops.nets import MLP, orthogonal_init


def test_mlp_layout_and_shapes() -> None:
    mlp = MLP(4, (32, 16), 3, activation="relu")
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(32, 4), (16, 32), (3, 16)]
    assert mlp(torch.zeros(5, 4)).shape == (5, 3)
    # No activation after the last layer: outputs can be negative.
    torch.manual_seed(0)
    assert (mlp(torch.randn(64, 4)) < 0).any()


@pytest.mark.parametrize("gain", [1.0, 2**0.5])
def test_orthogonal_init_rows_are_orthonormal_times_gain(gain: float) -> None:
    mlp = MLP(64, (64,), 64)
    orthogonal_init(mlp, hidden_gain=gain, out_gain=0.01)
    w0 = mlp.layers[0].weight.detach()
    torch.testing.assert_close(w0 @ w0.T, gain**2 * torch.eye(64), atol=1e-4, rtol=0)
    w1 = mlp.layers[1].weight.detach()
    torch.testing.assert_close(w1 @ w1.T, 0.01**2 * torch.eye(64), atol=1e-6, rtol=0)
    assert all(float(layer.bias.abs().max()) == 0.0 for layer in mlp.layers)
