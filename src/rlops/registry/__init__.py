"""The policy registry: versions with lineage, aliases with history, governed
promotion with approvals and gates, and a hash-chained audit trail.

See :mod:`rlops.registry.core` for the workflow and roles,
:mod:`rlops.registry.audit` for the audit chain, :mod:`rlops.registry.store`
for the content-addressed artifact store and :mod:`rlops.registry.settings`
for where the registry lives.
"""

from rlops.registry.audit import AuditEvent, Verification
from rlops.registry.core import (
    ROLES,
    AliasMove,
    Registry,
    Request,
    Version,
    collect_lineage,
    parse_ref,
)
from rlops.registry.settings import RegistrySettings, load_settings

__all__ = [
    "ROLES",
    "AliasMove",
    "AuditEvent",
    "Registry",
    "RegistrySettings",
    "Request",
    "Verification",
    "Version",
    "collect_lineage",
    "load_settings",
    "parse_ref",
]
