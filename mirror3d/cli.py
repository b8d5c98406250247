"""The ``mirror3d`` command line: ``python -m mirror3d <command> [options]`` — argparse glue over
the jobs of :mod:`mirror3d.jobs` (the top layer: nothing imports it).

Every job command takes the same options: positional arguments for the job's ``POSITIONAL``
keys, ``--preset NAME`` (a YAML file in ``configs/<job>/``; ``--smoke`` is ``--preset smoke``),
``--config FILE``, ``--storage LOCATION`` (every ``runs/...`` path of the config moved under a
folder or URI that every node of a cluster sees: :mod:`mirror3d.utils.storage`) and one
``--<dotted.key> VALUE`` per config field (shown in ``--help`` with type and default). Precedence: field defaults < preset < ``--config FILE`` < options. ``--help``
imports the job's module (its config class), never torch-heavy work; ``mirror3d --help`` imports
no job at all.

Errors: a user error (:mod:`mirror3d.utils.errors`: a ``UserError`` — ``ConfigError`` exits 2,
the others 1 — or ``ValueError``, ``FileNotFoundError``, ``FloatingPointError``, or an
``OSError`` of the environment such as a full disk) prints one line
``mirror3d <cmd>: error: <message>``, also when it was raised inside a Ray task, actor or Ray
Train worker (:func:`~mirror3d.utils.errors.unwrap_error`); ``--debug`` prints the traceback
(and the remote one) instead. Anything else is a bug and keeps its traceback. ``--debug`` is
reserved: config fields cannot be named ``debug`` at the top level.

The local-run environment (loopback Ray, no analytics: :mod:`mirror3d.utils.env`) is applied by
:func:`main` before any job module is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import traceback
from typing import Any

from mirror3d import __version__
from mirror3d.jobs import JOBS, job_module, presets, resolve_config
from mirror3d.utils.config import (
    ConfigError,
    config_fields,
    dump_yaml,
    format_value,
    load_config,
    parse_overrides,
    save_config,
)
from mirror3d.utils.env import apply_local_env
from mirror3d.utils.errors import is_user_error, one_line, unwrap_error
from mirror3d.utils.storage import relocate_config

__all__ = ["add_config_arguments", "config_from_args", "main"]

_CONFIG_PREFIX = "config:"  # argparse dest of a dotted config option: "config:render.image_size"
_CONFIG_EXTRA = "_mirror3d_config_extra"  # dotted overrides argparse left over (e.g. key=value forms)
_CONFIG_CLS = "_mirror3d_config_cls"  # attribute of a parser built by add_config_arguments

#: command aliases kept for users of earlier versions: old name -> job
ALIASES = {"casl": "train-casl", "reid": "train-reid"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser without prefix matching, whose errors are one line, and whose usage
    line leaves out the (possibly many) dotted config options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # "--step" must not silently mean "--steps"
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _usage_actions(self) -> list[argparse.Action]:
        acts = [a for a in self._actions if not a.dest.startswith(_CONFIG_PREFIX)]
        if len(acts) < len(self._actions):
            acts.append(argparse.Action(["--KEY"], dest="_usage_only", metavar="VALUE ..."))
        return acts

    def format_usage(self) -> str:
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._usage_actions(), self._mutually_exclusive_groups)
        return formatter.format_help()

    def format_help(self) -> str:
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._usage_actions(), self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        for group in self._action_groups:
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(group._group_actions)
            formatter.end_section()
        formatter.add_text(self.epilog)
        return formatter.format_help()


# --------------------------------------------------------------------------------------------
# Config-backed commands
# --------------------------------------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE`` and a ``--<dotted.key> VALUE`` option for every field of ``cls``.

    Values are parsed and checked by :func:`config_from_args` (so errors name the key and the
    expected type). Bool fields also take a bare ``--flag`` (true)."""
    group = parser.add_argument_group(
        f"config ({cls.__name__})",
        "precedence: field defaults < --config FILE < --KEY VALUE options\n"
        "(also --KEY=VALUE or KEY=VALUE; lists are comma-separated; 'none' clears an optional key)",
    )
    group.add_argument(
        "--config", metavar="FILE", default=None, help="YAML file with config values"
    )
    for f in config_fields(cls):
        default = "required" if f.default is dataclasses.MISSING else format_value(f.default)
        text = " ".join(x for x in (f.help, f"[{f.describe()}]" if f.describe() else "") if x)
        text = f"{text} (default: {default})".strip().replace("%", "%%")
        kwargs: dict[str, Any] = {
            "dest": _CONFIG_PREFIX + f.key,
            "metavar": f.metavar,
            "default": argparse.SUPPRESS,
            "help": text,
        }
        if f.is_bool:
            kwargs.update(nargs="?", const="true")
        group.add_argument(f"--{f.key}", **kwargs)
    setattr(parser, _CONFIG_CLS, cls)


def config_tokens(args: argparse.Namespace) -> list[str]:
    """The dotted overrides given in ``args``, as ``--key=value`` tokens in command-line order."""
    tokens = [
        f"--{dest[len(_CONFIG_PREFIX):]}={value}"
        for dest, value in vars(args).items()
        if dest.startswith(_CONFIG_PREFIX)
    ]
    return tokens + list(getattr(args, _CONFIG_EXTRA, []))


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config resolved from ``args`` without presets: defaults < ``--config FILE`` < options."""
    return load_config(cls, getattr(args, "config", None), config_tokens(args))


def _join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--key -1,2`` → ``--key=-1,2`` for config options (argparse would read ``-1,2`` as an
    option)."""
    if getattr(parser, _CONFIG_CLS, None) is None:
        return argv
    keys = {
        opt
        for a in parser._actions
        if a.dest.startswith(_CONFIG_PREFIX) and a.nargs is None
        for opt in a.option_strings
    }
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in keys and i + 1 < len(argv) and argv[i + 1].startswith("-") and not argv[i + 1].startswith("--"):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
        else:
            out.append(tok)
            i += 1
    return out


# --------------------------------------------------------------------------------------------
# The commands: `config` and one per job
# --------------------------------------------------------------------------------------------


def _job_name(name: str) -> str:
    return ALIASES.get(name, name)


class ConfigCommand:
    """``mirror3d config show JOB [--preset P] [overrides]`` / ``config dump JOB --out FILE``:
    the resolved YAML of a job's config (what the job would run with)."""

    help = "show or write the resolved YAML of a job's config"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        names = ", ".join(sorted(JOBS))
        sub = parser.add_subparsers(dest="action", metavar="{show,dump}", required=True)
        for action, help in (
            ("show", "print the resolved config as YAML"),
            ("dump", "write the resolved config to a YAML file"),
        ):
            p = sub.add_parser(
                action,
                help=help,
                description=help,
                epilog="Further arguments are dotted overrides of the config's keys:\n"
                "--key value, --key=value or key=value ('config show JOB' lists the keys).",
                formatter_class=_HelpFormatter,
            )
            p.add_argument("name", metavar="JOB", help=f"job name ({names})")
            p.add_argument("--preset", default="default", metavar="NAME",
                           help="preset in configs/JOB/ (default, smoke, paper, ...)")
            p.add_argument("--smoke", action="store_true", help="same as --preset smoke")
            p.add_argument("--config", metavar="FILE", default=None, help="YAML file on top of the preset")
            if action == "dump":
                p.add_argument("--out", metavar="FILE", required=True, help="where to write the YAML")
            p.set_defaults(overrides=[])

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        name = _job_name(args.name)
        preset = "smoke" if args.smoke else args.preset
        cfg = resolve_config(name, preset, args.config, args.overrides)
        if args.action == "show":
            sys.stdout.write(dump_yaml(cfg))
        else:
            path = save_config(cfg, args.out)
            print(f"wrote {path}")
        return 0


class JobCommand:
    """``mirror3d <job> [POSITIONAL ...] [--preset P | --smoke] [--config FILE] [--key VALUE ...]``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = job_module(name)
        self.help = JOBS[name][1]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cls = self.module.CONFIG
        for key in getattr(self.module, "POSITIONAL", ()):
            parser.add_argument(f"_pos_{key}", nargs="?", default=None, metavar=key.upper(),
                                help=f"same as --{key}")
        known = ", ".join(presets(self.name)) or "default"
        parser.add_argument("--preset", default="default", metavar="NAME",
                            help=f"preset in configs/{self.name}/ ({known})")
        parser.add_argument("--smoke", action="store_true", help="same as --preset smoke: a tiny run")
        parser.add_argument("--storage", default=None, metavar="LOCATION",
                            help="where run directories live instead of runs/: a folder every node "
                                 "sees, or a URI (s3://bucket/prefix, gs://..., any pyarrow "
                                 "filesystem); every runs/... path of the config moves under it")
        add_config_arguments(parser, cls)

    def config(self, args: argparse.Namespace) -> Any:
        tokens = config_tokens(args)
        for key in reversed(getattr(self.module, "POSITIONAL", ())):
            value = getattr(args, f"_pos_{key}", None)
            if value is None:
                continue
            if re.match(r"^[A-Za-z_][\w.]*=", value):  # a key=value override, not a positional
                tokens.append(value)
            else:
                tokens.insert(0, f"--{key}={value}")
        preset = "smoke" if args.smoke else args.preset
        cfg = resolve_config(self.name, preset, getattr(args, "config", None), tokens)
        if args.storage:
            cfg, _ = relocate_config(cfg, args.storage)
            at_storage = getattr(self.module, "at_storage", None)  # a job's own defaults
            if at_storage is not None:
                cfg = at_storage(cfg, args.storage)
        return cfg

    def run(self, args: argparse.Namespace) -> int:
        return self.module.run(self.config(args))


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _commands() -> dict[str, str]:
    """command name -> one-line help (no job module is imported)."""
    return {"config": ConfigCommand.help, **{n: h for n, (_, h) in JOBS.items()}}


def _load_command(name: str) -> Any:
    return ConfigCommand if name == "config" else JobCommand(name)


def _top_parser() -> argparse.ArgumentParser:
    commands = _commands()
    width = max((len(n) for n in commands), default=0)
    lines = "\n".join(f"  {n:<{width}}  {h}" for n, h in sorted(commands.items()))
    parser = _Parser(
        prog="mirror3d",
        usage="mirror3d [-h] [--version] [--debug] <command> [<args>]",
        description="mirror3d: a Ray-based experiment platform for people in 3D.\n\n"
        f"commands:\n{lines}",
        epilog="Run 'mirror3d <command> --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mirror3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1


def _one_line(e: BaseException) -> str:
    return one_line(e)


def main(argv: list[str] | None = None) -> int:
    """Run ``mirror3d`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    apply_local_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    split = next((i for i, t in enumerate(argv) if not t.startswith("-")), len(argv))
    top = _top_parser()
    try:
        top_args = top.parse_args(argv[:split])
    except SystemExit as e:
        return _exit_code(e)
    if split == len(argv):
        top.print_help(sys.stderr)
        return 2
    name, rest = argv[split], argv[split + 1 :]
    name = _job_name(name)
    commands = _commands()
    if name not in commands:
        close = difflib.get_close_matches(name, list(commands), n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else f"; commands: {', '.join(sorted(commands))}"
        print(f"mirror3d: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    prog = f"mirror3d {name}"
    debug = top_args.debug or "--debug" in rest
    if debug:
        os.environ.setdefault("MIRROR3D_VERBOSE", "1")  # Ray's own INFO logs on the console too

    def fail(e: BaseException, code: int) -> int:
        if debug:
            traceback.print_exception(e)
        else:
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return code

    try:
        command = _load_command(name)
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and e.name is not None \
            and JOBS[name][0].startswith(e.name)
        what = "is not available: module" if missing else "cannot be loaded:"
        return fail(ImportError(f"command {name!r} {what} {e.name if missing else e}"), 1)

    parser = _Parser(prog=prog, description=commands[name], formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    command.add_arguments(parser)
    try:
        args, extra = parser.parse_known_args(_join_dash_values(parser, rest))
    except SystemExit as e:
        return _exit_code(e)
    extra = [t for t in extra if t != "--debug"]
    if extra:
        cls = getattr(parser, _CONFIG_CLS, None)
        if isinstance(getattr(args, "overrides", None), list):
            args.overrides = args.overrides + extra
        elif cls is not None:
            try:
                parse_overrides(cls, extra)  # unknown keys: ConfigError with suggestions
            except ConfigError as e:
                return fail(e, 2)
            setattr(args, _CONFIG_EXTRA, extra)
        else:
            print(f"{prog}: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
    try:
        return int(command.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        error = unwrap_error(e)  # out of Ray's wrappers (a task's, an actor's, a worker's)
        if not is_user_error(error):
            raise  # a bug: its traceback
        if debug and error is not e:
            traceback.print_exception(e)
        if debug and getattr(error, "remote_traceback", ""):
            print(f"the remote traceback:\n{error.remote_traceback}", file=sys.stderr)
        return fail(error, 2 if isinstance(error, ConfigError) else 1)
