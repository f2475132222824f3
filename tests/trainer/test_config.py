import os
from pathlib import Path

import pytest

from trainer.config import Config, ConfigError, describe_fields, load_config, resolve, save_config, validate


def test_defaults_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\nloss:\n  name: dapo\n")
    cfg = resolve(load_config(f, ["loss.clip_high=0.3", "optim.lr=3e-5"]))
    assert cfg.steps == 7 and cfg.loss.name == "dapo"
    assert cfg.loss.clip_high == 0.3 and cfg.loss.clip_low == 0.2  # override wins, the other is the paper's
    assert cfg.optim.lr == 3e-5


def test_objective_defaults_fill_none():
    cfg = resolve(load_config(None, ["loss.name=gspo"]))
    assert (cfg.loss.clip_low, cfg.loss.clip_high, cfg.loss.scale_std) == (3e-4, 4e-4, True)
    cfg = resolve(load_config(None, ["loss.name=dr_grpo"]))
    assert cfg.loss.scale_std is False and cfg.loss.max_tokens == cfg.rollout.max_new_tokens


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.clip_hgh=0.3", r"unknown config key 'loss.clip_hgh'; did you mean 'loss.clip_high'"),
        ("lossy.name=grpo", r"unknown config key 'lossy'"),
        ("loss.name=ppo", r"loss.name: 'ppo' is not valid; choose from \['grpo'"),
        ("steps=ten", r"steps: expected an integer, got 'ten'"),
        ("steps=1.5", r"steps: expected an integer"),
        ("optim.lr=fast", r"optim.lr: expected a number"),
        ("deepspeed.zero_stage=4", r"deepspeed.zero_stage: 4 is not valid; choose from \[0, 1, 2, 3\]"),
        ("model.gradient_checkpointing=1", r"expected true or false"),
        ("loss=3", r"loss: expected a mapping"),
        ("steps", r"must look like key.sub=value"),
        ("rollout.group_size=1", r"rollout\.group_size=1 is out of range: .* \[2, ∞\) \(a group of one"),
        ("loss.clip_low=1.5", r"loss\.clip_low=1.5 is out of range: it must be a finite number in \[0, 1\)"),
        ("optim.micro_batch_size=7", r"optim.micro_batch_size=7 they must divide evenly"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_batch_must_divide_over_ranks():
    cfg = Config()
    cfg.data.prompts_per_step = 3
    with pytest.raises(ConfigError, match="not divisible by the 2 ranks"):
        validate(cfg, world_size=2)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_field_is_documented():
    rows = describe_fields()
    assert len(rows) > 30
    missing = [r.key for r in rows if not r.doc]
    assert not missing, f"fields without a one-line doc: {missing}"


def test_a_budget_the_model_cannot_hold_fails_at_start_up(tiny_model_dir):
    """The tiny model has 1024 positions: prompt + completion budgets beyond them are refused up front."""
    from trainer.backends import check_context, model_positions

    limit = model_positions(str(tiny_model_dir))
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "data.max_prompt_tokens=1000"])
    with pytest.raises(ConfigError, match=r"= 1096 tokens, but .* holds 1024 positions"):
        check_context(cfg, limit)
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "eval.max_new_tokens=2000"])
    with pytest.raises(ConfigError, match=r"eval\.max_new_tokens"):
        check_context(cfg, limit)
    check_context(load_config(None, [f"model.path={tiny_model_dir}"]), limit)  # the defaults fit


def test_vllm_training_refuses_top_p_below_one():
    pytest.importorskip("vllm")
    with pytest.raises(ConfigError, match=r"rollout.top_p=0.9 with rollout.backend=vllm"):
        load_config(None, ["rollout.backend=vllm", "rollout.top_p=0.9"])
    load_config(None, ["rollout.backend=vllm", "eval.top_p=0.9"])  # evaluation may use a nucleus


def _edges(lo: float, hi: float, brackets: str) -> tuple[list, list]:
    """(values that must fail, values that must pass) for one range, NaN and infinities always failing."""
    import math

    bad = [float("nan"), float("inf"), float("-inf")]
    good = []
    if math.isfinite(lo):
        bad.append(lo - 1 if brackets[0] == "[" else lo)
        good.append(lo if brackets[0] == "[" else lo + (1e-3 if hi - lo <= 1 else 1))
    if math.isfinite(hi):
        bad.append(hi + 1 if brackets[1] == "]" else hi)
        good.append(hi if brackets[1] == "]" else hi - (1e-3 if hi - lo <= 1 else 1))
    return bad, good


def _base_overrides(key: str) -> list[str]:
    """Other keys a value of ``key`` depends on, set so that only ``key`` decides."""
    if key == "reward.acoer.alpha_min":
        return ["reward.acoer.alpha=1e6", "reward.acoer.alpha_max=1e9"]
    if key == "reward.acoer.alpha":
        return ["reward.acoer.alpha_min=1e-9", "reward.acoer.alpha_max=1e9"]
    if key == "reward.acoer.alpha_max":
        return ["reward.acoer.alpha_min=1e-9", "reward.acoer.alpha=1e-6"]
    if key == "reward.acoer.initial_budget":
        return ["reward.acoer.min_budget=1e-9"]
    if key in ("guard.window", "guard.min_history"):
        return ["guard.min_history=1", "guard.window=1000"]
    if key == "loss.max_tokens":
        return ["rollout.max_new_tokens=1"]
    if key in ("rollout.group_size", "data.prompts_per_step", "optim.micro_batch_size"):
        return ["optim.micro_batch_size=1", "loss.updates_per_batch=1"]
    if key == "loss.updates_per_batch":
        return ["optim.micro_batch_size=1", "data.prompts_per_step=64", "rollout.group_size=64"]
    if key == "reward.overlong_cache":
        return ["rollout.max_new_tokens=1000000"]
    return []


RANGES = {r.key: r for r in describe_fields() if r.bounds}  # every numeric key and its declared range


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_numeric_range_rejects_nan_infinity_and_both_sides(key):
    """Table-driven: NaN, +-inf and a value just outside each bound fail naming the key; the bounds that
    belong to the range pass."""
    row = RANGES[key]
    bad, good = _edges(*row.bounds)
    base = _base_overrides(key)
    integer = row.type.startswith("int")
    for v in bad:
        if key == "loss.tis_cap" and v == 0.5:
            continue
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [*base, f"{key}={v!r}" if v == v else f"{key}=.nan"])
    for v in good:
        if key == "loss.tis_cap" and 0 < v < 1:
            continue
        if integer and not float(v).is_integer():
            continue
        value = int(v) if integer else v
        load_config(None, [*base, f"{key}={value!r}"])


def test_every_numeric_field_has_a_range():
    """A number without bounds is a number nobody thought about: each int or float key declares ge/gt/le/lt."""
    missing = [r.key for r in describe_fields() if not r.choices and r.type.split(" | ")[0] in ("int", "float")]
    missing = [k for k in missing if k not in RANGES]
    assert not missing, f"numeric config fields declared without bounds (ge/gt/le/lt): {missing}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=.nan", r"optim\.lr=nan is out of range"),
        ("reward.acoer.gamma=2", r"reward\.acoer\.gamma=2.0 is out of range.*\(0, 1\]"),
        ("reward.acoer.alpha=0.9", r"alpha_min <= alpha <= alpha_max"),
        ("reward.acoer.initial_budget=100", r"initial_budget=100.0 is below reward\.acoer\.min_budget=512"),
        ("guard.min_history=50", r"guard\.min_history=50 exceeds guard\.window=20"),
        ("loss.tis_cap=0.5", r"loss\.tis_cap=0.5: use 0 \(off\) or a cap >= 1"),
        ("optim.grad_clip=-1", r"optim\.grad_clip=-1.0 is out of range"),
        ("reward.efficiency.alpha=1.5", r"1 - alpha \* sigmoid"),
    ],
)
def test_impossible_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.max_staleness=1"], r"rollout.max_staleness=1 needs rollout.backend=server: the hf backend"),
        (["rollout.backend=vllm", "rollout.max_staleness=1"], r"needs rollout.backend=server: the vllm backend"),
        (
            ["rollout.backend=server", "rollout.max_staleness=2", "rollout.server.overlap_push=false"],
            r"rollout.max_staleness=2 buys nothing over 1 with rollout.server.overlap_push=false.*exactly as fast "
            r"as k=1 and only staler.*use rollout.max_staleness=1, or overlap_push=true",
        ),
        (
            ["rollout.backend=server", "rollout.max_staleness=1", "rollout.dynamic_sampling=true"],
            r"rollout.dynamic_sampling decides after grading",
        ),
        (["rollout.backend=server", "rollout.server.urls=localhost:8100"], r"'localhost:8100' is not a base URL"),
        (["rollout.backend=server", "rollout.top_p=0.9"], r"rollout.top_p=0.9 with rollout.backend=server"),
        (["rollout.max_staleness=-1"], r"rollout.max_staleness=-1 is out of range"),
        (["rollout.server.request_timeout=0"], r"rollout.server.request_timeout=0.0 is out of range"),
        (["rollout.server.logprob_tolerance=0"], r"rollout.server.logprob_tolerance=0.0 is out of range"),
    ],
)
def test_server_and_staleness_combinations_that_cannot_work_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_stale_samples_are_corrected_by_default_and_on_policy_ones_are_not():
    from trainer.config import server_urls

    cfg = resolve(load_config(None, ["rollout.backend=server", "rollout.max_staleness=1"]))
    assert cfg.loss.tis_cap == 2.0
    assert resolve(load_config(None, ["rollout.backend=server"])).loss.tis_cap == 0.0
    assert load_config(None, ["rollout.backend=server", "rollout.max_staleness=2"]).rollout.server.overlap_push
    off = ["rollout.backend=server", "rollout.max_staleness=1", "loss.tis_cap=0"]
    assert resolve(load_config(None, off)).loss.tis_cap == 0.0  # an explicit 0 stays off
    cfg = load_config(None, ["rollout.backend=server", "rollout.server.urls=http://a:1/, http://b:2"])
    assert server_urls(cfg) == ["http://a:1", "http://b:2"]


def test_servers_off_loopback_need_the_shared_secret(monkeypatch):
    from app.launch import check_host, server_command

    monkeypatch.delenv("GROUPWISE_SERVER_SECRET", raising=False)
    check_host("127.0.0.1")
    with pytest.raises(ConfigError, match="GROUPWISE_SERVER_SECRET"):
        check_host("0.0.0.0")
    monkeypatch.setenv("GROUPWISE_SERVER_SECRET", "s")
    check_host("0.0.0.0")
    # the server's flags come from the trainer's config
    cfg = load_config(None, ["rollout.backend=server", "rollout.max_new_tokens=50", "data.max_prompt_tokens=30"])
    cmd = server_command(cfg, "/m", "127.0.0.1", 8100, cuda=False)
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--model"] == "/m" and flags["--max-model-len"] == "80" and flags["--dtype"] == "float32"
    assert "--enforce-eager" in cmd and "processed_logprobs" in cmd
    assert flags["--generation-config"] == "vllm"  # the model's generation_config.json is no request default
    assert "rollout.server_auth.SharedSecretGuard" in cmd
    assert flags["--weight-transfer-config"] == '{"backend": "groupwise"}'  # rollout/weight_transfer.py's engine
    gpu = server_command(load_config(None, ["rollout.backend=server", "model.dtype=bf16"]), "/m", "h", 1, cuda=True)
    assert "--enforce-eager" not in gpu and '{"backend": "groupwise"}' in gpu and "bfloat16" in gpu
    by_file = load_config(None, ["rollout.backend=server", "rollout.server.push=file"])
    assert "--weight-transfer-config" not in server_command(by_file, "/m", "h", 1, cuda=True)


def test_off_is_a_choice_not_a_boolean():
    """YAML 1.1 reads `off` as false; a choice named off still means off."""
    assert load_config(None, ["guard.collapse_action=off"]).guard.collapse_action == "off"
    with pytest.raises(ConfigError, match=r"guard\.collapse_action: True is not valid"):
        load_config(None, ["guard.collapse_action=yes"])


def test_backend_needs_are_checked_where_the_backend_is_built_before_any_model(monkeypatch):
    """The config never imports a rollout backend; ``check_backend`` (called by ``open_session`` before the
    model is built) refuses what the machine or the config cannot give the backend."""
    import torch

    import rollout.vllm_backend
    from trainer.backends import check_backend

    cpu = torch.device("cpu")
    monkeypatch.setattr(rollout.vllm_backend, "vllm_available", lambda: (False, "no vllm here"))
    with pytest.raises(ConfigError, match=r"rollout\.backend=vllm: no vllm here"):
        check_backend(load_config(None, ["rollout.backend=vllm"]), cpu)
    with pytest.raises(ConfigError, match=r"needs rollout.server.urls=http://HOST:PORT"):
        check_backend(load_config(None, ["rollout.backend=server"]), cpu)
    with pytest.raises(ConfigError, match=r"rollout\.server\.push.*'broadcast'"):  # the per-server NCCL push is gone
        load_config(None, ["rollout.backend=server", "rollout.server.push=nccl"])
    check_backend(load_config(None, ["rollout.backend=server", "rollout.server.urls=http://a:1"]), cpu)
    check_backend(load_config(None), cpu)


def test_names_of_objectives_and_schemes_agree_with_their_registries():
    """The config lists the names torch-free; the registries (torch modules) are the functions behind them."""
    import typing

    from losses import OBJECTIVES
    from rewards.schemes import SCHEMES
    from trainer.config import LossConfig, RewardConfig

    assert typing.get_args(LossConfig.model_fields["name"].annotation) == tuple(OBJECTIVES)
    assert typing.get_args(RewardConfig.model_fields["name"].annotation) == tuple(sorted(SCHEMES))


def test_loading_a_config_imports_no_torch():
    """Checking a config is instant: neither a good nor a bad one pulls in torch, transformers, deepspeed or vllm."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from trainer.config import ConfigError, as_markdown, load_config\n"
        "load_config('configs/smoke.yaml', ['loss.name=gspo'])\n"
        "as_markdown()\n"
        "try:\n"
        "    load_config('configs/smoke.yaml', ['loss.clip_hgh=0.3'])\n"
        "except ConfigError as e:\n"
        "    print('ConfigError:', e)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'deepspeed', 'vllm') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "ConfigError: unknown config key 'loss.clip_hgh'; did you mean 'loss.clip_high'" in out
    assert out.strip().endswith("[]"), out


@pytest.mark.parametrize("old, new", sorted(__import__("trainer.config", fromlist=["RENAMED"]).RENAMED.items()))
def test_a_renamed_key_fails_naming_the_new_one(old, new, tmp_path):
    section, key = old.split(".")
    f = tmp_path / "old.yaml"
    f.write_text(f"{section}:\n  {key}: 1\n")
    with pytest.raises(ConfigError, match=rf"old\.yaml: config key '{old}' was renamed to '{new}'"):
        load_config(f)
    assert new in {r.key for r in describe_fields()}


def test_every_yaml_in_configs_loads():
    """Each file on top of the base it is written for (the GPU objectives on base_gpu.yaml, the lab's methods
    on lab/base.yaml); the others alone."""
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) > 30
    for f in files:
        base = {"configs": [root / "base_gpu.yaml"], "lab": [root / "lab" / "base.yaml"]}.get(f.parent.name, [])
        load_config([*base, f] if f not in base and f.name not in ("smoke.yaml",) else [f])


def test_a_saved_config_loads_as_it_was(tmp_path):
    cfg = resolve(load_config("configs/smoke.yaml", ["reward.name=acoer", "rollout.backend=server"]))
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_the_reference_in_docs_is_up_to_date(capsys):
    """docs/config.md is what `groupwise config --format markdown` writes: regenerate it after a change."""
    from app.cli import main

    assert main(["config", "--format", "markdown"]) == 0
    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert doc.read_text() == capsys.readouterr().out, "run: groupwise config --format markdown > docs/config.md"


def test_the_listing_shows_type_default_range_and_doc():
    from trainer.config import as_text

    lines = {line.split()[0]: line for line in as_text().splitlines()}
    assert lines["rollout.group_size"].split()[1:4] == ["int", "16", "[2,"]
    assert "grpo | dr_grpo" in lines["loss.name"] and "whole objective" in lines["loss.name"]
