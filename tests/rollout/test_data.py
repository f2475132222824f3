import json

import pytest

from rollout.data import DataError, PromptSampler, arithmetic_task, load_jsonl


def test_arithmetic_task_is_seeded_and_correct():
    a, b = arithmetic_task(50, operands=3, seed=1), arithmetic_task(50, operands=3, seed=1)
    assert a == b and a != arithmetic_task(50, operands=3, seed=2)
    for ex in a:
        nums = [int(x) for x in ex.problem.removesuffix(" = ?").split(" + ")]
        assert len(nums) == 3 and sum(nums) == int(ex.answer)


def test_jsonl_loader_reads_shared_schema(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        json.dumps({"id": "a", "problem": "1+1?", "answer": "2", "source": "x"})
        + "\n\n"
        + json.dumps({"problem": "2+2?", "answer": 4})
        + "\n"
    )
    rows = load_jsonl(f)
    assert [(r.id, r.answer) for r in rows] == [("a", "2"), ("d/3", "4")]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"d.jsonl:2: not valid JSON"),
        ('{"problem": "x"}', r"d.jsonl:2: missing field 'answer'"),
        ('{"problem": "x", "answer": "  "}', r"d.jsonl:2: field 'answer' is empty"),
        ("[1, 2]", r"d.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "d.jsonl"
    f.write_text('{"problem": "ok", "answer": "1"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        load_jsonl(f)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no usable rows"):
        load_jsonl(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_sampler_is_a_function_of_the_step_and_covers_each_epoch():
    rows = arithmetic_task(10)
    s = PromptSampler(rows, batch_size=5, seed=3)
    assert s.batch(4) == PromptSampler(rows, 5, 3).batch(4)
    epoch = s.batch(0) + s.batch(1)
    assert sorted(r.id for r in epoch) == sorted(r.id for r in rows)
