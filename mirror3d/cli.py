"""The ``mirror3d`` command line: ``python -m mirror3d <command> [options]``.

Commands are registered lazily as ``name -> (module, one-line help)`` so that ``--help`` imports
no command module (and so no torch or ray). The module (or ``"module:object"``) provides::

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int

Config-backed commands call :func:`add_config_arguments` in ``add_arguments`` (this adds
``--config FILE`` and one ``--<dotted.key>`` option per config field, shown in ``--help`` with type
and default) and :func:`config_from_args` in ``run``. A command that takes free-form overrides
(like ``config show``) calls ``parser.set_defaults(overrides=[])``; arguments its parser does not
know are then appended to ``args.overrides`` in command-line order. Command parsers do not accept
abbreviated options.

Errors: ``ConfigError`` (exit 2), ``ValueError`` and ``FileNotFoundError`` (exit 1) raised by a
command print one line ``mirror3d <cmd>: error: <message>``; ``--debug`` prints the traceback
instead. ``--debug`` is reserved: config fields cannot be named ``debug`` at the top level.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import sys
import traceback
from typing import Any

from mirror3d.config import (
    CONFIG_CLASSES,
    ConfigError,
    config_fields,
    dump_yaml,
    format_value,
    get_config_class,
    load_config,
    parse_overrides,
    save_config,
)

__all__ = [
    "COMMANDS",
    "ConfigCommand",
    "add_config_arguments",
    "config_from_args",
    "main",
    "register_command",
]

COMMANDS: dict[str, tuple[str, str]] = {}

_CONFIG_PREFIX = "config:"  # argparse dest of a dotted config option: "config:render.image_size"
_CONFIG_EXTRA = "_mirror3d_config_extra"  # dotted overrides argparse left over (e.g. key=value forms)
_CONFIG_CLS = "_mirror3d_config_cls"  # attribute of a parser built by add_config_arguments


def register_command(name: str, module: str, help: str) -> None:
    """Register ``mirror3d <name>``, implemented in ``module`` (``"pkg.mod"`` or
    ``"pkg.mod:object"``); the module is imported only when the command runs."""
    if not name or name.startswith("-") or " " in name:
        raise ValueError(f"name: expected a command word, got {name!r}")
    COMMANDS[name] = (module, help)


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


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config resolved from ``args``: defaults < ``--config FILE`` < dotted options."""
    tokens = [
        f"--{dest[len(_CONFIG_PREFIX):]}={value}"
        for dest, value in vars(args).items()
        if dest.startswith(_CONFIG_PREFIX)
    ]
    tokens += list(getattr(args, _CONFIG_EXTRA, []))
    return load_config(cls, getattr(args, "config", None), tokens)


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
# The `config` command
# --------------------------------------------------------------------------------------------


class ConfigCommand:
    """``mirror3d config show NAME [overrides]`` / ``config dump NAME --out FILE [overrides]``:
    the resolved YAML of a registered config class (see ``mirror3d.config.CONFIG_CLASSES``)."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        names = ", ".join(sorted(CONFIG_CLASSES))
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
                "--key value, --key=value or key=value ('config show NAME' lists the keys).",
                formatter_class=_HelpFormatter,
            )
            p.add_argument("name", metavar="NAME", help=f"config name ({names})")
            p.add_argument("--config", metavar="FILE", default=None, help="YAML file to start from")
            if action == "dump":
                p.add_argument("--out", metavar="FILE", required=True, help="where to write the YAML")
            p.set_defaults(overrides=[])

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        cls = get_config_class(args.name)
        cfg = load_config(cls, args.config, args.overrides)
        if args.action == "show":
            sys.stdout.write(dump_yaml(cfg))
        else:
            path = save_config(cfg, args.out)
            print(f"wrote {path}")
        return 0


register_command("config", "mirror3d.cli:ConfigCommand", "show or write the resolved YAML of a named config")
register_command(
    "turntable",
    "mirror3d.render.turntable",
    "render a turntable of the template sphere (GIF + PNG sheet)",
)
register_command("synth", "mirror3d.data.synth.cli", "generate SynthPeople (clothed people: re-id trees + 3D ground truth)")
register_command("train-casl", "mirror3d.platform.casl_cli:TrainCaslCommand",
                 "train CASL (single-image textured mesh reconstruction) on Ray Train")
register_command("eval-casl", "mirror3d.models.casl.eval_cli:EvalCaslCommand",
                 "evaluate a CASL run: MaskIoU, SSIM, FD, SynthPeople 3D truth, pictures")
register_command("train-reid", "mirror3d.platform.reid_cli:TrainReidCommand",
                 "train OG-Net (point clouds) or the 2D baseline on Ray Train, then evaluate")
register_command("eval-reid", "mirror3d.platform.reid_cli:EvalReidCommand",
                 "evaluate a re-id run (CMC, mAP, ranked picture), also across datasets")
register_command("lift-flat", "mirror3d.platform.reid_cli:LiftFlatCommand",
                 "lift a re-id dataset to flat (x, y, 0) point-cloud shards")
register_command("lift", "mirror3d.lifting.pipeline:LiftCommand",
                 "lift a re-id dataset to point-cloud shards on Ray Data (flat | casl-visible[+bg])")
register_command("ablate-casl", "mirror3d.platform.casl_ablation:AblateCaslCommand",
                 "CASL ablations (full / No IM / No Prototype Loop / No Encoder Loop), one budget")
register_command("pipeline", "mirror3d.platform.pipeline:PipelineCommand",
                 "the main job: SynthPeople -> CASL -> lifting -> OG-Net + 2D baseline -> report.md")


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


class _CommandUnavailable(Exception):
    pass


def _load_command(name: str) -> Any:
    target, _ = COMMANDS[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise _CommandUnavailable(
                f"command {name!r} is not available: module {module_name} does not exist"
            ) from e
        raise _CommandUnavailable(f"command {name!r} cannot be loaded: {e}") from e
    except ImportError as e:
        raise _CommandUnavailable(f"command {name!r} cannot be loaded: {e}") from e
    obj = module
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            raise _CommandUnavailable(f"command {name!r}: {module_name} has no attribute {attr!r}")
    for fn in ("add_arguments", "run"):
        if not callable(getattr(obj, fn, None)):
            raise _CommandUnavailable(f"command {name!r}: {target} does not define {fn}()")
    return obj


def _top_parser() -> argparse.ArgumentParser:
    from mirror3d import __version__

    width = max((len(n) for n in COMMANDS), default=0)
    lines = "\n".join(f"  {n:<{width}}  {h}" for n, (_, h) in sorted(COMMANDS.items()))
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
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``mirror3d`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
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
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else f"; commands: {', '.join(sorted(COMMANDS))}"
        print(f"mirror3d: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    prog = f"mirror3d {name}"
    debug = top_args.debug or "--debug" in rest

    def fail(e: BaseException, code: int) -> int:
        if debug:
            traceback.print_exception(e)
        else:
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return code

    try:
        command = _load_command(name)
    except _CommandUnavailable as e:
        return fail(e, 1)

    parser = _Parser(prog=prog, description=COMMANDS[name][1], formatter_class=_HelpFormatter)
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
    except ConfigError as e:
        return fail(e, 2)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        return fail(e, 1)
    except RuntimeError as e:
        from mirror3d.platform.train import TrainingFailed

        if isinstance(e, TrainingFailed):
            return fail(e, 1)
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
