"""Issue #22 item 12: temperature 0 (greedy) is refused clearly, in the config and by ``groupwise eval``,
before any model is built (the samplers divide by the temperature)."""

import pytest

from app.cli import main


@pytest.mark.parametrize("temperature", ["0", "-1"])
def test_eval_cli_refuses_temperature_zero_before_building_a_model(temperature, capsys):
    # the model does not exist: the temperature is refused before it is read
    assert main(["eval", "no/such/model", "--temperature", temperature]) == 2
    assert "--temperature must be > 0" in capsys.readouterr().err


def test_config_refuses_eval_temperature_zero():
    from trainer.config import load_config

    with pytest.raises(Exception, match=r"eval\.temperature"):
        load_config(overrides=["eval.temperature=0"])
