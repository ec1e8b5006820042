"""Nova's Dockerfiles and .dockerignore read as data, without a Docker engine.

Enough of the syntax for the files in this repository: comments, line
continuations, global `ARG` defaults in `FROM`, leading `--flag=value` options
and the JSON (exec) form. The pip commands of a `RUN` are split out, so tests
can ask which virtualenv installs which lock and which packages.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"--([\w-]+)(?:=(\S+))?\s+")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def flags(self) -> dict[str, str]:
        """The leading `--name=value` options (`COPY --from=build`)."""
        found: dict[str, str] = {}
        text = self.arguments + " "
        while match := FLAG.match(text):
            found[match.group(1)] = match.group(2) or ""
            text = text[match.end() :]
        return found

    def rest(self) -> str:
        """The arguments after the leading options."""
        text = self.arguments + " "
        while match := FLAG.match(text):
            text = text[match.end() :]
        return text.strip()

    def exec_form(self) -> list[str]:
        """The JSON array of CMD (or of HEALTHCHECK's `CMD [...]`)."""
        text = self.rest()
        if self.keyword == "HEALTHCHECK":
            keyword, _, text = text.partition(" ")
            assert keyword == "CMD", f"HEALTHCHECK {keyword}: not a CMD"
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form"
        return [str(item) for item in value]


@dataclass(frozen=True)
class PipCommand:
    """One `<venv>/bin/pip <subcommand> ...` (or `python -m pip`) of a RUN."""

    venv: str
    subcommand: str
    argv: tuple[str, ...]

    def option(self, name: str) -> list[str]:
        """Every value of `name` (`-r`), whether `-r x` or `-r=x`."""
        values = []
        for i, arg in enumerate(self.argv):
            if arg == name and i + 1 < len(self.argv):
                values.append(self.argv[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg.partition("=")[2])
        return values


@dataclass(frozen=True)
class Stage:
    base: str
    name: str
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every `ENV key=value` of the stage, later ones winning."""
        found: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                key, equals, value = word.partition("=")
                assert equals, f"ENV {instruction.arguments}: use the key=value form"
                found[key] = value
        return found

    def pip_commands(self) -> list[PipCommand]:
        commands = []
        for instruction in self.all("RUN"):
            for argv in shell_commands(instruction.arguments):
                if (
                    argv[:3]
                    and argv[0].endswith("/python")
                    and argv[1:3]
                    == [
                        "-m",
                        "pip",
                    ]
                ):
                    venv, argv = argv[0].removesuffix("/bin/python"), argv[3:]
                elif argv and argv[0].endswith("/pip"):
                    venv, argv = argv[0].removesuffix("/bin/pip"), argv[1:]
                else:
                    continue
                commands.append(PipCommand(venv, argv[0], tuple(argv[1:])))
        return commands


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: tuple[Stage, ...]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert found, f"{self.path}: no stage {name}"
        return found[0]

    def declared_args(self) -> set[str]:
        names = set(self.args)
        for stage in self.stages:
            names |= {i.arguments.partition("=")[0] for i in stage.all("ARG")}
        return names

    def built_packages(self) -> set[Path]:
        """The local directories whose wheels `pip wheel` builds, from the root."""
        found: set[Path] = set()
        for stage in self.stages:
            for command in stage.pip_commands():
                if command.subcommand == "wheel":
                    found |= {
                        (ROOT / arg).resolve()
                        for arg in command.argv
                        if arg.startswith("./")
                    }
        return found


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line, split at `&&`, `||`, `;` and `|`."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [argv for argv in commands if argv]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, continuations joined."""
    lines: list[str] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        lines.append(" ".join([*pending, stripped]))
        pending = []
    assert not pending, "the last instruction ends in a line continuation"
    return lines


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    for line in logical_lines(path.read_text()):
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.rest().split()
            image = VARIABLE.sub(lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            current = []
            stages.append(Stage(image, name, ()))
        elif current is None:
            assert instruction.keyword == "ARG", f"{path}: {line} before FROM"
            key, _, default = instruction.arguments.partition("=")
            args[key] = default
        else:
            current.append(instruction)
            stages[-1] = Stage(stages[-1].base, stages[-1].name, tuple(current))
    assert stages, f"{path}: no FROM"
    return Dockerfile(path, args, tuple(stages))


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            parts.append(pattern[i : end + 1])
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def in_build_context(relative: str, dockerignore: Path) -> bool:
    """Whether .dockerignore keeps `relative` (a path from the context root).

    Docker's rule: a pattern matches a path or any of its parent directories,
    and the last pattern that matches decides (`!` keeps).
    """
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        rules.append((keep, _ignore_regex(pattern)))
    parts = Path(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    kept = True
    for keep, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            kept = keep
    return kept
