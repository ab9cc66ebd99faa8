"""Serving: ``POST /v1/act`` -> action + propensity + decision_id, every decision logged.

Pure modules (:mod:`~rlops.serving.config`, :mod:`~rlops.serving.behaviour`,
:mod:`~rlops.serving.schemas`, :mod:`~rlops.serving.decision_log`) import no
server code; :mod:`rlops.serving.app` needs the ``serve`` extra
(``pip install 'rlops[serve]'``: starlette, uvicorn, orjson) and loads lazily.

>>> from rlops.serving import ServeConfig, create_app  # doctest: +SKIP
>>> app = create_app(ServeConfig(artifact="runs/cartpole/artifact"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.core.lazy import lazy_exports
from rlops.serving.config import ServeConfig

if TYPE_CHECKING:
    from rlops.serving.app import create_app
    from rlops.serving.decision_log import DecisionLog, integrity_check, iter_decisions

__getattr__ = lazy_exports(
    __name__,
    {
        "create_app": "rlops.serving.app",
        "DecisionLog": "rlops.serving.decision_log",
        "integrity_check": "rlops.serving.decision_log",
        "iter_decisions": "rlops.serving.decision_log",
    },
)

__all__ = ["DecisionLog", "ServeConfig", "create_app", "integrity_check", "iter_decisions"]
