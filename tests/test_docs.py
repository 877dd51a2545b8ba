"""Docs that cannot drift: every command in README.md and docs/*.md that runs one of the project's entry
points uses only flags that entry point's parser defines, every repository path a command names exists, and
every relative link resolves.

Commands are read from code blocks (fenced or indented, backslash continuations joined) and from inline code
spans that run a script. The parser of a script is captured by running it as `__main__` with
`ArgumentParser.parse_args` replaced by a function that raises with the parser, so nothing else runs.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import runpy
import shlex
import sys
import warnings
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

# Folders of the repository a command may name; anything under them must exist, except outputs.
REPO_DIRS = ("config/", "data/", "tests/", "docs/", "modules/", "bench/", "utils/", "web/", "datasets/",
             "evaluation/")
# Flags whose value is something the command creates, not something it reads.
OUTPUT_FLAGS = {"--output", "--out", "--result_video", "--log_dir", "--work_dir", "--dir", "--side_by_side",
                "--out_dir", "--frame_cache", "--save", "--result", "--screenshot"}
PLACEHOLDER = re.compile(r"[<>*${}\[\]|]|\bmy[-_ /]|\bmy_|/my-|\.\.\.|NEW|OLD|HOST|PATH|DIR\b")
SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "&"}


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str

    def where(self) -> str:
        return f"{os.path.relpath(self.page, ROOT)}:{self.line}: {self.text}"


def _code_lines(text: str) -> list[tuple[int, str]]:
    """Lines of shell code blocks (fenced without a language or with bash/sh/shell/console, or indented by 4),
    with backslash continuations joined, as (line number, line)."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    fence: str | None = None
    pending: tuple[int, str] | None = None
    prev_blank = True
    in_indented = False
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "sh")
            continue
        if fence is not None:
            code = raw if fence in ("sh", "bash", "shell", "console", "text") else None
        else:
            indented = raw.startswith("    ") and (prev_blank or in_indented)
            in_indented = indented or (in_indented and not stripped)
            code = raw if indented else None
            prev_blank = not stripped
        if code is None:
            continue
        code = code.strip()
        if code.startswith("$ "):
            code = code[2:]
        if pending is not None:
            pending = (pending[0], pending[1] + " " + code)
        else:
            pending = (number, code)
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    return out


def _inline_commands(text: str) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        for span in re.findall(r"`([^`]+)`", line):
            if re.search(r"(^|\s)(python\S*|torchrun)\s", span) or re.match(r"^\S+\.py\s+--", span):
                out.append((number, span))
    return out


def commands() -> list[Command]:
    found = []
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        for number, line in _code_lines(text) + _inline_commands(text):
            found.append(Command(page, number, line))
    return found


def _entry_point(tokens: list[str]) -> tuple[str, str, list[str]] | None:
    """(kind, target, args) of the project's script or module a command runs, or None."""
    for i, tok in enumerate(tokens):
        if tok == "-m" and i + 1 < len(tokens) and i > 0 and "python" in tokens[i - 1]:
            module = tokens[i + 1]
            path = os.path.join(ROOT, *module.split("."))
            if os.path.isdir(path) and os.path.exists(os.path.join(path, "__main__.py")) or os.path.exists(path + ".py"):
                return "module", module, tokens[i + 2:]
            return None
        if tok.endswith(".py") and os.path.exists(os.path.join(ROOT, tok)):
            return "script", tok, tokens[i + 1:]
    return None


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser captured")
        self.parser = parser


_PARSERS: dict[str, argparse.ArgumentParser | None] = {}


def parser_of(kind: str, target: str) -> argparse.ArgumentParser | None:
    """The argparse parser the entry point builds, captured at its parse_args call."""
    key = f"{kind}:{target}"
    if key in _PARSERS:
        return _PARSERS[key]

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv
    argparse.ArgumentParser.parse_args = capture
    argparse.ArgumentParser.parse_known_args = capture
    sys.argv = [target]
    parser = None
    try:
        if kind == "script":
            runpy.run_path(os.path.join(ROOT, target), run_name="__main__")
        else:
            with warnings.catch_warnings():  # re-running an already imported module as __main__
                warnings.simplefilter("ignore", RuntimeWarning)
                runpy.run_module(target, run_name="__main__", alter_sys=False)
    except _Captured as captured:
        parser = captured.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args, sys.argv = saved
    _PARSERS[key] = parser
    return parser


def _split(text: str) -> list[list[str]]:
    """Shell words of a command line, comments dropped, cut at pipes, ';', '&&' and redirections."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    parts, current = [], []
    for word in words:
        word = word.strip("[]")  # optional arguments written as [--flag VALUE]
        if not word:
            continue
        if word in SEPARATORS or word.startswith(">"):
            if current:
                parts.append(current)
            current = []
        else:
            current.append(word)
    if current:
        parts.append(current)
    return parts


def _invocations():
    """(command, its words, (kind, target, arguments)) of every documented run of an entry point."""
    for command in commands():
        for tokens in _split(command.text):
            entry = _entry_point(tokens)
            if entry is not None:
                yield command, tokens, entry


def _is_repo_path(value: str) -> bool:
    return value.startswith(REPO_DIRS) and not PLACEHOLDER.search(value)


def check_flags(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """Problems of one command's arguments against its parser: unknown flags, values outside `choices`."""
    problems = []
    options = parser._option_string_actions
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not re.match(r"^-\d", arg):
            flag, _, inline = arg.partition("=")
            action = options.get(flag)
            if action is None:
                problems.append(f"unknown flag {flag}")
            elif action.choices is not None and action.nargs in (None, "?"):
                value = inline or (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else None)
                if value is not None and not PLACEHOLDER.search(value) and value not in action.choices \
                        and not any(str(choice) == value for choice in action.choices):
                    problems.append(f"{flag} {value}: not one of {list(action.choices)}")
        i += 1
    return problems


def created_paths() -> set[str]:
    """Every path a documented command writes (the value of an output flag): later commands may read them."""
    created = set()
    for command in commands():
        for tokens in _split(command.text):
            for i, tok in enumerate(tokens):
                flag, eq, inline = tok.partition("=")
                if eq and flag in OUTPUT_FLAGS:
                    created.add(inline.rstrip("/"))
                elif tok in OUTPUT_FLAGS and i + 1 < len(tokens):
                    created.add(tokens[i + 1].rstrip("/"))
    return created


def check_paths(args: list[str], created: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Repository paths among one command's arguments that do not exist (outputs, and what other documented
    commands create, excepted)."""
    problems = []
    for i, arg in enumerate(args):
        flag, eq, inline = arg.partition("=")
        value = inline if eq and flag.startswith("-") else arg
        if i > 0 and args[i - 1] in OUTPUT_FLAGS or (eq and flag in OUTPUT_FLAGS):
            continue
        if any(value == c or value.startswith(c + "/") for c in created):
            continue
        if _is_repo_path(value) and not os.path.exists(os.path.join(ROOT, value)):
            problems.append(f"no such path in the repository: {value}")
    return problems


def test_pages_have_commands_for_every_main_entry_point():
    """The extraction finds the commands the docs are about (else the checks below would pass vacuously)."""
    targets = {target for _, _, (_, target, _) in _invocations()}
    for needed in ("animate.py", "run.py", "demo.py", "reconstruction.py", "app.py", "datasets.prepare",
                   "modules.download", "evaluation"):
        assert needed in targets, f"no command runs {needed} in README.md or docs/*.md"


def test_every_flag_exists_in_its_entry_points_parser():
    problems = []
    for command, _, (kind, target, args) in _invocations():
        parser = parser_of(kind, target)
        if parser is None:
            problems.append(f"{command.where()}\n    {target} builds no argparse parser")
            continue
        problems += [f"{command.where()}\n    {p}" for p in check_flags(parser, args)]
    assert not problems, "\n".join(problems)


def test_every_repository_path_a_command_names_exists():
    problems = []
    created = created_paths()
    for command, tokens, _ in _invocations():
        problems += [f"{command.where()}\n    {p}" for p in check_paths(tokens, created)]
    assert not problems, "\n".join(problems)


def test_every_relative_link_resolves():
    problems = []
    for page in PAGES + [os.path.join(ROOT, "ARCHITECTURE.md")]:
        text = open(page, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                problems.append(f"{os.path.relpath(page, ROOT)}: link to {target}, which does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, problem", [
    ("python animate.py --config config/vox-256.yaml --no_such_flag 3", "unknown flag --no_such_flag"),
    ("python animate.py --mode sideways", "--mode sideways: not one of"),
    (".venv/bin/python -m datasets.prepare --input x --outptu y", "unknown flag --outptu"),
    ("torchrun --nproc_per_node=2 run.py --config config/no-such.yaml", "no such path in the repository"),
])
def test_the_checks_catch_drift(text, problem):
    """The checker itself: a misspelt flag, a value outside its choices and a missing config are reported."""
    tokens = _split(text)[0]
    kind, target, args = _entry_point(tokens)
    found = check_flags(parser_of(kind, target), args) + check_paths(tokens)
    assert any(problem in p for p in found), found


def test_code_blocks_are_read_with_continuations_and_prompts():
    text = "Run:\n\n    $ python run.py --config a \\\n        --log_dir b   # comment\n\n```python\nx = 1\n```\n"
    assert _code_lines(text) == [(3, "python run.py --config a --log_dir b   # comment")]
    assert _split(_code_lines(text)[0][1]) == [["python", "run.py", "--config", "a", "--log_dir", "b"]]
