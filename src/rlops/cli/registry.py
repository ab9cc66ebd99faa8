"""``rlops registry|promote|approve|reject|rollback|audit|reproduce``: the registry CLI.

Thin wrappers over :class:`rlops.registry.Registry`. The acting identity is
``--as USER``, else ``$RLOPS_USER``, else ``registry.user`` in ``rlops.yaml``
(there is no default); where the registry lives comes from the same file or
``$RLOPS_REGISTRY_URL`` / ``$RLOPS_REGISTRY_STORE`` (see
:mod:`rlops.registry.settings`). Errors exit 2 with one line; a promotion
refused by its gate exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

from rlops.core.errors import RegistryError

if TYPE_CHECKING:
    from rlops.registry import Registry


def _open(args: argparse.Namespace) -> Registry:
    from rlops.registry import Registry, load_settings

    settings = load_settings(args.registry_config).with_user(args.as_user)
    return Registry.open(settings)


def parse_time(text: str, flag: str = "--time") -> float:
    """ISO 8601 (a time without offset is UTC) or Unix seconds -> Unix seconds."""
    try:
        value = float(text)
        if math.isfinite(value):
            return _bounded(value, text, flag)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RegistryError(
            f"{flag}: {text!r} is not a time; use ISO 8601 (2026-11-26T09:30:00Z) or Unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return _bounded(when.timestamp(), text, flag)


def _bounded(value: float, text: str, flag: str) -> float:
    if not 0.0 <= value <= 253402300799.0:  # 1970 .. 9999-12-31
        raise RegistryError(f"{flag}: {text!r} is outside 1970-01-01 .. 9999-12-31")
    return value


def _iso(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _cmd_init(args: argparse.Namespace) -> int:
    reg = _open(args)
    reg.init(args.admin)
    print(f"registry ready at {reg.settings.url}; {args.admin} is admin")
    print(f"  add people: rlops registry grant NAME ROLE --as {args.admin}  (roles: author, ...)")
    return 0


def _cmd_grant(args: argparse.Namespace) -> int:
    reg = _open(args)
    if args.command_name == "grant":
        reg.grant(args.user, args.role, args.reason)
    else:
        reg.revoke(args.user, args.role, args.reason)
    roles = reg.members().get(args.user, [])
    print(f"{args.user}: {', '.join(roles) or '(no roles)'}")
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    found = _open(args).members()
    if args.json:
        _print(found)
    for name, roles in found.items():
        if not args.json:
            print(f"{name:20s} {', '.join(roles)}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    token = _open(args).create_token(args.user, args.label)
    print(f"token for {args.user} (shown once; only its hash is stored):\n{token}")
    return 0


def _evidence_pairs(items: list[str] | None) -> list[tuple[str, Any]]:
    from pathlib import Path

    pairs = []
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise RegistryError(
                f"--evidence: {item!r} must be NAME=PATH (e.g. holdout=report.json)"
            )
        pairs.append((name, Path(path)))
    return pairs


def _cmd_register(args: argparse.Namespace) -> int:
    reg = _open(args)
    v = reg.register(
        args.name,
        args.source,
        parent=args.parent,
        evidence_files=_evidence_pairs(args.evidence),
        description=args.description,
    )
    if args.json:
        _print(v.to_dict())
        return 0
    print(f"registered {v.ref}  {v.content_hash}")
    print(f"  stored  : {v.path}")
    lineage = v.lineage
    if lineage.get("complete"):
        code = (lineage.get("run") or {}).get("code") or {}
        commit = code.get("git_commit") or "unknown"
        dirty = " (dirty)" if code.get("git_dirty") else ""
        print(f"  lineage : run {lineage.get('run_dir')}, code {str(commit)[:12]}{dirty}")
    else:
        print(
            "  lineage : incomplete (no lineage.json beside the artifact: it cannot be reproduced)"
        )
    print(f"  next    : rlops promote {args.name} {v.number} --to candidate --reason '...'")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    reg = _open(args)
    if args.name is None:
        found = reg.policies()
        if args.json:
            _print(found)
            return 0
        if not found:
            print("no policies registered; rlops registry register NAME RUN_DIR")
        for p in found:
            where = ", ".join(f"{a}={n}" for a, n in sorted(p["aliases"].items())) or "-"
            print(f"{p['name']:24s} {p['versions']:4d} version(s)   {where}")
        return 0
    versions = reg.versions(args.name)
    current = reg.aliases(args.name)
    if args.json:
        _print({"versions": [v.to_dict() for v in versions], "aliases": current})
        return 0
    for v in versions:
        tags = ", ".join(a for a, n in sorted(current.items()) if n == v.number)
        print(
            f"{v.ref:28s} {v.content_hash[:19]}…  {_iso(v.created_at)}  {v.created_by:12s} {tags}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    reg = _open(args)
    v = reg.version(args.ref)
    data = v.to_dict()
    data["aliases"] = sorted(a for a, n in reg.aliases(v.policy).items() if n == v.number)
    data["evidence"] = {
        name: {k: e[k] for k in ("id", "kind", "sha256", "recorded_at", "recorded_by")}
        for name, e in reg.evidence(v.ref).items()
    }
    _print(data)
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from rlops.registry.core import _read_json

    pairs = _evidence_pairs(args.evidence)
    documents = [(name, _read_json(path)[0]) for name, path in pairs]  # all read first
    ids = _open(args).record_evidence_many(args.ref, documents, kind=args.kind)
    for (name, _), eid in zip(documents, ids):
        print(f"recorded {name} for {args.ref} (evidence #{eid})")
    return 0


def _cmd_at(args: argparse.Namespace) -> int:
    reg = _open(args)
    when = parse_time(args.time)
    number = reg.at(args.name, args.alias, when)
    if args.json:
        _print({"policy": args.name, "alias": args.alias, "time": when, "version": number})
    elif number is None:
        print(f"{args.name}@{args.alias} was not set at {_iso(when)}")
    else:
        v = reg.version(f"{args.name}@{number}")
        print(f"{args.name}@{args.alias} at {_iso(when)}: version {number} ({v.content_hash})")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    moves = _open(args).history(args.name, args.alias)
    if args.json:
        _print([m.to_dict() for m in moves])
        return 0
    for m in moves:
        to = "unset" if m.number is None else str(m.number)
        frm = "-" if m.previous is None else str(m.previous)
        print(
            f"{_iso(m.at)}  {m.alias:12s} {frm:>4s} -> {to:<5s} {m.action:9s} {m.actor:12s} "
            f"{m.reason}"
        )
    return 0


def _cmd_protect(args: argparse.Namespace) -> int:
    from pathlib import Path

    rule = _open(args).set_rule(
        args.alias,
        approvals_required=args.approvals,
        gate_file=None if args.gate is None else Path(args.gate),
        policy=args.policy or "*",
        reason=args.reason,
    )
    gate = rule["gate_source"] or "no gate"
    print(f"{rule['policy']}@{rule['alias']}: {rule['approvals']} approval(s), {gate}")
    return 0


def _request_line(r: Any) -> str:
    got = f"{len(r.approvers)}/{r.approvals_required}"
    return (
        f"#{r.id:<4d} {r.policy}@{r.number} -> {r.alias:12s} {r.status:8s} approvals {got:5s} "
        f"by {r.requester}: {r.reason}"
    )


def _cmd_requests(args: argparse.Namespace) -> int:
    found = _open(args).requests(status=args.status, policy=args.policy)
    if args.json:
        _print([r.to_dict() for r in found])
    else:
        for r in found:
            print(_request_line(r))
    return 0


def _show_request(r: Any, as_json: bool) -> int:
    if as_json:
        _print(r.to_dict())
    else:
        print(_request_line(r))
        if r.decision_reason:
            print(f"  {r.decision_reason}")
        if r.status == "pending":
            need = r.approvals_required - len(r.approvers)
            print(f"  waiting for {need} approval(s): rlops approve {r.id}  (not by {r.requester})")
    return 1 if r.status == "refused" else 0


def _cmd_promote(args: argparse.Namespace) -> int:
    r = _open(args).request_promotion(args.name, args.version, args.to, reason=args.reason)
    return _show_request(r, args.json)


def _cmd_approve(args: argparse.Namespace) -> int:
    return _show_request(_open(args).approve(args.request_id, args.comment), args.json)


def _cmd_reject(args: argparse.Namespace) -> int:
    return _show_request(_open(args).reject(args.request_id, args.reason), args.json)


def _cmd_rollback(args: argparse.Namespace) -> int:
    move = _open(args).rollback(args.name, alias=args.alias, reason=args.reason, unset=args.unset)
    to = "unset" if move.number is None else f"version {move.number}"
    print(f"{move.policy}@{move.alias}: {move.previous} -> {to} (audited: {move.reason})")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    reg = _open(args)
    if args.action == "verify":
        result = reg.verify_audit(args.head)
        if args.json:
            _print(result.__dict__)
        elif result.ok:
            print(f"audit trail intact: {result.events} events; head {result.head_hash}")
            print(
                "  keep the head elsewhere and check it later with: rlops audit verify --head ..."
            )
        else:
            print(f"audit trail BROKEN at event {result.first_bad}: {result.problem}")
            print(f"  last intact event: {result.head_seq} ({result.head_hash})")
        return 0 if result.ok else 1
    since = None if args.since is None else parse_time(args.since, "--since")
    found = reg.audit_log(since=since, policy=args.policy)
    if args.json:
        _print([e.to_dict() for e in found])
        return 0
    for e in found:
        change = ""
        if e.before is not None or e.after is not None:
            change = f" {json.dumps(e.before)} -> {json.dumps(e.after)}"
        why = f"  reason: {e.reason}" if e.reason else ""
        print(f"{e.seq:5d} {_iso(e.at)} {e.actor:12s} {e.action:20s} {e.target}{change}{why}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from rlops.registry.reproduce import reproduce

    result = reproduce(_open(args), args.ref, out_dir=args.out, episodes=args.episodes)
    if args.json:
        _print(result)
    else:
        print(result["summary"])
    return 0 if result["identical"] or not args.strict else 1


def add_parsers(sub: Any) -> None:
    """Add the registry commands to the ``rlops`` sub-parser set."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--as", dest="as_user", metavar="USER", help="act as USER (default: $RLOPS_USER)"
    )
    common.add_argument(
        "--registry-config",
        metavar="FILE",
        help="config file with a registry: section (default: ./rlops.yaml when present)",
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    reg = sub.add_parser("registry", help="policy registry: versions, lineage, aliases, roles")
    rsub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    p = rsub.add_parser("init", parents=[common], help="create the registry and its first admin")
    p.add_argument("--admin", required=True, help="the first admin's name")
    p.set_defaults(func=_cmd_init)

    for verb in ("grant", "revoke"):
        p = rsub.add_parser(verb, parents=[common], help=f"{verb} a role (admin)")
        p.add_argument("user")
        p.add_argument("role", choices=["viewer", "author", "approver", "operator", "admin"])
        p.add_argument("--reason", default="")
        p.set_defaults(func=_cmd_grant, command_name=verb)

    p = rsub.add_parser("members", parents=[common], help="members and their roles")
    p.set_defaults(func=_cmd_members)

    p = rsub.add_parser("token", parents=[common], help="create an HTTP bearer token (admin)")
    p.add_argument("user")
    p.add_argument("--label", default="")
    p.set_defaults(func=_cmd_token)

    p = rsub.add_parser("register", parents=[common], help="register an artifact as a new version")
    p.add_argument("name", help="policy name")
    p.add_argument("source", help="artifact or run directory (a path or file:// URL)")
    p.add_argument("--parent", metavar="REF", help="the version it was derived from (NAME@N)")
    p.add_argument(
        "--evidence", action="append", metavar="NAME=PATH", help="JSON report to record with it"
    )
    p.add_argument("--description", default="", help="policy description (first version only)")
    p.set_defaults(func=_cmd_register)

    p = rsub.add_parser("list", parents=[common], help="policies, or one policy's versions")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_list)

    p = rsub.add_parser("show", parents=[common], help="one version: lineage, aliases, evidence")
    p.add_argument("ref", help="NAME@N, NAME@sha256:..., NAME@ALIAS")
    p.set_defaults(func=_cmd_show)

    p = rsub.add_parser("record", parents=[common], help="record evidence (JSON) for a version")
    p.add_argument("ref")
    p.add_argument("evidence", nargs="+", metavar="NAME=PATH")
    p.add_argument("--kind", default="report", help="eval, ope, gate, report ... (a label)")
    p.set_defaults(func=_cmd_record)

    p = rsub.add_parser("at", parents=[common], help="which version an alias held at a time")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("--time", required=True, help="ISO 8601 (UTC if no offset) or Unix seconds")
    p.set_defaults(func=_cmd_at)

    p = rsub.add_parser("history", parents=[common], help="every move of a policy's aliases")
    p.add_argument("name")
    p.add_argument("--alias")
    p.set_defaults(func=_cmd_history)

    p = rsub.add_parser(
        "protect", parents=[common], help="set the gate and approvals an alias needs (admin)"
    )
    p.add_argument("alias")
    p.add_argument("--approvals", type=int, required=True, help="approvals needed (0-10)")
    p.add_argument("--gate", metavar="FILE", help="gate file (YAML); its text is stored")
    p.add_argument("--policy", help="only for this policy (default: every policy)")
    p.add_argument("--reason", default="")
    p.set_defaults(func=_cmd_protect)

    p = rsub.add_parser("requests", parents=[common], help="promotion requests")
    p.add_argument(
        "--status", choices=["pending", "applied", "rejected", "refused", "stale"], default=None
    )
    p.add_argument("--policy")
    p.set_defaults(func=_cmd_requests)

    p = sub.add_parser(
        "promote", parents=[common], help="request moving an alias to a version (gated, approved)"
    )
    p.add_argument("name")
    p.add_argument("version", help="version number or sha256:...")
    p.add_argument("--to", required=True, metavar="ALIAS")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("approve", parents=[common], help="approve a promotion request")
    p.add_argument("request_id", type=int)
    p.add_argument("--comment", default="")
    p.set_defaults(func=_cmd_approve)

    p = sub.add_parser("reject", parents=[common], help="reject a promotion request")
    p.add_argument("request_id", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd_reject)

    p = sub.add_parser(
        "rollback", parents=[common], help="move an alias back to its previous version (operator)"
    )
    p.add_argument("name")
    p.add_argument("--alias", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--unset", action="store_true", help="unset the alias instead")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("audit", parents=[common], help="the hash-chained audit trail")
    p.add_argument("action", choices=["log", "verify"])
    p.add_argument("--since", help="log: events from this time (ISO 8601 or Unix seconds)")
    p.add_argument("--policy", help="log: events of one policy")
    p.add_argument("--head", help="verify: a head hash kept elsewhere that must be in the chain")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "reproduce", parents=[common], help="re-run a version's training from its lineage"
    )
    p.add_argument("ref", help="NAME@N (or NAME@ALIAS)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: a new one under runs/)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes when not equal")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the weights are identical")
    p.set_defaults(func=_cmd_reproduce)
