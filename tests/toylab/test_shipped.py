"""The starting models shipped in toylab/checkpoints/: every machine resolves ``builtin:*`` to the same weights
(checked against MANIFEST.json's SHA-256), and each model's held-out accuracy here agrees with the figure the
manifest (and the docs) state, within its sampling error. Built models are machine-dependent; these are not."""

import json
import math
import shutil

import pytest

from toylab import reasoner
from toylab.probe import heldout_profile

MANIFEST = json.loads((reasoner.SHIPPED / "MANIFEST.json").read_text())


def test_the_lab_and_the_demo_start_from_shipped_models():
    assert {"builtin:toy-reasoner", "builtin:toy-shortcut5", "builtin:toy-lengthpays"} <= set(MANIFEST)
    for name, entry in MANIFEST.items():
        assert entry["dir"] == reasoner.BUILTINS[name].key()  # the spec that built it names it
        assert "model.safetensors" in entry["sha256"] and "tokenizer.json" in entry["sha256"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_shipped_model_resolves_to_its_checked_copy_and_has_its_documented_accuracy(name, monkeypatch):
    monkeypatch.delenv("GROUPWISE_BUILD_REASONERS", raising=False)
    path = reasoner.resolve_model_path(name)
    assert path == str(reasoner.SHIPPED / MANIFEST[name]["dir"])  # no build, no cache
    h = MANIFEST[name]["heldout"]
    got = heldout_profile(path, reasoner.BUILTINS[name], h["problems"], h["samples"], seed=h["seed"] + 1)
    # another sampling seed (and, on another machine, other kernels): the two figures are two draws on the same
    # problems; 3 sigma of the difference of two independent draws bounds it generously
    tolerance = 3 * math.sqrt(2) * h["accuracy_se"]
    assert abs(got["accuracy"] - h["accuracy"]) <= tolerance, (got, h)


def test_a_damaged_shipped_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    name = "builtin:toy-shortcut5"
    copy = tmp_path / "checkpoints"
    shutil.copytree(reasoner.SHIPPED / MANIFEST[name]["dir"], copy / MANIFEST[name]["dir"])
    shutil.copy(reasoner.SHIPPED / "MANIFEST.json", copy / "MANIFEST.json")
    weights = copy / MANIFEST[name]["dir"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(reasoner, "SHIPPED", copy)
    monkeypatch.setattr(reasoner, "_VERIFIED", {})
    with pytest.raises(ValueError, match=r"does not match MANIFEST\.json.*git checkout.*GROUPWISE_BUILD_REASONERS"):
        reasoner.resolve_model_path(name)
