"""Adam on one flat parameter vector, without per-step Python bookkeeping.

``torch.optim.Adam.step`` spends ~100 us per call in Python (param groups,
state lookup, dtype checks) before its fused kernel runs for ~10 us. For the
small networks RL uses on CPU, that overhead is a large share of an update;
:class:`FlatAdam` does the same arithmetic (Kingma & Ba 2015, with PyTorch's
placement of epsilon) with a handful of in-place ops on one tensor.
``tests/test_nets.py`` checks it against ``torch.optim.Adam`` step by step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

_FUSED_ADAM = getattr(torch, "_fused_adam_", None)
"""PyTorch's fused Adam kernel (private API; the in-place op sequence is the fallback)."""


class FlatAdam:
    """Adam for a single flat parameter tensor.

    Args:
        param: the flat parameter (its ``.grad`` is read at each :meth:`step`).
        lr: learning rate (may be changed between steps via ``.lr``).
        betas: exponential decay rates of the first and second moments.
        eps: added to the denominator, after the bias correction (as PyTorch).

    >>> p = torch.nn.Parameter(torch.zeros(3))
    >>> opt = FlatAdam(p, lr=0.1)
    >>> p.grad = torch.ones(3)
    >>> opt.step()
    >>> p.data.tolist()  # first Adam step moves every coordinate by -lr
    [-0.10000000149011612, -0.10000000149011612, -0.10000000149011612]
    """

    def __init__(
        self,
        param: torch.Tensor,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.param = param
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = torch.zeros_like(param.data)
        self.exp_avg_sq = torch.zeros_like(param.data)
        self.steps = 0
        self._denom = torch.empty_like(param.data)
        self._step_tensor = torch.zeros((), dtype=torch.float32)

    @torch.no_grad()
    def step(self) -> None:
        """Apply one Adam update from ``param.grad``.

        Raises:
            RuntimeError: if the parameter has no gradient.
        """
        grad = self.param.grad
        if grad is None:
            raise RuntimeError("FlatAdam.step: the parameter has no .grad")
        self.steps += 1
        if _FUSED_ADAM is not None:
            # PyTorch's fused CPU Adam kernel (what torch.optim.Adam(fused=True) runs),
            # called directly: one pass over the vector, none of the Python bookkeeping.
            self._step_tensor.fill_(float(self.steps))
            _FUSED_ADAM(
                [self.param.data],
                [grad],
                [self.exp_avg],
                [self.exp_avg_sq],
                [],
                [self._step_tensor],
                lr=self.lr,
                beta1=self.beta1,
                beta2=self.beta2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
            return
        bias1 = 1.0 - self.beta1**self.steps
        bias2 = 1.0 - self.beta2**self.steps
        self.exp_avg.lerp_(grad, 1.0 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
        torch.sqrt(self.exp_avg_sq, out=self._denom)
        self._denom.div_(math.sqrt(bias2)).add_(self.eps)
        self.param.data.addcdiv_(self.exp_avg, self._denom, value=-self.lr / bias1)

    def state_dict(self) -> dict[str, Any]:
        """Moments (tensors) and counters."""
        return {
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "steps": self.steps,
            "lr": self.lr,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


@torch.no_grad()
def clip_grad_norm(param: torch.Tensor, max_norm: float) -> float:
    """Scale ``param.grad`` in place so its L2 norm is at most ``max_norm``.

    Same result as ``torch.nn.utils.clip_grad_norm_`` for one tensor.

    Returns:
        The norm before clipping.
    """
    assert param.grad is not None
    norm = float(torch.linalg.vector_norm(param.grad))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        param.grad.mul_(coef)
    return norm
