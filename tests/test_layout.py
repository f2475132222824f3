"""The import graph: each concern in one room, imports flowing one way. Parsed from the source (every import,
including the ones inside functions), so a new circle fails here before anyone meets it at run time."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "trainer", "rollout", "rewards", "losses", "toylab")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    p = ROOT / name.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (subpackages included)."""
    graph: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            mod = _module_name(path)
            deps = graph.setdefault(mod, set())
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps.update(n for n in names if n.split(".")[0] in PACKAGES and _is_module(n))
            deps.discard(mod)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_module_imports_itself_through_a_circle():
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()) or [])


def test_packages_import_one_way():
    """Between rooms too: the toy lab's experiments replay and read what the trainer wrote (``toylab.guard_lab``
    runs the trainer's own collapse guard), the trainer never uses the toy lab; the toy task, its tokenizers,
    models and reasoners (what ``builtin:`` models resolve to at the entry point) use no trainer either."""
    pkg_graph: dict[str, set[str]] = {}
    for mod, deps in _imports().items():
        pkg_graph.setdefault(mod.split(".")[0], set()).update(d.split(".")[0] for d in deps)
    for p, deps in pkg_graph.items():
        deps.discard(p)
    assert _cycle(pkg_graph) is None, " -> ".join(_cycle(pkg_graph) or [])
    assert "toylab" not in pkg_graph["trainer"] and "toylab" not in pkg_graph["rollout"]
    for mod in ("toylab.task", "toylab.models", "toylab.reasoner", "toylab.probe"):
        assert not any(d.split(".")[0] == "trainer" for d in _imports()[mod]), f"{mod} imports the trainer"


def test_the_application_sits_on_top_and_the_trainer_never_loads_the_toy_lab():
    """``app`` (CLI, benchmarks, launch, reports, plots) imports the library; nothing imports ``app``. The
    toy lab is resolved at the entry point, so the training core loads without the CPU demo's builders."""
    pkg_graph: dict[str, set[str]] = {}
    for mod, deps in _imports().items():
        pkg_graph.setdefault(mod.split(".")[0], set()).update(d.split(".")[0] for d in deps)
    assert {"trainer", "rollout", "toylab"} <= pkg_graph["app"]
    for lib in ("trainer", "rollout", "rewards", "losses", "toylab"):
        assert "app" not in pkg_graph.get(lib, set()), f"{lib} imports the application layer"
    assert "toylab" not in pkg_graph["trainer"]


def test_math_modules_import_only_torch_stdlib_sympy_and_the_grading_library():
    import sys

    allowed = {"torch", "sympy", "math_verify", "latex2sympy2_extended", *PACKAGES}
    for pkg in ("losses", "rewards"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                bad = [t for t in tops if t not in allowed and t not in sys.stdlib_module_names]
                assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


LIBRARY = ("trainer", "rollout", "rewards", "losses", "toylab")
MAX_FILE_LINES = 400
# scripts/ (thin entry points and benchmarks) and tests/ are not checked; app/ is, by the same limit as the
# library. Functions have no line bound: a function is as long as its one job needs (split by meaning, never to
# meet a count), which no line count can check.


def test_small_files():
    """Library files stay under 400 lines: a file that grows past it is split along a seam."""
    too_long = []
    for pkg in (*LIBRARY, "app"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > MAX_FILE_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines > {MAX_FILE_LINES}")
    assert not too_long, "\n".join(too_long)


def test_the_config_imports_no_rollout_backend():
    """What a backend needs is checked where it is built (``trainer.backends.check_backend``)."""
    for mod, deps in _imports().items():
        if mod == "trainer.config" or mod.startswith("trainer.config."):
            assert not any(d.split(".")[0] == "rollout" for d in deps), f"{mod} imports {deps}"


# torch.autograd.Function.forward receives its inputs positionally from .apply(): the one named exception
POSITIONAL_EXCEPTIONS = {"trainer/logprobs.py:forward"}


def test_more_than_six_inputs_are_taken_by_keyword():
    """A function that needs more than six inputs takes the rest by keyword (or as one record), so a call
    site names what it passes."""
    offenders = []
    for pkg in (*LIBRARY, "app"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                positional = [a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                where = f"{path.relative_to(ROOT)}:{node.name}"
                if len(positional) > 6 and where not in POSITIONAL_EXCEPTIONS:
                    offenders.append(f"{where} (line {node.lineno}): {len(positional)} positional inputs")
    assert not offenders, "\n".join(offenders)


def test_no_script_directory_shadows_a_package():
    """A script run by path puts its own folder first on sys.path: a `tests/support/rewards.py` beside
    `mp_update.py` hid the `rewards` package from every torchrun child (14 failures in CI on 489b886).
    No folder that holds a script run by path may hold a module named like a project package."""
    shadows = []
    for folder in (ROOT / "tests", ROOT / "tests" / "support", ROOT / "scripts"):
        for path in folder.glob("*.py"):
            if path.stem in PACKAGES:
                shadows.append(str(path.relative_to(ROOT)))
    assert not shadows, f"rename these; they shadow a package for scripts run from their folder: {shadows}"
