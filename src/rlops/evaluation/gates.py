"""Promotion gates: a declarative file of checks evaluated on recorded evidence.

A gate file (YAML) lists checks, each ``LEFT OP RIGHT`` where both sides are a
number or a dotted path into the evidence, and ``OP`` is one of
``>= <= > < == !=``::

    # gates/production.yaml
    gates:
      - dr.lower_95 >= baseline_value          # OPE: the candidate beats today's policy
      - dr.diagnostics.ess >= 1000             # ... on enough effective decisions
      - edge_case_suite.violations == 0        # no constraint violations on edge cases
      - name: stays close to production
        check: kl_to_production <= 0.1

Evidence is a set of JSON documents (an ``rlops ope --json`` report, a suite
report, anything with numbers) merged into one namespace: a document given as
``NAME=PATH`` is mounted under ``NAME``; one given as a bare ``PATH`` has its
top-level keys merged in (a key defined twice is an error, not a silent
override).

A check whose path is missing from the evidence **fails** (thin evidence is a
reason to refuse, never to pass), as does a value that is not a finite
number. :func:`check_gates` returns a :class:`GateResult` that records every
number that decided it, the gate file's hash and each evidence file's hash,
so the registry can store it and anyone can re-run it.

>>> result = check_gates({"gates": ["dr.lower_95 >= 0.5"]}, {"dr": {"lower_95": 0.61}})
>>> result.passed, result.checks[0].left
(True, 0.61)
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlops.core.errors import ConfigError

__all__ = ["Check", "GateResult", "check_gates", "load_evidence", "load_gate_file"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CHECK_RE = re.compile(r"^\s*(\S+)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class Check:
    """One evaluated check.

    Attributes:
        name: the check's name (its expression unless named in the file).
        expression: ``LEFT OP RIGHT`` as written.
        left: the left side's value (None when missing or not a number).
        right: the right side's value.
        passed: whether it held.
        reason: why it failed (missing evidence, not a number), or ``""``.
    """

    name: str
    expression: str
    left: float | None
    right: float | None
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class GateResult:
    """The verdict of a gate file on some evidence.

    Attributes:
        passed: every check held.
        checks: each check with the numbers that decided it.
        gate_file: path of the gate file, if read from one.
        gate_sha256: sha256 of the gate file's bytes (or of its canonical JSON).
        evidence: ``{name or path: {"path": ..., "sha256": ...}}`` of the evidence files.
        timestamp: unix seconds of the evaluation.
    """

    passed: bool
    checks: list[Check]
    gate_file: str | None = None
    gate_sha256: str | None = None
    evidence: dict[str, dict[str, str]] = field(default_factory=dict)
    timestamp: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)

    def summary(self) -> str:
        """Plain text: the verdict, then one line per check."""
        lines = [f"gate: {'PASS' if self.passed else 'FAIL'}"]
        for c in self.checks:
            status = "pass" if c.passed else "FAIL"
            values = f"{_fmt(c.left)} vs {_fmt(c.right)}"
            tail = f"  ({c.reason})" if c.reason else ""
            lines.append(f"  [{status}] {c.name}: {values}{tail}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"


def load_gate_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """Read a gate file; returns ``(spec, sha256 of its bytes)``.

    Raises:
        ConfigError: missing file, bad YAML, or a spec without a ``gates`` list.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"gate file: {p} does not exist")
    raw = p.read_bytes()
    try:
        spec = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"gate file: {p} is not valid YAML: {exc}") from None
    _parse(spec)  # validate now, with the file named
    return spec, hashlib.sha256(raw).hexdigest()


def load_evidence(
    items: Sequence[str],
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Merge evidence files given as ``NAME=PATH`` or ``PATH`` (JSON).

    Returns:
        ``(namespace, {name: {"path", "sha256"}})``.

    Raises:
        ConfigError: a missing or non-JSON file, or a key defined twice.
    """
    namespace: dict[str, Any] = {}
    sources: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        elif not _PATH_RE.match(name) or "." in name:
            raise ConfigError(f"evidence: {name!r} is not a name (letters, digits, _ and -)")
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"evidence: {p} does not exist")
        raw = p.read_bytes()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"evidence: {p} is not JSON: {exc}") from None
        digest = hashlib.sha256(raw).hexdigest()
        if name:
            _merge(namespace, {name: doc}, str(p))
            sources[name] = {"path": str(p), "sha256": digest}
        else:
            if not isinstance(doc, dict):
                raise ConfigError(f"evidence: {p} must hold a JSON object to merge without a name")
            _merge(namespace, doc, str(p))
            sources[str(p)] = {"path": str(p), "sha256": digest}
    return namespace, sources


def _merge(namespace: dict[str, Any], doc: Mapping[str, Any], where: str) -> None:
    for key, value in doc.items():
        if key in namespace:
            raise ConfigError(
                f"evidence: {key!r} from {where} is already defined by another evidence file; "
                "mount one of them under a name (NAME=PATH)"
            )
        namespace[key] = value


def _parse(spec: Any) -> list[tuple[str, str, str, str, str]]:
    """``[(name, expression, left, op, right)]`` from a gate spec."""
    if not isinstance(spec, Mapping) or "gates" not in spec:
        raise ConfigError("gate file: expected a mapping with a 'gates' list")
    unknown = sorted(set(spec) - {"gates", "description"})
    if unknown:
        raise ConfigError(f"gate file: unknown key(s) {unknown}; allowed: gates, description")
    gates = spec["gates"]
    if not isinstance(gates, list) or not gates:
        raise ConfigError("gates: must be a non-empty list of checks")
    out = []
    for i, entry in enumerate(gates):
        where = f"gates[{i}]"
        if isinstance(entry, str):
            name, expression = entry.strip(), entry
        elif isinstance(entry, Mapping):
            extra = sorted(set(entry) - {"name", "check"})
            if extra or "check" not in entry:
                raise ConfigError(f"{where}: use {{name: ..., check: LEFT OP RIGHT}}")
            expression = str(entry["check"])
            name = str(entry.get("name") or expression).strip()
        else:
            raise ConfigError(f"{where}: a check is a string 'LEFT OP RIGHT' or {{name, check}}")
        m = _CHECK_RE.match(expression)
        if m is None:
            raise ConfigError(
                f"{where}: {expression!r} is not 'LEFT OP RIGHT' with OP one of "
                f"{' '.join(_OPS)} (e.g. 'dr.lower_95 >= baseline_value')"
            )
        left, op, right = m.groups()
        for side in (left, right):
            if _number(side) is None and not _PATH_RE.match(side):
                raise ConfigError(f"{where}: {side!r} is neither a number nor a dotted path")
        out.append((name, expression.strip(), left, op, right))
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _resolve(side: str, evidence: Mapping[str, Any]) -> tuple[float | None, str]:
    """A side's value and, when it has none, why."""
    literal = _number(side)
    if literal is not None:
        return literal, ""
    node: Any = evidence
    for part in side.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None, f"{side} is not in the evidence"
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None, f"{side} is {json.dumps(node)[:60]}, not a number"
    try:
        value = float(node)
    except OverflowError:
        return None, f"{side} is too large to compare"
    if not math.isfinite(value):
        return None, f"{side} is not finite"
    return value, ""


def check_gates(
    spec: Mapping[str, Any],
    evidence: Mapping[str, Any],
    *,
    gate_file: str | None = None,
    gate_sha256: str | None = None,
    sources: Mapping[str, Mapping[str, str]] | None = None,
) -> GateResult:
    """Evaluate every check of ``spec`` on ``evidence``.

    Raises:
        ConfigError: a malformed gate spec (a bad check is a config error, not a failed gate).
    """
    checks = []
    for name, expression, left, op, right in _parse(spec):
        lv, lwhy = _resolve(left, evidence)
        rv, rwhy = _resolve(right, evidence)
        if lv is None or rv is None:
            reason = "; ".join(r for r in (lwhy, rwhy) if r) + ": evidence missing, refused"
            checks.append(Check(name, expression, lv, rv, False, reason))
            continue
        passed = bool(_OPS[op](lv, rv))
        checks.append(Check(name, expression, lv, rv, passed, "" if passed else f"{op} is false"))
    if gate_sha256 is None:
        canonical = json.dumps(spec, sort_keys=True, default=str).encode()
        gate_sha256 = hashlib.sha256(canonical).hexdigest()
    return GateResult(
        passed=all(c.passed for c in checks),
        checks=checks,
        gate_file=gate_file,
        gate_sha256=gate_sha256,
        evidence={k: dict(v) for k, v in (sources or {}).items()},
        timestamp=time.time(),
    )
