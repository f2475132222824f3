"""Issue #22 item 12: temperature 0 (greedy) is refused clearly, in the config and by ``groupwise eval``,
before any model is built (the samplers divide by the temperature)."""

from types import SimpleNamespace

import pytest

from app.eval_cli import run_eval


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_eval_cli_refuses_temperature_zero_before_building_a_model(temperature):
    args = SimpleNamespace(model="no/such/model", temperature=temperature)  # nothing else is read before the check
    with pytest.raises(ValueError, match="temperature must be > 0"):
        run_eval(args)


def test_config_refuses_eval_temperature_zero():
    from trainer.config import load_config

    with pytest.raises(Exception, match=r"eval\.temperature"):
        load_config(overrides=["eval.temperature=0"])
