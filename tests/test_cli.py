"""The ``gwm`` command itself: help that imports nothing heavy (so it is fast), version, every option
documented with its default."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from gwm_cli.main import COMMANDS, command_parser, main, root_parser
from helpers.paths import REPO

HEAVY = ("torch", "onnxruntime", "cv2", "fastapi", "timm", "av", "rq", "uvicorn")


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python -m gwm_cli ARGS`` in a fresh interpreter that reports what it imported."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['gwm', *{list(args)!r}]\n"
            "try:\n    runpy.run_module('gwm_cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('IMPORTED', *sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)


def _imported(result: subprocess.CompletedProcess) -> set[str]:
    line = next(line for line in result.stderr.splitlines() if line.startswith("IMPORTED "))
    return set(line.split()[1:])


def test_root_help_imports_nothing_heavy() -> None:
    # what made `gwm --help` take seconds was importing torch and friends; the wall time itself is not
    # asserted (on a busy machine it measures the machine)
    result = _run("--help")
    assert "segment" in result.stdout and "COMMAND --help" in result.stdout
    assert not _imported(result) & set(HEAVY), _imported(result) & set(HEAVY)


def test_service_command_help_imports_no_torch_onnxruntime_or_fastapi() -> None:
    for command in ("segment", "serve", "worker"):
        result = _run(command, "--help")
        assert f"usage: gwm {command}" in result.stdout
        assert not _imported(result) & {"torch", "onnxruntime", "fastapi", "uvicorn", "rq", "timm"}, command


def test_version_comes_from_the_package_metadata(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gwm {version('gwm')}"


def test_root_lists_every_command_with_its_summary(capsys) -> None:
    with pytest.raises(SystemExit):
        root_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for command in COMMANDS:
        assert f"{command.name} {' '.join(command.summary.split())}" in text, command.name


@pytest.mark.parametrize("name", [command.name for command in COMMANDS])
def test_every_option_has_help_and_its_default(name: str) -> None:
    """Flags, positionals and required options (alone or one of a required pair) have no default to
    state; every other option does ("gwm-default.pt" does not count)."""
    parser = command_parser(name)
    assert parser.description, name
    one_of_required = {id(a) for group in parser._mutually_exclusive_groups if group.required
                       for a in group._group_actions}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"gwm {name} {label} has no help"
        states_no_default = (action.required or not action.option_strings or id(action) in one_of_required
                             or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)))
        if not states_no_default:
            assert re.search(r"(?<![\w-])default", action.help), f"gwm {name} {label}: help does not state the default"


def test_unknown_command_and_options_fail_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--bogus", "x.jpg"])
    assert exit_info.value.code == 2 and "usage: gwm segment" in capsys.readouterr().err


def test_train_and_flow_options_are_the_training_modules_own(capsys) -> None:
    """The move to lazy parsers kept the options: defaults still come from TrainConfig and training.flow."""
    from training.flow import DEFAULT_FLOW_METHOD
    from training.frames import DEFAULT_TRAIN_DATA
    from training.train import TrainConfig

    flow = command_parser("flow").parse_args([])
    assert (flow.method, flow.data) == (DEFAULT_FLOW_METHOD, list(DEFAULT_TRAIN_DATA))
    train = command_parser("train").parse_args(["--steps", "7", "--data", "a:train", "b"])
    assert (train.steps, train.data, train.lr) == (7, ["a:train", "b"], None)  # None: TrainConfig's default
    assert f"default {TrainConfig().lr}" in command_parser("train").format_help()
    json.dumps(vars(flow), default=str)  # plain values, as the handlers expect


def _readme_commands() -> list[tuple[str, bool]]:
    """Every ``gwm ...`` of README.md and docker/README.md: (text, whether it is a whole command line).

    Lines of bash code blocks are whole commands; inline code may only name a command and options.
    """
    commands = []
    for readme in (REPO / "README.md", REPO / "docker" / "README.md"):
        text = readme.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
                line = re.sub(r"^(\w+=\S+ )+", "", line.split("  #")[0].strip())  # env assignments, comments
                if line.startswith("gwm "):
                    commands.append((line, True))
        commands += [(inline, False) for inline in re.findall(r"`(gwm [a-z][^`<>]*)`", text)]
    return commands


def test_every_command_in_the_readmes_is_real() -> None:
    """Exact docs: a renamed or removed command or option in a README fails here."""
    import shlex

    commands = _readme_commands()
    assert sum(whole for _, whole in commands) > 10 and ("gwm segment photo.jpg", True) in commands
    names = {command.name for command in COMMANDS}
    for line, whole in commands:
        words = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
        assert words[0] in names, line
        parser = command_parser(words[0])
        if whole:
            try:
                parser.parse_args(words[1:])
            except SystemExit as exit_info:
                assert exit_info.code == 0, f"README command does not parse: {line}"  # --help exits 0
        else:
            for word in words[1:]:
                assert not word.startswith("-") or word in parser._option_string_actions, f"{line}: {word}"
