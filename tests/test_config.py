import pytest

from trainer.config import Config, ConfigError, describe_fields, load_config, resolve, validate


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
        ("rollout.group_size=0", r"rollout.group_size must be positive"),
        ("loss.clip_low=1.5", r"loss.clip_low must be in \[0, 1\)"),
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
    missing = [key for key, _, doc in rows if not doc]
    assert not missing, f"fields without a one-line doc: {missing}"


def test_a_budget_the_model_cannot_hold_fails_at_start_up(tiny_model_dir):
    """The tiny model has 1024 positions: prompt + completion budgets beyond them are refused up front."""
    from trainer.components import check_context

    cfg = load_config(None, [f"model.path={tiny_model_dir}", "data.max_prompt_tokens=1000"])
    with pytest.raises(ConfigError, match=r"= 1096 tokens, but .* holds 1024 positions"):
        check_context(cfg, str(tiny_model_dir))
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "eval.max_new_tokens=2000"])
    with pytest.raises(ConfigError, match=r"eval\.max_new_tokens"):
        check_context(cfg, str(tiny_model_dir))
    check_context(load_config(None, [f"model.path={tiny_model_dir}"]), str(tiny_model_dir))  # the defaults fit


def test_vllm_training_refuses_top_p_below_one():
    pytest.importorskip("vllm")
    with pytest.raises(ConfigError, match=r"rollout.top_p=0.9 with rollout.backend=vllm"):
        load_config(None, ["rollout.backend=vllm", "rollout.top_p=0.9"])
    load_config(None, ["rollout.backend=vllm", "eval.top_p=0.9"])  # evaluation may use a nucleus
