"""Where benchmark and training files come from: only the directory the user names (``--data-dir`` /
``data.dir``, then ``$GROUPWISE_DATA``), else the hub; never a folder beside the checkout."""

import json

import pytest

import app.benchmarks as benchmarks
from app.benchmarks import data_dir, data_path, load_benchmark
from app.inputs import run_inputs
from rollout.data import DataError
from trainer.config import load_config


def _jsonl(path, n):
    path.write_text("".join(json.dumps({"problem": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n" for i in range(n)))
    return path


def test_no_directory_is_guessed(tmp_path, monkeypatch):
    """A ``shared/data`` beside the working directory (as this repository's CI has) is not looked at."""
    (tmp_path / "shared" / "data").mkdir(parents=True)
    _jsonl(tmp_path / "shared" / "data" / "gsm8k_test.jsonl", 3)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("GROUPWISE_DATA", raising=False)
    assert data_dir() is None


def test_flag_wins_over_environment(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.setenv("GROUPWISE_DATA", str(tmp_path / "b"))
    assert data_dir(str(tmp_path / "a")) == tmp_path / "a"
    assert data_dir() == tmp_path / "b"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_named_directory_that_does_not_exist_is_an_error_naming_its_origin(tmp_path, monkeypatch, via):
    missing = str(tmp_path / "nope")
    monkeypatch.setenv("GROUPWISE_DATA", missing if via == "env" else str(tmp_path))
    with pytest.raises(DataError, match=r"nope.*(--data-dir|\$GROUPWISE_DATA)"):
        data_dir(missing if via == "flag" else None)


def test_named_benchmark_reads_its_file_from_the_named_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("GROUPWISE_DATA", raising=False)
    _jsonl(tmp_path / "gsm8k_test.jsonl", 5)
    rows = load_benchmark("gsm8k", str(tmp_path), limit=3)
    assert [(r.problem, r.answer) for r in rows] == [("0 + 1 = ?", "1"), ("1 + 1 = ?", "2"), ("2 + 1 = ?", "3")]


def test_a_benchmark_found_nowhere_says_how_to_name_a_directory(tmp_path, monkeypatch):
    """Offline (the hub loader fails) and the named directory lacks the file: the error names file and fixes."""

    def offline(name, split="train"):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(benchmarks, "load_hub", offline)
    with pytest.raises(DataError, match=r"math500\.jsonl is not in .*--data-dir.*data\.dir.*GROUPWISE_DATA"):
        load_benchmark("math500", str(tmp_path))


def test_relative_jsonl_is_looked_up_in_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    _jsonl(tmp_path / "data" / "train.jsonl", 4)
    assert data_path("train.jsonl", "data") == "data/train.jsonl"
    _jsonl(tmp_path / "train.jsonl", 2)  # a path that exists as given is read as given
    assert data_path("train.jsonl", "data") == "train.jsonl"


def test_training_source_and_eval_benchmark_come_from_data_dir(tmp_path, monkeypatch):
    """``data.dir`` serves both the training file (relative ``data.source``) and the eval benchmark."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GROUPWISE_DATA", raising=False)
    d = tmp_path / "mydata"
    d.mkdir()
    _jsonl(d / "my_train.jsonl", 6)
    _jsonl(d / "gsm8k_test.jsonl", 7)
    overrides = [f"data.dir={d}", "data.source=my_train.jsonl", "eval.benchmark=gsm8k", "eval.problems=0"]
    inputs = run_inputs(load_config(None, [*overrides, "model.path=builtin:tiny-random"]))
    assert len(inputs.rows) == 6 and len(inputs.eval_rows) == 7


def test_real_benchmarks_load_from_the_named_directory(benchmark_dir):
    """The files this repository's CI names: the official sizes (GSM8K test 1319, MATH-500 500)."""
    assert len(load_benchmark("gsm8k", str(benchmark_dir))) == 1319
    assert len(load_benchmark("math500", str(benchmark_dir))) == 500
