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
    assert all(float(layer.bias.detach().abs().max()) == 0.0 for layer in mlp.layers)


@pytest.mark.parametrize("fused", [True, False])
def test_flat_adam_matches_torch_adam_step_by_step(
    fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlops.nets import FlatAdam, optim

    if not fused:  # the in-place op sequence used where the fused kernel is missing
        monkeypatch.setattr(optim, "_FUSED_ADAM", None)

    ref = torch.nn.Parameter(torch.randn(40, generator=torch.Generator().manual_seed(0)))
    mine = torch.nn.Parameter(ref.detach().clone())
    torch_adam = torch.optim.Adam([ref], lr=3e-3, eps=1e-5)
    flat_adam = FlatAdam(mine, lr=3e-3, eps=1e-5)
    g = torch.Generator().manual_seed(1)
    for step in range(60):
        grad = torch.randn(40, generator=g) * (step + 1)
        if step == 30:  # learning-rate changes between steps, as schedules do
            torch_adam.param_groups[0]["lr"] = flat_adam.lr = 1e-3
        ref.grad, mine.grad = grad.clone(), grad.clone()
        torch_adam.step()
        flat_adam.step()
        torch.testing.assert_close(mine.detach(), ref.detach(), rtol=0, atol=1e-6)


def test_flat_adam_state_round_trip_continues_identically() -> None:
    from rlops.nets import FlatAdam

    a = torch.nn.Parameter(torch.zeros(5))
    opt_a = FlatAdam(a, lr=0.01)
    for _ in range(3):
        a.grad = torch.arange(5.0)
        opt_a.step()
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = FlatAdam(b, lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    a.grad = b.grad = torch.ones(5)
    opt_a.step()
    opt_b.step()
    assert torch.equal(a.detach(), b.detach())
    assert opt_b.steps == 4 and opt_b.lr == 0.01


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clip_grad_norm_matches_torch(scale: float) -> None:
    from rlops.nets import clip_grad_norm

    grad = torch.randn(30, generator=torch.Generator().manual_seed(2)) * scale
    ref = torch.nn.Parameter(torch.zeros(30))
    mine = torch.nn.Parameter(torch.zeros(30))
    ref.grad, mine.grad = grad.clone(), grad.clone()
    ref_norm = torch.nn.utils.clip_grad_norm_([ref], 0.5)
    norm = clip_grad_norm(mine, 0.5)
    assert norm == pytest.approx(float(ref_norm), rel=1e-6)
    torch.testing.assert_close(mine.grad, ref.grad)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("k,sizes", [(1, [3, 32, 32, 2]), (2, [5, 16, 1]), (2, [4, 20, 24])])
def test_stacked_mlp_hand_backward_matches_autograd(
    activation: str, k: int, sizes: list[int]
) -> None:
    from rlops.nets import StackedMLP

    torch.manual_seed(0)
    net = StackedMLP(k, sizes, activation, extra={"scale": (3,)})
    net.init_uniform()
    x = torch.randn(7, sizes[0], requires_grad=True)
    weight = torch.randn(k, 7, sizes[-1])
    # Reference: autograd through forward() of sum(weight * out).
    (weight * net(x)).sum().backward()
    ref_grad = net.flat.grad.clone()
    ref_input_grad = x.grad.clone()
    net.flat.grad = None
    with torch.no_grad():
        out, cache = net.forward_cached(x.detach())
        torch.testing.assert_close(out, net(x).detach(), rtol=1e-5, atol=1e-6)
        input_grad = net.backward(cache, weight, need_input_grad=True)
    assert input_grad is not None
    n_layer_params = net.flat.numel() - 3
    torch.testing.assert_close(
        net.flat.grad[:n_layer_params], ref_grad[:n_layer_params], rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(input_grad.sum(0), ref_input_grad, rtol=1e-4, atol=1e-6)


def test_stacked_mlp_forward_with_other_flat_vector() -> None:
    from rlops.nets import StackedMLP

    net = StackedMLP(1, [3, 8, 2], "relu")
    net.init_uniform()
    target = net.flat.detach().clone()
    x = torch.randn(4, 3)
    with torch.no_grad():
        before, _ = net.forward_cached(x)
        net.flat.add_(1.0)
        moved, _ = net.forward_cached(x)
        frozen, _ = net.forward_cached(x, flat=target)
    assert not torch.allclose(moved, before)
    torch.testing.assert_close(frozen, before)
