import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The product reads benchmark files only from a directory the user names; this repository's tests and CI name
# the data folder kept beside the checkout (unless GROUPWISE_DATA already names one).
SHARED_DATA = ROOT.parent / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("GROUPWISE_DATA", str(SHARED_DATA))


@pytest.fixture
def benchmark_dir() -> Path:
    """The directory of real benchmark files (gsm8k_test.jsonl, math500.jsonl, ...); skips when absent."""
    named = os.environ.get("GROUPWISE_DATA")
    if not named or not Path(named).is_dir():
        pytest.skip(f"no benchmark files: set GROUPWISE_DATA (none at {SHARED_DATA})")
    return Path(named)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 + byte tokenizer, saved with save_pretrained, shared by the session's tests."""
    from toylab.models import save_tiny

    return save_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict:
    """Environment for subprocess runs of the real CLI: its own model cache, unbuffered output."""
    # a child is its own world: never inherit the rendezvous of this process's in-process world of one
    skip = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["GROUPWISE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# sympy modules that build functions by exec-ing their own fixed templates (no input text), lazily, on first use
SYMPY_CODEGEN = {"sympy.polys.monomials"}


def _inside_an_import(frame) -> bool:
    """Whether this call happens while a module is being imported (its top-level code runs under importlib)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


@pytest.fixture
def executed_model_text(monkeypatch) -> list[tuple[str, str]]:
    """Every call of sympy's ``parse_expr`` / ``eval_expr`` / ``stringify_expr``, and ``eval`` / ``exec`` of a string,
    made while the test runs, each refused with an error: a grading test asserts the list stays empty. Passed
    through: calls made while a module is being imported (sympy parses its own constants at import), ``exec`` of
    a code object (the import system), and sympy's polynomial code compiling its own fixed templates on first
    use; none of them can carry model text, and they depend on which tests ran first."""
    import builtins

    import sympy.parsing.sympy_parser as sympy_parser

    calls: list[tuple[str, str]] = []

    def recorder(name, real):
        def record(*args, **kwargs):
            frame = sys._getframe(1)
            own = frame.f_globals.get("__name__", "") in SYMPY_CODEGEN
            text = bool(args) and isinstance(args[0], str)
            if own or _inside_an_import(frame) or (name in ("eval", "exec") and not text):
                return real(*args, **kwargs)
            calls.append((name, str(args[0])[:80] if args else ""))
            raise RuntimeError(f"{name} called while grading")

        return record

    for name in ("parse_expr", "eval_expr", "stringify_expr"):
        monkeypatch.setattr(sympy_parser, name, recorder(name, getattr(sympy_parser, name)))
    monkeypatch.setattr(builtins, "eval", recorder("eval", builtins.eval))
    monkeypatch.setattr(builtins, "exec", recorder("exec", builtins.exec))
    return calls
