"""Every path a config, a Makefile target or a script names exists in the checkout, and no config or product
module points outside it (``../``): a fresh clone runs them as written."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = "configs|scripts|docs|toylab|app|trainer|rollout|rewards|losses|tests"
# a repository path in running text; one holding a glob (lab-*.png) or a make/shell variable ($*.yaml) is a
# pattern: something must exist under its fixed part
PATH_RE = re.compile(rf"(?<![\w/.$-])(?:{FOLDERS})/[\w./*$<>-]*[\w*>]")
NAMING_FILES = [
    ROOT / "Makefile",
    *sorted((ROOT / "configs").rglob("*.yaml")),
    *sorted((ROOT / "scripts").glob("*.py")),
    *sorted((ROOT / "scripts").glob("*.sh")),
]


def _named_paths(text: str) -> list[tuple[str, bool]]:
    """(path, is_pattern) pairs; a pattern is cut at its first wildcard or variable."""
    found = []
    for m in PATH_RE.finditer(text):
        fixed = re.split(r"[*$<]", m.group(0), maxsplit=1)[0]
        found.append((fixed, fixed != m.group(0)))
    return found


@pytest.mark.parametrize("source", NAMING_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(source):
    missing = []
    for path, is_pattern in _named_paths(source.read_text()):
        found = any(ROOT.glob(path + "*")) if is_pattern else (ROOT / path).exists()
        if not found:
            missing.append(path)
    assert not missing, f"{source.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_path_finder_finds_paths_and_patterns():
    text = "see configs/base_gpu.yaml, then docs/lab-*.png and configs/toy/$*.yaml (not runs/x or a/configs/y)"
    assert _named_paths(text) == [("configs/base_gpu.yaml", False), ("docs/lab-", True), ("configs/toy/", True)]


def _make_list(name: str) -> list[str]:
    line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if ln.startswith(f"{name} "))
    return line.split("?=", 1)[1].split()


def test_makefile_pattern_targets_have_their_configs():
    """``make exp-NAME`` for every EXPS name and the PRESET choices of ``make train-%`` read existing files."""
    assert all((ROOT / "configs/toy" / f"{e}.yaml").is_file() for e in _make_list("EXPS"))
    help_line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if ln.startswith("train-%:"))
    presets = re.search(r"PRESET=([\w|]+)", help_line).group(1).split("|")
    assert presets and all((ROOT / "configs/presets" / f"{p}.yaml").is_file() for p in presets)


def _config_values(doc: dict, prefix: str = ""):
    for key, value in (doc or {}).items():
        if isinstance(value, dict):
            yield from _config_values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("config", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_config_inputs_are_hub_names_builtins_or_files_here(config):
    """Data, benchmark and model a config names: a hub name, a builtin, or a file in the checkout; never ../."""
    text = config.read_text()
    assert "../" not in text, f"{config.name} points outside the checkout"
    values = dict(_config_values(yaml.safe_load(text)))
    source = values.get("data.source")
    if source is not None and source not in ("toy", "arith") and not source.startswith("hub:"):
        assert (ROOT / source).is_file(), f"{config.name}: data.source {source!r} is not a file here"
    bench = values.get("eval.benchmark")
    if bench is not None and str(bench).endswith(".jsonl"):
        assert (ROOT / bench).is_file(), f"{config.name}: eval.benchmark {bench!r} is not a file here"
    model = values.get("model.path")
    if model is not None and model.startswith((".", "/")):  # else a hub id or builtin:NAME
        assert (ROOT / model).exists(), f"{config.name}: model.path {model!r} is not here"


@pytest.mark.parametrize("folder", ["app", "trainer", "rollout", "rewards", "losses", "toylab", "scripts"])
def test_product_code_never_looks_beside_the_checkout(folder):
    """No module searches a ``shared`` folder next to the checkout: data comes from paths the user names."""
    offenders = [
        str(f.relative_to(ROOT))
        for f in (ROOT / folder).rglob("*.py")
        if re.search(r"\.\./shared|[\"']shared[\"']\s*/|[\"']shared/", f.read_text())
    ]
    assert not offenders
