"""Dataset validation names each bad line and why, and counts the good rows."""

from __future__ import annotations

import json

from rftlab.server.dataset_check import MAX_REPORTED_PROBLEMS, check_dataset_file, row_problem


def test_good_rows_are_counted_and_blank_lines_skipped(tmp_path):
    row = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
        "ground_truth": 4,
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n\n" + json.dumps(row) + "\n")
    report = check_dataset_file(path)
    assert (report.example_count, report.problem_count) == (2, 0)


def test_each_problem_names_its_line(tmp_path):
    lines = [
        '{"messages": [{"role": "user", "content": "ok"}]}',
        "[1, 2]",
        '{"messages": []}',
        '{"messages": [{"role": "user"}]}',
        '{"messages": [{"role": "user", "content": 5}]}',
        '{"messages": [{"role": "assistant", "content": null}]}',
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines))
    report = check_dataset_file(path)
    assert report.example_count == 2
    assert [line for line, _ in report.problems] == [2, 3, 4, 5]
    summary = report.summary()
    assert "line 2: expected a JSON object, got list" in summary
    assert "line 3: 'messages' must be a non-empty list" in summary
    assert "line 4: messages[0] has no 'content'" in summary
    assert "line 5: messages[0].content must be a string or a list of content parts" in summary


def test_long_lists_of_problems_are_cut_with_a_count(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(["nope"] * (MAX_REPORTED_PROBLEMS + 5)))
    report = check_dataset_file(path)
    assert report.problem_count == MAX_REPORTED_PROBLEMS + 5
    assert len(report.problems) == MAX_REPORTED_PROBLEMS
    assert report.summary().endswith("and 5 more")


def test_content_parts_and_tool_messages_are_rows():
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "tool", "content": "42"},
        ]
    }
    assert row_problem(row) is None
