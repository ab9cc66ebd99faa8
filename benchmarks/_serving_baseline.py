"""The plain baseline of ``benchmarks/serving.py``: FastAPI + uvicorn + a torch forward.

Not part of rlops and not a test. It serves the same policy artifact as
``rlops serve`` the way a small team would write it by hand: a pydantic
request model, one ``torch`` forward per request (no batching), the action
sampled from the softmax, no decision log, no access log::

    .venv/bin/python benchmarks/_serving_baseline.py ARTIFACT --port 0

The network is a plain ``nn.Sequential`` rebuilt from ``policy.json`` and
loaded from ``model.safetensors`` (the ``pi.layers.{i}`` tensors; the value
head is not needed to act); the artifact's observation normalisation, if it
has one, is applied in torch too. The handler is ``async def`` so the forward
runs on the event loop: for a forward this small it is faster than FastAPI's
thread-pool hop for a sync handler, so the baseline is the stronger of the two
usual ways to write it. Same uvicorn settings as ``rlops serve``: one worker,
uvloop and httptools when installed, ``lifespan="on"``, no access log, and the
socket bound before uvicorn starts. It prints ``baseline: http://HOST:PORT``
once bound and exits on SIGTERM. Categorical policies only.
"""

import argparse
import json
import socket
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from safetensors.torch import load_file
from torch import nn


class ActRequest(BaseModel):
    observation: list[float]
    unit_id: str


class ActResponse(BaseModel):
    action: int
    probabilities: list[float]


def build_policy(artifact: Path) -> tuple[nn.Module, int]:
    """The artifact's policy MLP as ``nn.Sequential`` (logits out) and its input size."""
    manifest = json.loads((artifact / "policy.json").read_text(encoding="utf-8"))
    spec = manifest["network"]
    if spec["head"] != "categorical":
        raise SystemExit(f"baseline: serves categorical policies only, not {spec['head']!r}")
    tensors = load_file(str(artifact / "model.safetensors"))
    sizes = [spec["obs_dim"], *spec["hidden_sizes"], spec["act_dim"]]
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[spec["activation"]]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(activation())
        linear = nn.Linear(fan_in, fan_out)
        linear.load_state_dict(
            {"weight": tensors[f"pi.layers.{i}.weight"], "bias": tensors[f"pi.layers.{i}.bias"]}
        )
        layers.append(linear)
    net: nn.Module = nn.Sequential(*layers).eval()
    norm = (manifest.get("preprocessing") or {}).get("obs_norm")
    if norm is not None:
        mean = torch.tensor(norm["mean"], dtype=torch.float32).flatten()
        std = torch.sqrt(torch.tensor(norm["var"], dtype=torch.float64) + norm["epsilon"])
        net = nn.Sequential(_Normalize(mean, std.float().flatten(), float(norm["clip"])), net)
    return net, int(spec["obs_dim"])


class _Normalize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, clip: float) -> None:
        super().__init__()
        self.mean, self.std, self.clip = mean, std, clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)


def create_app(net: nn.Module, obs_dim: int) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/act")
    async def act(request: ActRequest) -> ActResponse:
        if len(request.observation) != obs_dim:
            raise HTTPException(422, f"observation must have {obs_dim} numbers")
        with torch.inference_mode():
            logits = net(torch.tensor(request.observation, dtype=torch.float32).unsqueeze(0))
            probs = torch.softmax(logits, dim=-1)[0]
            action = int(torch.multinomial(probs, 1))
        return ActResponse(action=action, probabilities=probs.tolist())

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    app = create_app(*build_policy(args.artifact))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    print(f"baseline: http://{host}:{port}  (POST /v1/act)", flush=True)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
