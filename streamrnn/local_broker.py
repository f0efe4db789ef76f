"""A real single-node Apache Kafka broker (KRaft) for development, tests, CI and the demo.

The broker's jars come from Maven Central through ``deploy/local-kafka/pom.xml``
(``mvn dependency:copy-dependencies``, once; later runs reuse ``deploy/local-kafka/libs``
and Maven's own cache). :func:`start_broker` writes a ``server.properties`` for 127.0.0.1 on
two free ports, formats the storage, starts the JVM in its own session, waits until the
client port answers a metadata request, and records the PID and the bootstrap address in the
work directory; :func:`stop_broker` stops it by that PID (SIGTERM, then SIGKILL), and
:func:`restart_broker` starts it again on the same ports and the same data (a broker outage,
as the tests need it).

Used by ``streamrnn broker start|stop|status``, ``streamrnn demo`` and the test fixture.
Knows nothing of torch.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BrokerError",
    "LocalBroker",
    "default_home",
    "ensure_jars",
    "new_cluster_id",
    "restart_broker",
    "running_broker",
    "start_broker",
    "stop_broker",
]

#: Environment variable naming the folder that holds ``pom.xml`` (default: the checkout's
#: ``deploy/local-kafka``).
HOME_ENV_VAR = "STREAMRNN_LOCAL_KAFKA_HOME"

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=2097152
auto.create.topics.enable=false
message.max.bytes=10485760
"""

_LOG4J2_YAML = """\
Configuration:
  Appenders:
    File:
      name: FILE
      fileName: "${sys:kafka.logs.dir}/server.log"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
"""


class BrokerError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True, slots=True)
class LocalBroker:
    """A running local broker: where clients connect and which process to stop."""

    bootstrap_servers: str
    pid: int
    workdir: Path


def default_home() -> Path:
    """The folder with ``pom.xml``: ``$STREAMRNN_LOCAL_KAFKA_HOME`` or the checkout's."""
    from_env = os.environ.get(HOME_ENV_VAR)
    if from_env:
        return Path(from_env)
    return Path(__file__).resolve().parent.parent / "deploy" / "local-kafka"


def ensure_jars(home: Path | None = None, timeout_s: float = 900.0) -> Path:
    """The broker's classpath folder, resolving it with Maven the first time only."""
    home = home or default_home()
    pom = home / "pom.xml"
    libs = home / "libs"
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if not pom.is_file():
        raise BrokerError(f"{pom} not found; set {HOME_ENV_VAR} to the folder holding it")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not installed; it resolves the broker's jars")
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise BrokerError(
            f"mvn failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    partial.rename(libs)
    return libs


def running_broker(workdir: Path) -> LocalBroker | None:
    """The broker recorded in ``workdir`` if its process is still alive."""
    pid_file, bootstrap_file = workdir / "broker.pid", workdir / "bootstrap"
    if not pid_file.is_file() or not bootstrap_file.is_file():
        return None
    pid = int(pid_file.read_text().strip())
    if not _alive(pid):
        return None
    return LocalBroker(bootstrap_file.read_text().strip(), pid, workdir)


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid()``, it never starts with ``-``: an id such as
    ``-Xy...`` would be read as an option by ``kafka-storage format`` (one id in 64 did,
    and CI failed on one).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_broker(
    workdir: Path, home: Path | None = None, heap_mb: int = 1024, timeout_s: float = 90.0
) -> LocalBroker:
    """Start a fresh broker whose data, logs and PID live in ``workdir``.

    Returns the already running broker of ``workdir`` if there is one.
    """
    existing = running_broker(workdir)
    if existing is not None:
        return existing
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not installed (Kafka 4 needs Java 17 or later)")
    libs = ensure_jars(home)
    shutil.rmtree(workdir / "data", ignore_errors=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    port, controller_port = _free_port(), _free_port()
    properties = workdir / "server.properties"
    properties.write_text(
        _SERVER_PROPERTIES.format(
            port=port, controller_port=controller_port, data_dir=workdir / "data"
        )
    )
    log4j = workdir / "log4j2.yaml"
    log4j.write_text(_LOG4J2_YAML)
    classpath = f"{libs}/*"
    cluster_id = new_cluster_id()
    formatted = subprocess.run(
        [
            java,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(properties),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if formatted.returncode != 0:
        raise BrokerError(f"formatting the storage failed: {formatted.stdout}{formatted.stderr}")
    (workdir / "broker.out").write_bytes(b"")
    return _launch(workdir, java, classpath, f"127.0.0.1:{port}", heap_mb, timeout_s)


def restart_broker(
    workdir: Path, home: Path | None = None, heap_mb: int = 1024, timeout_s: float = 90.0
) -> LocalBroker:
    """Start the broker of ``workdir`` again after :func:`stop_broker`: same ports, same
    cluster and data (topics, messages, committed offsets), nothing formatted.

    Returns the already running broker of ``workdir`` if there is one.
    """
    existing = running_broker(workdir)
    if existing is not None:
        return existing
    properties, bootstrap_file = workdir / "server.properties", workdir / "bootstrap"
    if not properties.is_file() or not bootstrap_file.is_file() or not (workdir / "data").is_dir():
        raise BrokerError(f"no broker was started in {workdir}; use start_broker")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not installed (Kafka 4 needs Java 17 or later)")
    libs = ensure_jars(home)
    bootstrap = bootstrap_file.read_text().strip()
    return _launch(workdir, java, f"{libs}/*", bootstrap, heap_mb, timeout_s)


def _launch(
    workdir: Path, java: str, classpath: str, bootstrap: str, heap_mb: int, timeout_s: float
) -> LocalBroker:
    """Start the JVM on ``workdir``'s properties and storage; wait until it serves clients."""
    properties, log4j = workdir / "server.properties", workdir / "log4j2.yaml"
    # Appended, so a restarted broker's output follows the first one's.
    out = (workdir / "broker.out").open("ab")
    proc = subprocess.Popen(
        [
            java,
            # Kafka's own JVM settings (kafka-run-class.sh, KAFKA_JVM_PERFORMANCE_OPTS): G1
            # aiming at 20 ms pauses. With G1's default 200 ms goal, young collections under
            # the latency benchmark paused the broker ~40 ms several times a minute.
            f"-Xms{heap_mb}m",
            f"-Xmx{heap_mb}m",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            # and its GC log (kafka-run-class.sh, KAFKA_GC_LOG_OPTS): pauses by wall-clock
            # time, to match against a client's latency
            f"-Xlog:gc*:file={workdir / 'logs' / 'kafkaServer-gc.log'}:time,tags"
            ":filecount=10,filesize=100M",
            f"-Dkafka.logs.dir={workdir / 'logs'}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    (workdir / "broker.pid").write_text(str(proc.pid))
    (workdir / "bootstrap").write_text(bootstrap)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(
                f"broker exited with {proc.returncode} during start-up: "
                f"{_tail(workdir / 'broker.out')}{_tail(workdir / 'logs' / 'server.log')}"
            )
        if _accepts_clients(bootstrap):
            return LocalBroker(bootstrap, proc.pid, workdir)
        time.sleep(0.25)
    stop_broker(workdir)
    raise BrokerError(f"broker did not accept clients within {timeout_s:.0f} s")


def stop_broker(workdir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the broker recorded in ``workdir``; True if one was running."""
    pid_file = workdir / "broker.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text().strip())
    was_running = _alive(pid)
    if was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return was_running


def _accepts_clients(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return False
    # The port opens once the broker is unfenced; confirm with a real metadata request.
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    except Exception:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) is not alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
