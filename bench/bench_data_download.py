"""Concurrent download vs a sequential get_object loop, from a moto S3 server in its own process.

    .venv/bin/python -m bench.bench_data_download --objects 2000

The bucket holds `objects` files in ABID layout (half metadata, half small JPEG-sized blobs).
Both sides write every object to disk; the concurrent side is `data_tools`' own downloader
(resumable: .part files, size checks, retries). Target: >= 3x the sequential loop.

Against a local moto server the work is CPU-bound: moto spends a few ms of CPU per GET in one
GIL-bound process, and on a 2-core machine the client competes with it for the CPU, which caps
any client at well under 3x. The script prints that ceiling (server CPU per request, measured).
Real S3 is latency-bound (first byte after ~10-30 ms); `--latency-ms` adds that wait to every
request of BOTH sides (a sleep in botocore's before-send hook, which, like a network wait, holds
no CPU) to show what concurrency buys against a real endpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import urllib3

from bench import OUT
from data_tools.download import plan_download, run_transfers
from data_tools.s3 import S3Location, make_s3_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib3.request("GET", url + "/moto-api/", timeout=0.5)
            return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def fill_bucket(loc: S3Location, objects: int, image_bytes: int) -> None:
    client = make_s3_client(max_pool=32)
    client.create_bucket(Bucket=loc.bucket)
    blob = os.urandom(image_bytes)
    meta = b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}'

    def put(i: int) -> None:
        client.put_object(Bucket=loc.bucket, Key=loc.key(f"metadata/{i:05d}.json"), Body=meta)
        client.put_object(Bucket=loc.bucket, Key=loc.key(f"bin-images/{i:05d}.jpg"), Body=blob)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(1, objects // 2 + 1)))


def add_latency(client, seconds: float) -> None:
    if seconds > 0:
        client.meta.events.register("before-send.s3", lambda **_: time.sleep(seconds))


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def sequential(loc: S3Location, keys: list[str], out: Path, latency: float) -> None:
    client = boto3.client("s3")
    add_latency(client, latency)
    for key in keys:
        dest = out / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_object(Bucket=loc.bucket, Key=key)["Body"].read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--image-bytes", type=int, default=48_000, help="size of each image object (ABID: 16-194 KB)")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated network latency per request")
    parser.add_argument("--workdir", type=Path, default=OUT / "download")
    args = parser.parse_args()

    moto, url = start_moto()
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        loc = S3Location("bench-abid", "")
        fill_bucket(loc, args.objects, args.image_bytes)
        client = make_s3_client(max_pool=args.workers)
        shutil.rmtree(args.workdir, ignore_errors=True)
        transfers = plan_download(client, loc, args.workdir / "concurrent")
        keys = [t.key for t in transfers]
        add_latency(client, args.latency_ms / 1000)

        cpu0, start = server_cpu_seconds(moto.pid), time.perf_counter()
        sequential(loc, keys, args.workdir / "sequential", args.latency_ms / 1000)
        seq, seq_server_cpu = time.perf_counter() - start, server_cpu_seconds(moto.pid) - cpu0

        start = time.perf_counter()
        report = run_transfers(client, loc.bucket, transfers, workers=args.workers, progress=False)
        conc = time.perf_counter() - start
        assert report.done == len(keys) and not report.failed, report
    finally:
        moto.terminate()
        moto.wait()
    mb = report.bytes / 1e6
    per_get = seq_server_cpu / len(keys)
    print(f"objects:             {len(keys)} ({mb:.1f} MB), simulated latency {args.latency_ms:g} ms/request")
    print(f"moto server CPU:     {per_get * 1000:.2f} ms per GET -> no client can exceed "
          f"{1 / per_get:,.0f} objects/s ({seq / len(keys) / per_get:.2f}x the sequential loop)")
    print(f"sequential loop:     {len(keys) / seq:,.0f} objects/s  ({seq:.2f} s)")
    print(f"concurrent ({args.workers:>2} thr): {len(keys) / conc:,.0f} objects/s  ({conc:.2f} s)")
    print(f"speed-up:            {seq / conc:.2f}x  (target >= 3x)")


if __name__ == "__main__":
    main()
