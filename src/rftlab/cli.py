"""The `rftlab` command: `launch` is a Hydra app; the other verbs are plain argparse commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

VERBS_HELP = """\
verbs:
  launch [OVERRIDES...] [-m]   compose conf/ groups into RFT job(s), validate, submit, record under outputs/
                               (rftlab launch --help lists the config groups and their options)
  relaunch RUN_DIR             submit the byte-identical request recorded in RUN_DIR
  status [DIR]                 table of the runs in DIR (a run, a launch or a sweep; default: the latest launch),
                               refreshed from the backend
  wait [DIR]                   follow the runs in DIR until they end; record the final job and metrics
  cancel DIR|JOB_ID...         cancel running job(s)
  runs [OUTPUTS_DIR]           list recent runs and their states
  serve [OPTIONS]              run the local Fireworks-compatible backend (rftlab serve --help)
  chat MODEL PROMPT            answer PROMPT with a base model or a trained output model
"""


def launch(argv: list[str]) -> int:
    from rftlab import launch
    from rftlab.hydra_app import compose

    try:
        composed = compose(argv)
    except SystemExit as stop:  # Hydra's own errors (unknown group option, bad override) exit 1
        return stop.code if isinstance(stop.code, int) else 1
    return launch.run(composed)


def chat(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rftlab chat", description="Answer a prompt with a model.")
    parser.add_argument("model", help="tiny-arith, a local Hugging Face folder, or an output model name")
    parser.add_argument("prompt")
    args = parser.parse_args(argv)
    from rftlab.engine.chat import answer

    print(answer(args.model, args.prompt))
    return 0


# verb -> "module:function(argv) -> int"; imported on use so that `rftlab launch` stays light
COMMANDS: dict[str, str] = {
    "launch": "rftlab.cli:launch",
    "relaunch": "rftlab.verbs:relaunch",
    "status": "rftlab.verbs:status",
    "wait": "rftlab.verbs:wait",
    "cancel": "rftlab.verbs:cancel",
    "runs": "rftlab.verbs:runs",
    "serve": "rftlab.server.serve:main",
    "chat": "rftlab.cli:chat",
}


def _command(verb: str) -> Callable[[list[str]], int]:
    module, _, function = COMMANDS[verb].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rftlab",
        description="Launch, follow and serve reinforcement fine-tuning jobs over Fireworks' REST API.",
        epilog=VERBS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "verb", choices=sorted(COMMANDS), metavar="VERB", help="one of: " + ", ".join(COMMANDS)
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints the usage and the valid verbs, exits 2
    return _command(argv[0])(argv[1:])
