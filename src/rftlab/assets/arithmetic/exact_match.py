"""Exact-match evaluator: full score when the model's last reply is exactly the expected answer.

An evaluator is a plain Python file with an entry function. rftlab calls it once per sampled reply with the row's
conversation (ending with that reply), the row's `ground_truth`, and any other fields of the row as keyword
arguments. It returns a score in [0, 1] and, optionally, a reason. Only the standard library is used, so the file
runs anywhere.
"""


def evaluate(messages, ground_truth=None, **kwargs):
    if ground_truth is None:
        return {"score": 0.0, "reason": "the row has no ground_truth to compare with"}
    if not messages or messages[-1].get("role") != "assistant":
        return {"score": 0.0, "reason": "the conversation does not end with an assistant reply"}

    answer = (messages[-1].get("content") or "").strip()
    expected = str(ground_truth).strip()
    if answer == expected:
        return {"score": 1.0, "reason": f"answer {answer!r} matches"}
    return {"score": 0.0, "reason": f"answer {answer!r} differs from expected {expected!r}"}
