"""``rlops reproduce NAME@VERSION``: train again from a version's recorded lineage.

The lineage holds the exact ``config.yaml`` text (seed, environment,
algorithm, backend). Reproducing trains it into a new run directory and
compares the new artifact's content hash with the registered one: on the
inline backend, the deterministic reference, they are equal. When they are
not (another backend, other package versions, other code), both policies are
evaluated on the recorded environment with the same seeds and the difference
in mean return is reported, with what differs in the recorded code and
package versions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rlops.core.errors import RegistryError
from rlops.registry.core import Registry


def reproduce(
    registry: Registry,
    ref: str,
    *,
    out_dir: str | Path | None = None,
    episodes: int = 20,
) -> dict[str, Any]:
    """Re-run the training recorded for ``ref``; returns what matched and what did not.

    Raises:
        RegistryError: the version has no complete lineage (registered without
            a run directory) or was trained offline (not reproducible yet).
    """
    from rlops.runtime import load_config, train
    from rlops.runtime.lineage import collect_code

    version = registry.version(ref)
    lineage = version.lineage
    run = lineage.get("run") if isinstance(lineage, dict) else None
    if not run:
        raise RegistryError(
            f"reproduce: {version.ref} was registered without a lineage.json "
            "(not from a run directory); there is nothing to re-run"
        )
    if run.get("kind") == "offline":
        raise RegistryError(
            f"reproduce: {version.ref} was trained offline from decision logs; reproducing "
            "offline runs is not supported yet (its data hashes are in the lineage)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(run["config"], encoding="utf-8")
        config = load_config(str(config_file))
    out = Path(out_dir) if out_dir is not None else None
    result = train(config, out_dir=out)
    identical = result.version == version.content_hash
    report: dict[str, Any] = {
        "ref": version.ref,
        "registered": version.content_hash,
        "reproduced": result.version,
        "identical": identical,
        "run_dir": str(result.run_dir),
        "backend": run.get("backend"),
    }
    recorded_code = run.get("code") or {}
    now_code = dict(collect_code())
    differs = {
        key: {"recorded": recorded_code.get(key), "now": now_code.get(key)}
        for key in ("rlops_version", "git_commit", "git_dirty")
        if recorded_code.get(key) != now_code.get(key)
    }
    report["code_differences"] = differs
    if identical:
        report["summary"] = (
            f"reproduced {version.ref}: identical weights ({result.version[:23]}…), "
            f"run {result.run_dir}"
        )
        return report
    from rlops.evaluation import evaluate

    env = run.get("env") or {}
    env_id = env.get("id") or lineage.get("manifest", {}).get("env_id")
    kwargs = env.get("kwargs") or {}
    before = evaluate(str(registry.artifact_path(version.ref)), env_id, episodes, **kwargs)
    after = evaluate(str(result.artifact_path), env_id, episodes, **kwargs)
    report["evaluation"] = {
        "env_id": env_id,
        "episodes": episodes,
        "registered_mean_return": before.mean_return,
        "reproduced_mean_return": after.mean_return,
        "difference": after.mean_return - before.mean_return,
    }
    why = ", ".join(f"{k} {v['recorded']} -> {v['now']}" for k, v in differs.items())
    report["summary"] = (
        f"reproduced {version.ref} with DIFFERENT weights ({result.version[:23]}… vs "
        f"{version.content_hash[:23]}…; backend {run.get('backend')}"
        + (f"; code differs: {why}" if why else "")
        + f"). Mean return over {episodes} episodes: registered {before.mean_return:.2f}, "
        f"reproduced {after.mean_return:.2f} "
        f"(difference {after.mean_return - before.mean_return:+.2f})"
    )
    return report
