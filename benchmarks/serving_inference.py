"""Which forward should ``rlops serve`` run: numpy, torch or ONNX Runtime? Measured.

The serving issue asks to choose torch or ONNX Runtime inference by
measurement. ``rlops serve`` runs the artifact's own numpy forward
(:class:`rlops.artifacts.NumpyActorCritic`); this script times the same
policy, from the same ``model.safetensors``, three ways on one thread, in one
run, at the batch sizes the micro-batcher produces (1 when idle, up to 64
under load):

* ``numpy``: ``Policy.action_distribution(obs)`` (preprocessing, MLP, softmax);
* ``torch``: ``nn.Sequential`` of the same layers + softmax under
  ``torch.inference_mode()`` (the plain baseline of ``benchmarks/serving.py``);
* ``onnxruntime``: the same graph (MatMul, Add, Tanh/Relu, Softmax) built with
  ``onnx.helper`` and run by an ``InferenceSession`` with one intra-op thread.

All three must agree to 1e-5 on the probabilities (checked). The JSON line
gives microseconds per call (median of ``--repeats`` timed blocks) and
``numpy_speedup`` = other / numpy per batch size (> 1: numpy is faster).

    .venv/bin/python benchmarks/serving_inference.py [--artifact DIR] [--quick]

Needs the ``bench`` extra (``onnx``, ``onnxruntime``); the last stdout line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

BATCHES = (1, 8, 64)


def _time(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    """Median microseconds per call over ``repeats`` blocks of ``calls`` calls."""
    fn()
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(per_call)


def _onnx_session(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    activation: str,
    norm: dict[str, Any] | None,
) -> Any:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "obs"
    if norm is not None:  # the artifact's observation normalisation, as Policy.preprocess
        mean = np.asarray(norm["mean"], np.float32).ravel()
        std = np.sqrt(np.asarray(norm["var"], np.float64) + norm["epsilon"]).astype(np.float32)
        clip = float(norm["clip"])
        inits += [
            numpy_helper.from_array(mean, "mean"),
            numpy_helper.from_array(std.ravel(), "std"),
            numpy_helper.from_array(np.float32(-clip), "lo"),
            numpy_helper.from_array(np.float32(clip), "hi"),
        ]
        nodes += [
            helper.make_node("Sub", ["obs", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["scaled"]),
            helper.make_node("Clip", ["scaled", "lo", "hi"], ["normed"]),
        ]
        x = "normed"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        x = f"a{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node(activation.capitalize(), [x], [f"h{i}"]))
            x = f"h{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probs"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [None, weights[0].shape[0]])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="a categorical policy artifact")
    parser.add_argument("--quick", action="store_true", help="fewer timed calls")
    args = parser.parse_args(argv)

    import torch

    import rlops
    from _serving_baseline import build_policy
    from serving import train_artifact

    torch.set_num_threads(1)
    artifact = args.artifact
    if artifact is None:
        artifact = train_artifact(Path(tempfile.mkdtemp(prefix="rlops-infer-")) / "run", seed=0)
    policy = rlops.load_policy(artifact)
    net, obs_dim = build_policy(artifact)
    mlp = policy.net.pi  # the numpy policy head: W^T per layer
    norm = (policy.manifest.get("preprocessing") or {}).get("obs_norm")
    session = _onnx_session(mlp.weights, mlp.biases, policy.manifest["network"]["activation"], norm)
    calls, repeats = (300, 5) if args.quick else (2000, 9)
    rng = np.random.default_rng(0)

    results: dict[str, dict[str, float]] = {"numpy": {}, "torch": {}, "onnxruntime": {}}
    for batch in BATCHES:
        obs = rng.normal(size=(batch, obs_dim)).astype(np.float32)
        tobs = torch.from_numpy(obs)

        def numpy_forward(obs: np.ndarray = obs) -> np.ndarray:
            return policy.action_distribution(obs)

        def torch_forward(tobs: torch.Tensor = tobs) -> np.ndarray:
            with torch.inference_mode():
                return torch.softmax(net(tobs), dim=-1).numpy()

        def ort_forward(obs: np.ndarray = obs) -> np.ndarray:
            return session.run(["probs"], {"obs": obs})[0]

        reference = numpy_forward()
        for name, fn in (("torch", torch_forward), ("onnxruntime", ort_forward)):
            gap = float(np.abs(fn() - reference).max())
            if gap > 1e-5:
                raise SystemExit(f"serving_inference: {name} differs from numpy by {gap}")
        for name, fn in (
            ("numpy", numpy_forward),
            ("torch", torch_forward),
            ("onnxruntime", ort_forward),
        ):
            results[name][str(batch)] = round(_time(fn, calls, repeats), 2)
            print(
                f"  batch {batch:3d} {name:12s} {results[name][str(batch)]:8.2f} us",
                file=sys.stderr,
            )
    speedup = {
        other: {b: round(results[other][b] / results["numpy"][b], 2) for b in results["numpy"]}
        for other in ("torch", "onnxruntime")
    }
    fastest = {b: min(results, key=lambda name, b=b: results[name][b]) for b in results["numpy"]}
    print(
        json.dumps(
            {
                "benchmark": "serving_inference",
                "us_per_call": results,
                "numpy_speedup": speedup,
                "fastest": fastest,
                "hidden_sizes": policy.manifest["network"]["hidden_sizes"],
                "threads": 1,
            }
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
