"""``rlops serve NAME@production``: a real server resolving through the registry,
following approved promotions without a restart, and recording its own canary
rollback in the registry's history and audit trail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rlops.registry import Registry, RegistrySettings
from serving_helpers import CARTPOLE_OBS, admin_request, request, wait_ready

TOKEN = "registry-test-admin-token-0123456789"


def _until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _served_version(port: int) -> str:
    status, _, body = request(
        port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": "u1"}
    )
    assert status == 200, body
    return str(body["policy_version"])


def test_serve_follows_the_registry(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    runs = artifacts["cartpole"].parent.parent
    settings = RegistrySettings(
        url=f"sqlite:///{tmp_path / 'registry.sqlite'}",
        store=tmp_path / "store",
        allowed_roots=(runs,),
        user="ada",
    )
    reg = Registry.open(settings)
    reg.init("ada")
    reg.grant("ada", "author")
    reg.grant("bo", "approver")
    reg.grant("srv", "operator")
    reg.grant("dee", "operator")
    v1 = reg.register("cartpole", artifacts["cartpole"])
    v2 = reg.register("cartpole", artifacts["cartpole_b"])
    first = reg.request_promotion("cartpole", 1, "production", reason="launch")
    reg.as_user("bo").approve(first.id)
    (tmp_path / "rlops.yaml").write_text(
        f"registry:\n  url: {settings.url}\n  store: {settings.store}\n  allowed_roots: [{runs}]\n"
    )
    env = {**os.environ, "RLOPS_USER": "srv", "RLOPS_ADMIN_TOKEN": TOKEN}
    env.pop("RLOPS_REGISTRY_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "rlops",
        "serve",
        "cartpole@production",
        "--port",
        "0",
        "--decision-log",
        str(tmp_path / "d.sqlite"),
        "--registry-poll",
        "0.2",
        "--canary-share",
        "0.5",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url_line = proc.stdout.readline()
        port = int(url_line.split("127.0.0.1:")[1].split()[0])
        wait_ready(port)
        assert _served_version(port) == v1.content_hash

        # An approved promotion reaches the running server, no restart.
        second = reg.request_promotion("cartpole", 2, "production", reason="v2")
        assert _served_version(port) == v1.content_hash  # pending: nothing moves yet
        reg.as_user("bo").approve(second.id, "ok")
        _until("v2 served", lambda: _served_version(port) == v2.content_hash)

        # A canary alias adds the canary arm; a serving rollback is recorded in the registry.
        canary = reg.request_promotion("cartpole", 1, "canary", reason="try v1 again")
        reg.as_user("bo").approve(canary.id)

        def policies() -> dict[str, Any]:
            return request(port, "GET", "/v1/policies")[2]  # type: ignore[no-any-return]

        _until("canary arm", lambda: "canary" in json.dumps(policies()))

        def arms_seen() -> set[str]:
            bodies = [
                request(port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": f"u{i}"})
                for i in range(40)
            ]
            return {b[2]["arm"] for b in bodies}

        _until("canary traffic at the share asked at start", lambda: "canary" in arms_seen())
        # Admin calls take registry tokens too: an operator's is accepted and names the
        # actor (not the body's claim); an approver's is refused.
        dee, bo = reg.create_token("dee"), reg.create_token("bo")
        body = {"actor": "somebody-else", "reason": "INC-7"}
        assert admin_request(port, "rollback", body, token=bo)[0] == 403
        status, answer = admin_request(port, "rollback", body, token=dee)
        assert status == 200, answer
        lines = (tmp_path / "d.sqlite.admin.jsonl").read_text().splitlines()
        entry = json.loads(lines[-1])
        assert (entry["action"], entry["actor"]) == ("rollback", "dee"), entry
        _until("rollback recorded", lambda: "canary" not in reg.aliases("cartpole"))
        last = reg.history("cartpole", "canary")[-1]
        assert (last.action, last.actor, last.number) == ("rollback", "srv", None)
        assert "INC-7" in last.reason
        assert reg.verify_audit().ok
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "registry: cartpole@production moved to version 2" in err
