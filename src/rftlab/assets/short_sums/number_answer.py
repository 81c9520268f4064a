"""Number-answer evaluator: full score for a reply that is the expected number alone, half for a reply whose
last number is the expected one among other words ("The answer is 12.", "5 + 7 = 12"), none otherwise.

The partial score rewards a correct answer in a sentence, which a small instruct model gives most of the time, so
the groups of a job differ in reward from the start; the full score asks for the bare number the prompt asked
for. Standard library only.
"""

import re

NUMBER = re.compile(r"-?\d+")


def evaluate(messages, ground_truth=None, **kwargs):
    if ground_truth is None:
        return {"score": 0.0, "reason": "the row has no ground_truth to compare with"}
    if not messages or messages[-1].get("role") != "assistant":
        return {"score": 0.0, "reason": "the conversation does not end with an assistant reply"}

    reply = (messages[-1].get("content") or "").strip()
    expected = str(ground_truth).strip()
    if reply.rstrip(".") == expected:
        return {"score": 1.0, "reason": "the number alone"}
    numbers = NUMBER.findall(reply)
    if numbers and numbers[-1] == expected:
        return {"score": 0.5, "reason": f"{expected} ends the reply's numbers, among other words"}
    return {"score": 0.0, "reason": f"the reply's last number is not {expected}"}
