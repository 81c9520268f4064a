"""The `rftlab` command: `launch` is a Hydra app; the other verbs are plain argparse commands."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

VERBS_HELP = """\
verbs:
  launch [OVERRIDES...] [-m]   compose conf/ groups into RFT job(s), validate, submit, record
                               (rftlab launch --help: the config groups, their options, examples)
  relaunch RUN_DIR             submit the byte-identical request recorded in RUN_DIR
  status [DIR]                 table of the runs in DIR, refreshed from the backend
  wait [DIR]                   follow the runs in DIR until they end; record the final job and metrics
  cancel DIR...                cancel the unfinished jobs of runs, launches or sweeps
  runs [OUTPUTS_DIR]           list recent runs and their states
  compare [DIR]                a sweep's runs side by side: table, compare.csv, rewards.png
  serve [OPTIONS]              run the local Fireworks-compatible backend (rftlab serve --help)
  chat MODEL PROMPT            answer PROMPT with a base model or a trained output model
  rollouts JOB [--step N]      a job's kept rollouts of a step: each group's best and worst (--worst K,
                               --best K, --kind eval); the dashboard: http://127.0.0.1:8317/dashboard

start here:
  rftlab launch wait=true      train the bundled tiny model on the local backend (started on demand)
  rftlab launch dry_run=true   print the request; contact nothing
  rftlab launch sweeps=lr_rank then: rftlab wait DIR; rftlab compare DIR (sweeps/*.yaml, or -m KEY=A,B)
  export FIREWORKS_API_KEY=... (or firectl's ~/.fireworks/auth.ini), then run on Fireworks:
  rftlab launch backend=fireworks backend.account_id=ACCOUNT experiment=qwen3_math_fireworks \\
                dataset=arithmetic evaluator=exact_match

records: one folder per job, ./outputs/<date>/<time>/<job id>/ (config.yaml, request.json, job.json,
status.jsonl, meta.json; metrics.json once followed); a launch or sweep is ./outputs/<date>/<time>/. DIR is any of these
(default: the latest launch under ./outputs). The local backend keeps its state in $RFTLAB_HOME (~/.rftlab).
"""


def launch(argv: list[str]) -> int:
    from rftlab.launch import run as launch
    from rftlab.launch import typos
    from rftlab.launch.compose import compose

    mistyped = typos.check(argv)
    if mistyped:
        print(mistyped, file=sys.stderr)
        return 2
    try:
        composed = compose(argv)
    except SystemExit as stop:  # Hydra's own errors (unknown group option, bad override) exit 1
        return stop.code if isinstance(stop.code, int) else 1
    return launch.run(composed)


def _chat_model(name: str) -> tuple[Path | None, str | None]:
    """(adapter folder, base model) for MODEL: a PEFT adapter folder, a local backend output model
    (`accounts/A/models/M`), or else a base model (tiny-arith, a Hugging Face folder or name)."""
    from rftlab.paths import state_dir
    from rftlab.server.layout import StateLayout
    from rftlab.server.storage import state_dir_storage

    if (Path(name) / "adapter_config.json").is_file():
        return Path(name), None
    output_model = re.fullmatch(r"accounts/([^/]+)/models/([^/]+)", name)
    if output_model:
        folder = StateLayout(state_dir()).model_dir(*output_model.groups())
        if not (folder / "adapter_config.json").is_file():  # trained on a node: its copy is in the storage
            state_dir_storage(state_dir()).fetch_dir(folder, missing_ok=True)
        if not (folder / "adapter_config.json").is_file():
            raise SystemExit(
                f"rftlab chat: {name} is not a trained model of the local backend ({folder} is missing)"
            )
        return folder, None
    return None, name


def chat(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rftlab chat", description="Answer a prompt with a model.")
    parser.add_argument(
        "model",
        help="an output model (accounts/A/models/M), a PEFT adapter folder, or a base model such as tiny-arith",
    )
    parser.add_argument("prompt", help='e.g. "What is 23+45?"')
    parser.add_argument(
        "--base-model", help="the base model under the adapter (default: the one it was trained on)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument(
        "--mcp-url",
        help="a streamable-HTTP MCP server whose tools the model may call (the bundled calculator: "
        "http://127.0.0.1:8318/mcp, running once experiment=mcp_calculator has been launched)",
    )
    args = parser.parse_args(argv)
    adapter, base_model = _chat_model(args.model)
    from rftlab.engine.api import JobFailed
    from rftlab.engine.chat import chat as answer

    try:
        reply = answer(
            args.prompt,
            adapter=adapter,
            base_model=args.base_model or base_model,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            mcp_url=args.mcp_url,
        )
    except JobFailed as error:  # a model that cannot load: the reason and the fix, no traceback
        print(f"rftlab chat: {error}", file=sys.stderr)
        return 1
    print(reply)
    return 0


# verb -> "module:function(argv) -> int"; imported on use so that `rftlab launch` stays light
COMMANDS: dict[str, str] = {
    "launch": "rftlab.cli:launch",
    "relaunch": "rftlab.runs.verbs:relaunch",
    "status": "rftlab.runs.verbs:status",
    "wait": "rftlab.runs.verbs:wait",
    "cancel": "rftlab.runs.verbs:cancel",
    "runs": "rftlab.runs.verbs:runs",
    "compare": "rftlab.runs.compare:main",
    "serve": "rftlab.server.serve:main",
    "chat": "rftlab.cli:chat",
    "rollouts": "rftlab.runs.rollouts_cli:main",
}


def _command(verb: str) -> Callable[[list[str]], int]:
    module, _, function = COMMANDS[verb].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rftlab",
        usage="rftlab [-h] VERB [ARGS...]",
        description="Launch, follow and serve reinforcement fine-tuning jobs over Fireworks' REST API.",
        epilog=VERBS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("verb", choices=sorted(COMMANDS), metavar="VERB", help=argparse.SUPPRESS)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints the usage and the valid verbs, exits 2
    return _command(argv[0])(argv[1:])
