"""Download and upload against a real S3 API: moto's server on 127.0.0.1, driven by boto3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from data_tools.download import Transfer, plan_download, run_transfers
from data_tools.problems import DataToolsError
from data_tools.s3 import S3Location, ShortRead, make_s3_client, with_retries
from data_tools.upload import delete_stale, plan_upload
from tests.conftest import s3_bucket_name

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_tools", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def abid_bucket(aws_env, synth_raw, request) -> S3Location:
    """A bucket laid out like ABID (`<prefix>/bin-images/`, `<prefix>/metadata/`) holding the synthetic bins."""
    loc = S3Location(s3_bucket_name(request), "abid")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=loc.bucket)
    for folder in ("bin-images", "metadata"):
        for path in sorted((synth_raw / folder).iterdir()):
            s3.put_object(Bucket=loc.bucket, Key=loc.key(folder, path.name), Body=path.read_bytes())
    return loc


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_download_with_limit_via_cli(abid_bucket, tmp_path, synth_raw):
    out = tmp_path / "raw"
    proc = _cli("download", "--source", abid_bucket.uri, "--out", str(out), "--limit", "25", "--workers", "8")
    assert proc.returncode == 0, proc.stderr
    got = _files(out)
    assert len([f for f in got if f.startswith("metadata/")]) == 25
    assert {f.replace("metadata/", "bin-images/").replace(".json", ".jpg") for f in got if "metadata" in f} <= got
    for rel in got:
        assert (out / rel).read_bytes() == (synth_raw / rel).read_bytes()
    assert "25 downloaded" not in proc.stdout and "50 downloaded" in proc.stdout

    again = _cli("download", "--source", abid_bucket.uri, "--out", str(out), "--limit", "25")
    assert again.returncode == 0 and "0 downloaded" in again.stdout and "50 already complete" in again.stdout


@pytest.mark.parametrize("shape", ["file_list", "counting"])
def test_download_by_id_list_shapes(abid_bucket, tmp_path, shape):
    ids_file = tmp_path / "ids.json"
    if shape == "file_list":
        ids_file.write_text(json.dumps({"1": ["metadata/00003.json"], "4": ["metadata/00010.json", "metadata/7.json"]}))
        wanted = {"00003", "00010", "00007"}
    else:
        ids_file.write_text(json.dumps([[2, 1], [19, 4]]))  # image %05d.jpg of idx + 1
        wanted = {"00003", "00020"}
    out = tmp_path / "raw"
    proc = _cli("download", "--source", abid_bucket.uri, "--out", str(out), "--ids", str(ids_file))
    assert proc.returncode == 0, proc.stderr
    assert {p.stem for p in (out / "metadata").iterdir()} == wanted
    assert {p.stem for p in (out / "bin-images").iterdir()} == wanted


def test_unsigned_requests_carry_no_signature(abid_bucket, tmp_path):
    anonymous = make_s3_client(unsigned=True)
    with pytest.raises(Exception, match="AccessDenied|403"):  # a private bucket refuses anonymous reads
        anonymous.get_object(Bucket=abid_bucket.bucket, Key=abid_bucket.key("metadata/00001.json"))
    policy = {"Version": "2012-10-17", "Statement": [{  # public like aft-vbi-pds
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{abid_bucket.bucket}", f"arn:aws:s3:::{abid_bucket.bucket}/*"]}]}
    boto3.client("s3").put_bucket_policy(Bucket=abid_bucket.bucket, Policy=json.dumps(policy))

    client = make_s3_client(unsigned=True)
    seen: list[dict] = []
    client.meta.events.register("before-send.s3", lambda request, **_: seen.append(dict(request.headers)))
    transfers = plan_download(client, abid_bucket, tmp_path, ids=["00001", "00002"])
    report = run_transfers(client, abid_bucket.bucket, transfers, workers=2)
    assert report.done == 4 and not report.failed
    assert seen and all("Authorization" not in h for h in seen)


def test_partial_files_never_count_as_complete(abid_bucket, tmp_path, synth_raw):
    client = make_s3_client()
    transfers = plan_download(client, abid_bucket, tmp_path, limit=3, metadata_only=True)
    assert all(t.size is not None for t in transfers)  # sizes known from the listing
    first, second, third = transfers
    first.dest.parent.mkdir(parents=True)
    first.dest.write_bytes(b"{")  # a truncated leftover with the final name: wrong size
    second.dest.with_name(second.dest.name + ".part").write_bytes(b"{\"EXPECTED")  # an interrupted download
    third.dest.write_bytes((synth_raw / "metadata" / third.dest.name).read_bytes())  # a complete file
    report = run_transfers(client, abid_bucket.bucket, transfers, workers=2)
    assert (report.done, report.skipped) == (2, 1)
    for t in transfers:
        assert t.dest.read_bytes() == (synth_raw / "metadata" / t.dest.name).read_bytes()
        assert not t.dest.with_name(t.dest.name + ".part").exists()


def test_missing_objects_are_reported_and_the_rest_downloaded(abid_bucket, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("00001\n00002\n88888\n")
    out = tmp_path / "raw"
    proc = _cli("download", "--source", abid_bucket.uri, "--out", str(out), "--ids", str(ids))
    assert proc.returncode == 1  # partial: some files could not be fetched
    assert "2 failed" in proc.stdout and "88888" in proc.stderr
    assert (out / "metadata/00001.json").is_file() and (out / "bin-images/00002.jpg").is_file()


def test_throttling_is_retried(abid_bucket, tmp_path):
    client = make_s3_client()
    state = {"throttled": 0}

    class _Raw:
        def stream(self, **_):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def throttle_twice(request, **_):
        if request.method == "GET" and state["throttled"] < 2:
            state["throttled"] += 1
            return AWSResponse(request.url, 503, {}, _Raw())
        return None

    client.meta.events.register("before-send.s3", throttle_twice)
    transfers = plan_download(client, abid_bucket, tmp_path, ids=["00004"], metadata_only=True)
    report = run_transfers(client, abid_bucket.bucket, transfers, workers=1)
    assert state["throttled"] == 2 and report.done == 1 and not report.failed


def test_short_reads_are_retried_then_given_up():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ShortRead("got 10 of 20 bytes")
        return "ok"

    assert with_retries(flaky, sleep=lambda _: None) == "ok" and len(calls) == 3
    with pytest.raises(ShortRead):
        with_retries(lambda: (_ for _ in ()).throw(ShortRead("always")), attempts=2, sleep=lambda _: None)


def test_no_credentials_is_one_clear_line(abid_bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    proc = _cli("download", "--source", abid_bucket.uri, "--out", str(tmp_path), "--limit", "2")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no AWS credentials found") and "Traceback" not in proc.stderr
    assert "--unsigned" in proc.stderr


def test_upload_prints_channels_and_skips_unchanged(aws_env, tiny_dataset, tmp_path, request):
    bucket = s3_bucket_name(request)
    boto3.client("s3").create_bucket(Bucket=bucket)
    dest = f"s3://{bucket}/binaudit/dataset"
    proc = _cli("upload", "--dataset", str(tiny_dataset), "--dest", dest, "--workers", "8")
    assert proc.returncode == 0, proc.stderr
    for split in ("train", "val", "test"):
        assert f"{split}: {dest}/{split}" in proc.stdout
    keys = {o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    local = {f"binaudit/dataset/{rel}" for rel in _files(tiny_dataset)}
    assert keys == local

    again = _cli("upload", "--dataset", str(tiny_dataset), "--dest", dest)
    assert again.returncode == 0 and f"0 uploaded (0.0 MB), {len(local)} unchanged" in again.stdout

    copy = tmp_path / "ds"
    shutil.copytree(tiny_dataset, copy)
    (copy / "stats.json").write_text((copy / "stats.json").read_text() + " ")
    plan = plan_upload(make_s3_client(), copy, S3Location(bucket, "binaudit/dataset"))
    assert [u.key for u in plan.uploads] == ["binaudit/dataset/stats.json"] and plan.unchanged == len(local) - 1
    assert plan.stale == []


def _keys(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_upload_deletes_stale_split_objects_and_nothing_else(aws_env, tiny_dataset, tmp_path, request):
    bucket = s3_bucket_name(request)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    dest = f"s3://{bucket}/binaudit/dataset"
    copy = tmp_path / "ds"
    shutil.copytree(tiny_dataset, copy)
    assert _cli("upload", "--dataset", str(copy), "--dest", dest, "--workers", "4").returncode == 0
    # outside <prefix>/{train,val,test}/: never stale, whatever the dataset holds
    outside = {"binaudit/dataset/notes.txt", "binaudit/dataset/metadata/gone.json", "binaudit/dataset/trainx/2/a.jpg",
               "binaudit/dataset-old/train/2/a.jpg", "binaudit/train/2/a.jpg", "elsewhere/val/1/a.jpg"}
    for key in outside:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # the rebuilt dataset relabels one bin 2 -> 3 and drops one val bin
    relabelled = sorted((copy / "train" / "2").glob("*.jpg"))[0]
    (copy / "train" / "3").mkdir(exist_ok=True)
    relabelled.rename(copy / "train" / "3" / relabelled.name)
    dropped = sorted((copy / "val").rglob("*.jpg"))[0]
    dropped.unlink()
    stale = {f"binaudit/dataset/train/2/{relabelled.name}", f"binaudit/dataset/{dropped.relative_to(copy).as_posix()}"}

    kept = _cli("upload", "--dataset", str(copy), "--dest", dest, "--keep-stale")
    assert kept.returncode == 0, kept.stderr
    assert "1 uploaded" in kept.stdout and "2 stale kept (--keep-stale)" in kept.stdout
    assert stale <= _keys(bucket)

    cleaned = _cli("upload", "--dataset", str(copy), "--dest", dest)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "0 uploaded" in cleaned.stdout and "2 stale deleted" in cleaned.stdout
    local = {f"binaudit/dataset/{rel}" for rel in _files(copy)}
    assert _keys(bucket) == local | outside  # the channel holds the relabelled bin once, under its new count
    assert f"binaudit/dataset/train/3/{relabelled.name}" in local


def test_stale_deletion_refuses_keys_outside_the_split_prefixes():
    dest = S3Location("bucket", "binaudit/dataset")
    for key in ("binaudit/dataset/manifest.csv", "binaudit/dataset/trainx/1/a.jpg", "binaudit/train/1/a.jpg"):
        with pytest.raises(DataToolsError, match="refusing to delete"):
            delete_stale(None, dest, ["binaudit/dataset/train/1/a.jpg", key])  # refused before any request
    root = S3Location("bucket", "")
    with pytest.raises(DataToolsError, match="refusing to delete"):
        delete_stale(None, root, ["metadata/a.json"])


def test_upload_without_destination_names_the_setting(tiny_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("BINAUDIT_SECRETS", str(tmp_path / "none.toml"))
    monkeypatch.delenv("BINAUDIT_S3_BUCKET", raising=False)
    proc = _cli("upload", "--dataset", str(tiny_dataset))
    assert proc.returncode == 2 and "BINAUDIT_S3_BUCKET" in proc.stderr and "--dest" in proc.stderr


def test_transfer_of_unknown_size_is_complete_once_renamed(tmp_path):
    from data_tools.download import is_complete

    t = Transfer("k", tmp_path / "a.json")
    assert not is_complete(t)
    t.dest.with_name("a.json.part").write_bytes(b"half")
    assert not is_complete(t)
    t.dest.write_bytes(b"{}")
    assert is_complete(t)
