"""Running one check of `groupwise check-gpu`: its own process group, a time limit, peak GPU memory, a verdict."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.check_gpu import ROOT
from app.check_gpu.plan import Check


class MemorySampler:
    """Peak ``memory.used`` (MiB, the busiest GPU) from nvidia-smi, polled in a thread while a check runs."""

    def __init__(self, period: float = 0.5):
        self.period, self.peak, self.error = period, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            self.error = f"nvidia-smi: {e}"
            return None
        values = [float(x) for x in out.stdout.split() if x.replace(".", "", 1).isdigit()]
        return max(values) if values else None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self.sample()
            if v is None and self.error:
                return
            if v is not None:
                self.peak = v if self.peak is None else max(self.peak, v)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak is None else round(self.peak / 1024, 2)


def failure_reason(log: str, rc: int | None) -> str:
    """One line for a failed command: the last error-looking line of its output, or how it died."""
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    for line in reversed(lines):
        if any(k in line for k in ("Error", "error:", "Exception", "FAILED", "refused", "No such")):
            return line[:300]
    return (lines[-1][:300] if lines else "no output") + f" (exit code {rc})"


def run_command(argv: list[str], timeout: float, log_path: Path, env: dict[str, str]) -> tuple[int | None, bool]:
    """Run ``argv`` in its own session (so a timeout kills its children too), output to ``log_path``.
    Returns (exit code or None, timed out)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None, True


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment, minus any torchrun rendezvous (each check is its own world), plus the repo on the path."""
    skip = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_check(check: Check, budget: float, work: Path, results: dict[str, dict]) -> dict:
    """Run one check within ``budget`` seconds; never raises. The result has status pass / fail / skip."""
    res = {"name": check.name, "title": check.title, "status": "fail", "reason": "", "seconds": 0.0}
    res.update(figures={}, details={}, peak_gpu_mem_gib=None, log=str(work / "logs" / f"{check.name}.log"))
    missing = [n for n in check.needs if results.get(n, {}).get("status") != "pass"]
    if missing:
        return {**res, "status": "skip", "reason": f"needs {', '.join(missing)}, which did not pass"}
    if budget < 5:
        return {**res, "status": "skip", "reason": "not run: the global deadline (--deadline) was reached"}
    limit = min(check.timeout, budget)
    result_file = work / f"{check.name}.json"
    for stale in (result_file, *check.clean):  # nothing from an earlier report may pass for this one's
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with MemorySampler() as mem:
        rc, timed_out = run_command(check.argv, limit, Path(res["log"]), child_env(check.env))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["peak_gpu_mem_gib"] = mem.peak_gib
    log = Path(res["log"]).read_text(errors="replace")
    verdict = None
    if result_file.exists():  # a worker's own verdict, with its figures
        try:
            verdict = json.loads(result_file.read_text())
        except json.JSONDecodeError as e:
            res["reason"] = f"unreadable result file {result_file}: {e}"
    if verdict:
        res.update(verdict)
    if timed_out:
        res.update(status="fail", reason=f"timed out after {limit:.0f} s (log: {res['log']})")
    elif rc != 0 and res["status"] != "fail":  # a crash after the verdict, or no verdict at all
        res.update(status="fail", reason=failure_reason(log, rc))
    elif rc != 0 and not res["reason"]:
        res["reason"] = failure_reason(log, rc)
    elif rc == 0 and verdict is None and not res["reason"]:
        res["status"] = "pass"
    if check.post is not None:
        try:
            res = check.post(res, results)
        except Exception as e:  # a report must come out whatever the parsing met
            res.update(status="fail", reason=f"{check.name}: could not read its output: {type(e).__name__}: {e}")
    return res


def budgets(checks: list[Check], deadline: float) -> Callable[[int, float], float]:
    """Seconds check ``i`` may use when ``elapsed`` seconds are gone: what is left minus what the later checks
    reserve, so a slow early check cannot starve the training run of its minimum."""

    def budget(i: int, elapsed: float) -> float:
        later = sum(c.reserve for c in checks[i + 1 :])
        return max(0.0, deadline - elapsed - later)

    return budget


# ----------------------------------------------------------------------------- reading outputs
