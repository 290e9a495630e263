"""`deq-lens`: one command for everything the library does (also `python -m deq_core`).

    deq-lens app [--models DIR] [streamlit options]
    deq-lens train | evaluate | faithfulness | robustness | audit ...   (the modules' own CLIs)
    deq-lens explain --model M --case ID [--json]
    deq-lens tune --model M [--cases N] [--json]
    deq-lens stability --model M [--cases N] [--starts K] [--json]
    deq-lens data generate --dataset inspection --n N --out DIR [--seed S]
    deq-lens batch --model M --cases FOLDER --out DIR [--engine local|ray] [--decisions CSV] [--reports]
    deq-lens card --model M --out DIR

Each subcommand hands the rest of the command line to the module's own ``main(argv)``,
so its options and output are exactly those of ``python -m deq_core.<module>``; only
the program name in its help reads ``deq-lens <subcommand>``. Modules are imported
when their subcommand runs, not before, so asking for help does not load them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROG = "deq-lens"
Main = Callable[[list[str]], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: where its ``main`` lives and one line for the overview."""

    help: str
    module: str | None = None  # "package.module:function"; None: handled here


COMMANDS: dict[str, Command] = {
    "app": Command("run the Streamlit app (streamlit run app/serve.py: app/main.py with its warm start)"),
    "train": Command("train a model folder (python -m deq_core.train)", "deq_core.train:main"),
    "evaluate": Command("evaluate a model folder on a split (python -m deq_core.evaluate)", "deq_core.evaluate:main"),
    "explain": Command("explain one case: decision, reliability, modality Shapley values",
                       "deq_core.explain.explanation:main"),  # fmt: skip
    "faithfulness": Command("faithfulness checks of the explanations (python -m deq_core.faithfulness)",
                            "deq_core.explain.faithfulness:main"),  # fmt: skip
    "robustness": Command("robustness sweep under corruptions (python -m deq_core.robustness)",
                          "deq_core.explain.robustness:main"),  # fmt: skip
    "tune": Command("solver tolerance sweep: flips, iterations, latency", "deq_core.explain.tuning:main"),
    "stability": Command("stability and uniqueness of each decision's fixed point (python -m deq_core.stability)",
                         "deq_core.explain.stability:main"),  # fmt: skip
    "data": Command("dataset tools: generate N cases as a dataset folder", "deq_core.data.generate:main"),
    "batch": Command("audit many decisions: batched records, Parquet + CSV, resumable (python -m deq_core.batch)",
                     "deq_core.batch.cli:main"),  # fmt: skip
    "card": Command("the model card from measured figures: Markdown (Hugging Face), HTML, PDF (python -m deq_core.card)",
                    "deq_core.card:main"),  # fmt: skip
    "edge": Command("ONNX export with a fixed solver budget: export, check", "deq_core.edge:main"),
    "audit": Command("decision reports and the audit log: report, verify, verify-log (python -m deq_core.audit)"),
}
AUDIT_MODULES = ("deq_core.audit.report", "deq_core.audit.cli")  # the first that has a main


def _parser() -> argparse.ArgumentParser:
    """The top-level parser: only for the overview help and for refusing unknown subcommands."""
    from deq_core import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="DEQ Fusion Lens: deep-equilibrium multimodal fusion models you can inspect.",
        epilog=f"'{PROG} <command> --help' shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="<command>", dest="command")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def _load(target: str) -> Main:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _audit_main() -> Main:
    """``deq_core.audit``'s command: in ``report`` today, in ``cli`` once the package is split."""
    for name in AUDIT_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        main = getattr(importlib.import_module(name), "main", None)
        if callable(main):
            return main
    raise ImportError(f"none of {', '.join(AUDIT_MODULES)} has a main()")


@contextlib.contextmanager
def _program_name(name: str) -> Iterator[None]:
    """While a module's ``main`` runs, its parser calls itself ``deq-lens <name>``.

    The modules name themselves ``python -m deq_core.<module>`` (their parsers are built
    inside ``main``); renaming here keeps every option and message as it is. Their
    subcommands (``audit report``) take the name from their parent parser.
    """
    original = argparse.ArgumentParser.__init__

    def init(self, *args, **kwargs):
        if str(kwargs.get("prog") or "").startswith("python -m deq_core"):
            kwargs["prog"] = f"{PROG} {name}"
        original(self, *args, **kwargs)

    argparse.ArgumentParser.__init__ = init
    try:
        yield
    finally:
        argparse.ArgumentParser.__init__ = original


# --------------------------------------------------------------------------- app


def app_script() -> Path:
    """``app/serve.py`` beside the ``deq_core`` package (the checkout, or site-packages when installed).

    It serves ``app/main.py`` with a warm start: the models load as the server starts, not at the first visit.
    A Streamlit without ``st.App`` (older than the one this checkout is tested with) runs ``app/main.py`` itself.
    """
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "app"
    spec = importlib.util.find_spec("streamlit")  # found, not imported: deq_core never imports streamlit
    warm = spec is not None and spec.origin is not None and (Path(spec.origin).parent / "starlette.py").is_file()
    return folder / ("serve.py" if warm else "main.py")


def app_command(argv: Sequence[str]) -> tuple[list[str], Path | None, dict[str, str]]:
    """The ``streamlit run`` command line, its working folder and its environment for ``deq-lens app``.

    ``--models DIR`` sets ``DEQ_LENS_MODELS`` (the folder the app lists models from);
    every other argument goes to ``streamlit run``. The command runs from the checkout
    when it has ``.streamlit/config.toml``, so the project's Streamlit settings apply as
    with ``streamlit run app/main.py`` from the repository root.
    """
    parser = argparse.ArgumentParser(
        prog=f"{PROG} app", allow_abbrev=False,
        description="Run the DEQ Fusion Lens app. Other options (e.g. --server.port 8502) go to 'streamlit run'.",
    )  # fmt: skip
    parser.add_argument("--models", type=Path, default=None, help="folder of model folders (sets DEQ_LENS_MODELS)")
    args, rest = parser.parse_known_args(list(argv))
    script = app_script()
    if not script.is_file():
        parser.error(f"the app is not installed beside deq_core: {script} is missing")
    env = dict(os.environ)
    if args.models is not None:
        env["DEQ_LENS_MODELS"] = str(args.models.expanduser().resolve())  # the app may run from another folder
    checkout = script.parents[1]
    cwd = checkout if (checkout / ".streamlit" / "config.toml").is_file() else None
    return [sys.executable, "-m", "streamlit", "run", str(script), *rest], cwd, env


def run_app(argv: Sequence[str]) -> int:
    command, cwd, env = app_command(argv)
    process = subprocess.Popen(command, cwd=cwd, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches streamlit too; let it shut down
        return process.wait()


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deq-lens`` with ``argv`` (default: the process's arguments); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        parser = _parser()
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        parser.parse_args(argv)  # --help and --version exit here; anything else is an error
        parser.error(f"unrecognised arguments: {' '.join(argv)}")
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _parser().error(f"unknown command {name!r} (choose from {', '.join(COMMANDS)})")
    if name == "app":
        return run_app(rest)
    command = COMMANDS[name]
    main_of = _audit_main() if name == "audit" else _load(command.module)
    with _program_name(name):
        status = main_of(rest)
    return 0 if status is None else int(status)


if __name__ == "__main__":
    raise SystemExit(main())
