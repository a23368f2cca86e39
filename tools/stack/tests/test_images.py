"""The image builder's pure parts: Dockerfile and .dockerignore parsing, content keys, the build
order; the Kafka image's env → server.properties conversion; the api image's npm lock fetcher;
and the pod sandbox program, compiled and signalled for real. Real builds run in the e2e tier."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest

from cryptolake.stack import images
from cryptolake.stack.images import (
    Digests,
    FromDockerfile,
    ImageSpec,
    build_key,
    build_order,
    context_files,
    copied_sources,
    dockerfile_build_key,
    dockerignore_patterns,
    is_ignored,
)
from cryptolake.stack.kafka_container import (
    SINGLE_NODE_DEFAULTS,
    broker_command,
    env_key_to_property,
    format_command,
    render_properties,
    server_properties,
)

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
COPY pyproject.toml uv.lock ./
COPY common/pyproject.toml common/
COPY --chmod=755 app \\
    app
RUN echo hi
FROM ${BASE_IMAGE}
COPY --from=build /opt/app /opt/app
ADD ["web/site.json", "/srv/"]
USER 10001:10001
"""


def test_copied_sources_skips_other_stages_and_joins_continued_lines() -> None:
    assert copied_sources(DOCKERFILE) == [
        "pyproject.toml",
        "uv.lock",
        "common/pyproject.toml",
        "app",
        "web/site.json",
    ]


def test_the_committed_dockerfiles_copy_only_existing_paths() -> None:
    for spec in images.image_specs().values():
        if isinstance(spec.recipe, FromDockerfile):
            text = (images.REPO_DIR / spec.recipe.dockerfile).read_text()
            for source in copied_sources(text):
                assert (images.REPO_DIR / source).exists(), (spec.name, source)


def test_dockerignore_matching() -> None:
    patterns = dockerignore_patterns("# sources only\n**/.venv\n**/*.pyc\n.git\ntests\n**/tests\n")
    assert is_ignored(".venv/bin/python", patterns)
    assert is_ignored("api/.venv/lib/x.py", patterns)
    assert is_ignored("common/src/cryptolake/common/__pycache__/x.pyc", patterns)
    assert is_ignored("tests/test_x.py", patterns)
    assert is_ignored("api/tests/test_app.py", patterns)
    assert is_ignored(".git/HEAD", patterns)
    assert not is_ignored("api/src/cryptolake/api/app.py", patterns)
    assert not is_ignored("api/testsuite.py", patterns)
    assert not is_ignored(".github/x", patterns)
    exception = dockerignore_patterns("docs\n!docs/keep.md\n")
    assert is_ignored("docs/a.md", exception)
    assert not is_ignored("docs/keep.md", exception)


def test_content_key_is_order_independent_and_unambiguous() -> None:
    assert images.content_key([("a", "1"), ("b", "2")]) == images.content_key(
        [("b", "2"), ("a", "1")]
    )
    assert images.content_key([("ab", "c")]) != images.content_key([("a", "bc")])


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    for path, text in {
        "Dockerfile": "FROM ${BASE_IMAGE}\nCOPY app app\nCOPY pyproject.toml ./\n",
        "pyproject.toml": "[project]\n",
        "app/main.py": "print('hi')\n",
        "app/tests/test_main.py": "def test(): ...\n",
        "other/unrelated.py": "x = 1\n",
        ".dockerignore": "**/tests\n",
    }.items():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        (context / path).write_text(text)
    return context


def _key(context: Path, tmp_path: Path, base_key: str = "base-1") -> str:
    return dockerfile_build_key(
        context, "Dockerfile", Digests.load(tmp_path / "digests.json"), {"BASE_IMAGE": base_key}
    )


@pytest.mark.parametrize("git", [False, True], ids=["walk", "git"])
def test_build_key_follows_exactly_what_the_build_copies(tmp_path: Path, git: bool) -> None:
    context = _context(tmp_path)
    if git:
        if shutil.which("git") is None:
            pytest.skip("git not installed")
        subprocess.run(["git", "init", "-q", str(context)], check=True)
        subprocess.run(["git", "-C", str(context), "add", "-A"], check=True)
    files = context_files(context, ["app", "pyproject.toml"], dockerignore_patterns("**/tests"))
    assert files == ["app/main.py", "pyproject.toml"]
    key = _key(context, tmp_path)
    assert _key(context, tmp_path) == key  # stable

    (context / "other" / "unrelated.py").write_text("x = 2\n")
    (context / "app" / "tests" / "test_main.py").write_text("def test(): assert 1\n")
    assert _key(context, tmp_path) == key  # not copied, or .dockerignored

    (context / "app" / "main.py").write_text("print('hello')\n")
    changed_file = _key(context, tmp_path)
    assert changed_file != key

    (context / "app" / "new.py").write_text("y = 1\n")  # untracked files are sent too
    added_file = _key(context, tmp_path)
    assert added_file != changed_file

    (context / "app" / "new.py").chmod(0o755)
    assert _key(context, tmp_path) != added_file  # COPY keeps the mode

    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "USER 10001\n")
    changed_dockerfile = _key(context, tmp_path)
    assert changed_dockerfile not in {key, changed_file, added_file}
    assert _key(context, tmp_path, base_key="base-2") != changed_dockerfile


def test_build_key_covers_build_arguments_and_extras() -> None:
    key = build_key("FROM x\n", {"a": "1"}, image_args={"BASE_IMAGE": "k1"})
    assert key != build_key("FROM x\n", {"a": "1"}, image_args={"BASE_IMAGE": "k2"})
    assert key != build_key("FROM x\n", {"a": "2"}, image_args={"BASE_IMAGE": "k1"})
    assert key != build_key(
        "FROM x\n", {"a": "1"}, image_args={"BASE_IMAGE": "k1"}, extra={"o": "1"}
    )


def test_debootstrap_key_covers_packages_and_cas() -> None:
    recipe = images.Debootstrap(("python3", "ca-certificates"))
    key = images.debootstrap_key(recipe, {"proxy.crt": "d1"})
    assert key == images.debootstrap_key(
        images.Debootstrap(("ca-certificates", "python3")), {"proxy.crt": "d1"}
    )
    assert key != images.debootstrap_key(recipe, {"proxy.crt": "d2"})
    assert key != images.debootstrap_key(images.Debootstrap(("python3",)), {"proxy.crt": "d1"})
    assert key != images.debootstrap_key(
        images.Debootstrap(("python3", "ca-certificates"), suite="trixie"), {"proxy.crt": "d1"}
    )


def test_digests_are_remembered_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    digests = Digests.load(tmp_path / "digests.json")
    first = digests.of(path)
    assert first == hashlib.sha256(b"one").hexdigest()
    digests.save()
    again = Digests.load(tmp_path / "digests.json")
    assert again.of(path) == first and not again.changed
    path.write_bytes(b"two!")
    assert again.of(path) == hashlib.sha256(b"two!").hexdigest()


def test_build_order_puts_dependencies_first() -> None:
    specs = images.image_specs()
    order = build_order(["jobs", "producer", "kafka"], specs)
    assert order.index("base-java") < order.index("jobs")
    assert order.index("spark-jars") < order.index("jobs")
    assert order.index("base") < order.index("producer")
    assert order.index("base-java") < order.index("kafka")
    assert len(order) == len(set(order))
    with pytest.raises(images.ToolingMissing, match="no image 'nope'"):
        build_order(["nope"], specs)
    cyclic = {
        "a": ImageSpec("a", "r/a", FromDockerfile("a", "b")),
        "b": ImageSpec("b", "r/b", FromDockerfile("b", "a")),
    }
    with pytest.raises(ValueError, match="cycle"):
        build_order(["a"], cyclic)


def test_component_refs_are_the_operators_defaults() -> None:
    from cryptolake.operator.builders import Images  # noqa: PLC0415

    defaults = Images()
    for name in ("producer", "jobs", "api", "minio"):
        assert images.IMAGE_REFS[name] == getattr(defaults, name)
    assert images.IMAGE_REFS["kafka"].rsplit(":", 1)[1] == defaults.kafka.rsplit(":", 1)[1]
    assert set(images.CLUSTER_IMAGES) <= set(images.DEFAULT_IMAGES)
    assert all(ref.startswith("localhost/cryptolake/") for ref in images.image_refs().values())


def test_every_dockerfile_image_has_the_base_argument() -> None:
    for spec in images.image_specs().values():
        if isinstance(spec.recipe, FromDockerfile):
            text = (images.REPO_DIR / spec.recipe.dockerfile).read_text()
            assert "ARG BASE_IMAGE=" in text, spec.name
            for arg, _image in spec.recipe.image_args:
                assert f"ARG {arg}=" in text, (spec.name, arg)


# --- the Kafka image's run program ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "prop"),
    [
        ("LOG_DIRS", "log.dirs"),
        ("OFFSETS_TOPIC_REPLICATION_FACTOR", "offsets.topic.replication.factor"),
        ("LISTENER_SECURITY_PROTOCOL_MAP", "listener.security.protocol.map"),
        ("LISTENER_NAME_INTERNAL__SSL_CLIENT_AUTH", "listener.name.internal_ssl.client.auth"),
        ("SASL_MECHANISM___X", "sasl.mechanism-x"),
        ("NODE_ID", "node.id"),
    ],
)
def test_env_keys_become_properties_as_in_apache_kafka(key: str, prop: str) -> None:
    assert env_key_to_property(key) == prop


def test_server_properties_from_the_operators_environment() -> None:
    env = {
        "HOSTNAME": "p-broker-1",
        "CLUSTER_ID": "abc",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "0@a:9093,1@b:9093",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_HEAP_OPTS": "-Xms512m -Xmx512m",
        "KAFKA_OPTS": "-Dx=y",
    }
    props = server_properties(env)
    assert props == {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": "0@a:9093,1@b:9093",
        "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "log.dirs": "/var/lib/kafka/data",
    }
    text = render_properties(props)
    assert text.splitlines()[0] == "controller.quorum.voters=0@a:9093,1@b:9093"
    assert server_properties({"PATH": "/bin"}) == SINGLE_NODE_DEFAULTS
    assert render_properties({"a": "x\\y\nz"}) == "a=x\\\\y\\nz\n"


def test_broker_and_format_commands() -> None:
    props, log4j = Path("/opt/kafka/config/server.properties"), Path("/l.properties")
    command = broker_command(
        {"KAFKA_HEAP_OPTS": "-Xms512m -Xmx512m", "KAFKA_OPTS": "-Da=b"}, props, log4j
    )
    assert command[:3] == ["java", "-Xms512m", "-Xmx512m"]
    assert "-Da=b" in command and f"-Dlog4j2.configurationFile={log4j}" in command
    assert command[-4:] == ["-cp", "/opt/kafka/libs/*", "kafka.Kafka", str(props)]
    fmt = format_command({"JAVA_HOME": "/jdk"}, "-x", props, log4j)
    assert fmt[0] == "/jdk/bin/java"
    assert "--cluster-id=-x" in fmt and "--ignore-formatted" in fmt
    assert not [arg for arg in fmt if arg.startswith("--add-scram")]
    scram = format_command({"SCRAM_USERS": "admin=a1 jobs=j2"}, "-x", props, log4j)
    assert scram[-2:] == ["--add-scram=SCRAM-SHA-512=[name=admin,password=a1]",
                          "--add-scram=SCRAM-SHA-512=[name=jobs,password=j2]"]  # fmt: skip
    # Not a broker property: the KAFKA_* rendering never sees it.
    assert server_properties({"SCRAM_USERS": "admin=a1", "KAFKA_NODE_ID": "1"}) == {"node.id": "1"}


# --- the api image's npm lock fetcher -------------------------------------------------------


def _npm_ci() -> ModuleType:
    path = images.REPO_DIR / "api" / "web" / "npm_ci.py"
    spec = importlib.util.spec_from_file_location("npm_ci", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_npm_ci_urls_integrity_and_unpacking(tmp_path: Path) -> None:
    npm_ci = _npm_ci()
    assert (
        npm_ci.tarball_url("lightweight-charts", "5.2.1")
        == "https://registry.npmjs.org/lightweight-charts/-/lightweight-charts-5.2.1.tgz"
    )
    assert npm_ci.tarball_url("@s/p", "1.0.0").endswith("/@s/p/-/p-1.0.0.tgz")
    assert npm_ci.tarball_url("p", "1", "https://mirror/p.tgz") == "https://mirror/p.tgz"

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        data = b"chart()"
        info = tarfile.TarInfo("package/dist/chart.js")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    tgz = payload.getvalue()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    npm_ci.check_integrity(tgz, integrity)
    with pytest.raises(npm_ci.LockError, match="mismatch"):
        npm_ci.check_integrity(tgz + b"x", integrity)
    npm_ci.unpack(tgz, tmp_path / "node_modules" / "chart")
    assert (tmp_path / "node_modules" / "chart" / "dist" / "chart.js").read_bytes() == b"chart()"


def test_npm_ci_installs_what_the_api_expects_from_the_committed_lock() -> None:
    npm_ci = _npm_ci()
    lock = (images.REPO_DIR / "api" / "web" / "package-lock.json").read_text()
    import json  # noqa: PLC0415

    paths = [path for path, _entry in npm_ci.locked_packages(json.loads(lock), omit_dev=True)]
    # api/Dockerfile copies node_modules/lightweight-charts (its dist/ is the vendor dir's).
    assert "node_modules/lightweight-charts" in paths
    for _path, entry in npm_ci.locked_packages(json.loads(lock), omit_dev=True):
        assert entry["integrity"].startswith("sha512-")


# --- the pod sandbox ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pause_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    out = tmp_path_factory.mktemp("pause")
    images.compile_pause({"pause.c": images.IMAGES_DIR / "pause" / "pause.c"}, out)
    return out / "pause"


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_zero_on_a_stop_signal(pause_binary: Path, signo: signal.Signals) -> None:
    process = subprocess.Popen([str(pause_binary)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        assert process.poll() is None  # it waits
        began = time.monotonic()
        process.send_signal(signo)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - began < 1
    finally:
        process.kill()


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is ``pid``."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append((int(status.parent.name), fields["State"].split()[0]))
    return found


def test_pause_reaps_its_children(pause_binary: Path) -> None:
    # The shell's background child becomes pause's own once the shell execs it.
    process = subprocess.Popen(
        ["sh", "-c", f"sleep 0.3 & exec {pause_binary}"], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if process.poll() is None and not _children(process.pid):
                break
        assert process.poll() is None
        assert _children(process.pid) == []  # the sleep ended and left no zombie
        process.terminate()
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()


def test_pause_is_a_small_static_program(pause_binary: Path) -> None:
    assert pause_binary.stat().st_size < 2_000_000
    elf = pause_binary.read_bytes()
    assert elf[:5] == b"\x7fELF\x02"  # 64-bit ELF
    phoff, phentsize, phnum = (
        int.from_bytes(elf[0x20:0x28], "little"),
        int.from_bytes(elf[0x36:0x38], "little"),
        int.from_bytes(elf[0x38:0x3A], "little"),
    )
    types = [
        int.from_bytes(elf[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    ]
    assert 3 not in types  # no PT_INTERP: static, runs in an image with nothing else
    assert subprocess.run([str(pause_binary), "-v"], capture_output=True, check=True).stdout
