"""Every documented form works (team rule): each flag ``podrun --help`` offers, and each ``podrun``, ``make`` and
``dagster`` form README.md shows, is run by some test.

The commands and flags come from podrun's click tree itself (walked), so a new one fails
``test_every_podrun_command_and_flag_is_run_by_a_test`` until a test passes it. The check is static: a test
"runs" a form when one podrun invocation in a test file other than this one holds the command's words first,
then the flag. An invocation is a call or a list literal (``podrun("fetch", "--limit", "2")``, ``[PODRUN,
"fetch", "--limit", "2"]``, ``runner.invoke(main, ["report", "--out", p])``), or a call of a wrapper such as
``start_fetch(env, "--limit", "2")`` defined as ``[PODRUN, "fetch", *args]``. README's forms are checked the
same way: the command and every flag the form shows outside ``[...]``, in one invocation (a bracketed flag is an
option of the form, which the per-flag check covers). ``--help`` and ``-h`` are run here, on every command.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from podinsight_dagster.cli import main

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
README = ROOT / "README.md"
THIS = Path(__file__).resolve()
HELP = ("-h", "--help")

# Forms that no test runs, each with why it cannot be; keep this short: (command words, flag, or None for a
# README form of that command) -> why. Empty: every podrun flag and README form runs in some test. (`make test`
# cannot run inside the suite it runs: MAKE_FORMS below checks its recipe instead.)
NOT_RUN_IN_TESTS: dict[tuple[tuple[str, ...], str | None], str] = {
}


def podrun_commands(group: click.Group = main, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every command podrun offers, by its words (``("feeds", "add")``), groups included."""
    found: dict[tuple[str, ...], click.Command] = {path: group}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(podrun_commands(command, (*path, name)))
        else:
            found[(*path, name)] = command
    return found


def command_flags(command: click.Command) -> set[str]:
    """The option strings of a command (``--json``, ``--no-hybrid``), its help option left out."""
    return {flag for p in command.params if isinstance(p, click.Option)
            for flag in (*p.opts, *p.secondary_opts) if flag not in HELP}


def documented_flags() -> list[tuple[tuple[str, ...], str]]:
    return sorted((path, flag) for path, command in podrun_commands().items() for flag in command_flags(command))


# ---------------------------------------------------------------------------
# podrun invocations in the test files, read statically
# ---------------------------------------------------------------------------
def _words(nodes) -> list[str]:
    """The string constants among argument or element nodes, in order (a starred literal list inlined)."""
    words = []
    for node in nodes:
        if isinstance(node, ast.Starred) and isinstance(node.value, (ast.List, ast.Tuple)):
            words.extend(_words(node.value.elts))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.append(node.value)
    return words


def _split_flags(words: list[str]) -> list[str]:
    """``--out=report.html`` is ``--out`` too (click takes both)."""
    return [w.split("=", 1)[0] if w.startswith("--") and "=" in w else w for w in words]


@cache
def _command_paths() -> tuple[tuple[str, ...], ...]:
    return tuple(p for p in podrun_commands() if p)


def _command_at_start(words: list[str]) -> tuple[str, ...] | None:
    """The longest podrun command whose words begin ``words`` (after ``-m podinsight_dagster.cli``)."""
    if "podinsight_dagster.cli" in words:
        words = words[words.index("podinsight_dagster.cli") + 1:]
    paths = [p for p in _command_paths() if tuple(words[:len(p)]) == p]
    return max(paths, key=len) if paths else None


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _wrappers(tree: ast.AST) -> dict[str, tuple[tuple[str, ...], list[str]]]:
    """Functions taking ``*args`` that run one podrun command with them: name -> (command, its own words)."""
    found = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.args.vararg is None:
            continue
        vararg = fn.args.vararg.arg
        for node in ast.walk(fn):
            elts = node.elts if isinstance(node, (ast.List, ast.Tuple)) else None
            if elts and any(isinstance(e, ast.Starred) and isinstance(e.value, ast.Name) and e.value.id == vararg
                            for e in elts):
                words = _words(elts)
                path = _command_at_start(words)
                if path:
                    found[fn.name] = (path, words)
    return found


@cache
def _test_files() -> tuple[Path, ...]:
    return tuple(p for p in sorted(TESTS.rglob("*.py")) if p.resolve() != THIS)


@cache
def podrun_invocations() -> tuple[tuple[tuple[str, ...], frozenset[str], str], ...]:
    """Every podrun invocation in the tests: (command words, the words after them, file)."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _test_files()}
    shared = {}  # wrappers in tests/support/ are imported by other files
    for path, tree in trees.items():
        if path.parent.name == "support":
            shared.update(_wrappers(tree))
    found = []
    for path, tree in trees.items():
        wrappers = {**shared, **_wrappers(tree)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                candidates = [_words(node.args)]
                wrapped = wrappers.get(_callee(node))
                if wrapped:
                    candidates.append([*wrapped[1], *_words(node.args)])
            elif isinstance(node, (ast.List, ast.Tuple)):
                candidates = [_words(node.elts)]
            else:
                continue
            for words in candidates:
                words = _split_flags(words)
                command = _command_at_start(words)
                if command:
                    found.append((command, frozenset(words), str(path.relative_to(ROOT))))
    return tuple(found)


def runs(command: tuple[str, ...], flags: set[str] | frozenset[str]) -> list[str]:
    """The test files with one invocation of ``command`` (``()``: any command) passing every one of ``flags``."""
    return sorted({f for c, words, f in podrun_invocations() if command in (c, ()) and set(flags) <= words})


# ---------------------------------------------------------------------------
# README's forms
# ---------------------------------------------------------------------------
def readme_code_lines(doc: Path = README) -> list[str]:
    """The lines of README.md's (or ``doc``'s) fenced code blocks, a shell prompt ``$ `` taken off."""
    lines, inside = [], False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line[2:] if line.startswith("$ ") else line)
    return lines


def _required_flags(words: list[str]) -> set[str]:
    """The flags among ``words`` outside ``[...]`` (those in brackets are the form's options)."""
    required, depth = set(), 0
    for word in words:
        depth += word.count("[")
        if depth == 0 and word.startswith("-"):
            required.add(word.split("=", 1)[0])
        depth -= word.count("]")
    return required


def readme_podrun_texts(doc: Path = README) -> list[str]:
    """README's podrun forms as written: its code blocks' ``podrun ...`` lines (comments off), its `podrun ...`."""
    texts = [line.split("  #")[0].strip() for line in readme_code_lines(doc) if line.startswith("podrun ")]
    return texts + re.findall(r"`(podrun [^`]*)`", doc.read_text())


def readme_podrun_forms() -> list[tuple[str, tuple[str, ...], set[str]]]:
    """Each ``podrun ...`` line of README's code blocks and each `podrun ...` in its text: (the form, its
    command, the flags it shows outside [...]). A text form naming a flag but no command (the settings table's
    "`podrun --dagster-url`") has the command ``()``: the flag passed to any command."""
    forms = []
    for text in readme_podrun_texts():
        words = shlex.split(text, comments=True)[1:]
        command = _command_at_start(words) or ()
        assert command or words[0].startswith("-"), f"README shows a podrun command that does not exist: {text}"
        forms.append((text, command, _required_flags(words[len(command):])))
    return forms


# `make X` as README shows it: the command its recipe runs, and the test that runs that command.
MAKE_FORMS = {
    "demo": (".venv/bin/podrun demo", "tests/test_demo_e2e.py runs `podrun demo` (with --model tiny.en)"),
    "ui": (".venv/bin/dagster dev -w workspace.yaml", "tests/support/dagster_dev.py starts `dagster dev -w "
                                                        "workspace.yaml` for the UI and --dagster-url tests"),
    # `make test` runs this suite: a test cannot run it (it would run itself); its recipe is checked.
    "test": (".venv/bin/python -m pytest", "the suite itself"),
}


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------
def test_the_static_reading_finds_invocations():
    """The reader itself: it sees the three ways tests run podrun (else every check below would be vacuous)."""
    assert runs(("fetch",), {"--limit", "--dry-run"})  # podrun("fetch", "--limit", ..., "--dry-run")
    assert runs(("report",), {"--out"})  # runner.invoke(main, ["report", "--out", ...])
    assert runs(("search",), {"--meaning", "--json"})  # def search(*args): [..., "search", *args, "--json"]
    assert not runs(("fetch",), {"--no-such-flag"})


def test_every_podrun_command_and_flag_is_run_by_a_test():
    commands = [c for c, cmd in podrun_commands().items() if not isinstance(cmd, click.Group)]
    missing = [f"podrun {' '.join(c)}" for c in commands if not runs(c, set())]
    missing += [f"podrun {' '.join(c)} {flag}" for c, flag in documented_flags()
                if not runs(c, {flag}) and (c, flag) not in NOT_RUN_IN_TESTS]
    assert not missing, "commands and flags no test runs (add a test that asserts what each does): " + ", ".join(
        missing)


def test_every_readme_podrun_form_is_run_by_a_test():
    forms = readme_podrun_forms()
    assert len(forms) >= 40  # README's podrun block, the archive's real output, the forms in its text
    missing = [line for line, command, required in forms
               if not runs(command, required) and (command, None) not in NOT_RUN_IN_TESTS]
    assert not missing, "README forms no test runs: " + "; ".join(missing)


@pytest.mark.parametrize("doc", [README, ROOT / "RUNBOOK.md"], ids=lambda p: p.name)
def test_every_flag_readme_shows_exists(doc):
    """A form's flags, in brackets or not, are its command's (a renamed flag leaves no stale form): README's, and
    the run-book's (RUNBOOK.md: its forms combine flags the tests run one by one, e.g. --dagster-url with
    --manifest-s3, so only this check is made there)."""
    commands = podrun_commands()
    every = {flag for command in commands.values() for flag in command_flags(command)} | set(HELP)
    for text in readme_podrun_texts(doc):
        words = shlex.split(text, comments=True)[1:]
        command = _command_at_start(words) or ()
        assert command or words[0].startswith("-"), f"{doc.name} shows a podrun command that does not exist: {text}"
        known = command_flags(commands[command]) | set(HELP) if command else every
        shown = {w.strip("[]").split("=", 1)[0] for w in words if w.strip("[]").startswith("-")}
        assert shown <= known, f"{doc.name}'s {text!r}: {sorted(shown - known)} not flags of podrun {' '.join(command)}"


def test_the_allow_list_names_only_what_exists():
    """An allowed gap that no longer exists (a flag renamed or removed) goes from the list."""
    commands = podrun_commands()
    for (command, flag), why in NOT_RUN_IN_TESTS.items():
        assert command in commands and (flag is None or flag in command_flags(commands[command])), (command, flag)
        assert why.strip()


@pytest.mark.parametrize("command", sorted(podrun_commands()), ids=lambda c: " ".join(c) or "podrun")
def test_help_lists_every_flag(command):
    """``--help`` and ``-h`` on every command: exit 0, usage naming the command, each of its flags listed."""
    cmd = podrun_commands()[command]
    for help_flag in HELP:
        result = CliRunner().invoke(main, [*command, help_flag], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: main {' '.join(command)}".rstrip()), result.output
        for flag in command_flags(cmd):
            assert flag in result.output, (command, flag)
        if isinstance(cmd, click.Group):
            assert all(name in result.output for name in cmd.commands), result.output


def readme_make_targets() -> list[str]:
    return sorted({line.split()[1] for line in readme_code_lines() + re.findall(r"`(make [^`]*)`", README.read_text())
                   if line.startswith("make ")})


def test_every_readme_make_form_runs_what_the_tests_run():
    """`make demo`, `make ui`, `make test`: each recipe runs the command a test runs (``make -n``: prints, runs
    nothing); a make form README gains must be added to MAKE_FORMS with the test that covers it."""
    assert readme_make_targets() == sorted(MAKE_FORMS)
    for target, (command, _covered_by) in MAKE_FORMS.items():
        plan = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        assert command in plan.stdout, (target, plan.stdout[-2000:])


def test_every_readme_dagster_line_is_in_the_block_a_test_runs():
    """README's `dagster ...` lines are the range block tests/test_dagster_cli_range.py runs with bash, as it is."""
    from tests.test_dagster_cli_range import readme_range_block

    block = readme_range_block().splitlines()
    lines = [line for line in readme_code_lines() if line.startswith("dagster ")]
    assert lines and all(line in block for line in lines), lines
