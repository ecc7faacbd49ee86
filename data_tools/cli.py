"""`python -m data_tools {synth,download,build,upload,stats}`.

Fatal errors print one line (`error: ...`) and exit 2, never a stack trace. A run that
finished but skipped bad files exits 0 and says what it skipped; a download or upload that
could not move every file exits 1 after moving the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data_tools.problems import DataToolsError

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic bins in ABID layout (JPEG + metadata, truth.csv)")
    p.add_argument("--n", type=_non_negative, required=True, help="number of bins")
    p.add_argument("--out", type=Path, required=True, help="output folder (gets bin-images/ and metadata/)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bins (default 0)")
    p.add_argument("--max-count", type=_non_negative, default=15, help="counts are drawn from 0..K (default 15)")
    p.add_argument("--counts", choices=("abid", "uniform"), default="abid",
                   help="count distribution: abid (ABID's histogram cut at K: a third above 5) or uniform over "
                        "0..K (default abid)")
    p.add_argument("--count-weights", default=None,
                   help="comma-separated weights of counts 0, 1, ... (wins over --counts), e.g. 1,3,4,4,3,2")
    p.add_argument("--style", choices=("mixed", "realistic", "plain"), default="mixed",
                   help="look of the photos: realistic (like ABID: straps, packed and hidden items, blur), plain "
                        "(flat items in clear view) or mixed, each bin either way (default mixed)")
    p.add_argument("--mismatch-rate", type=float, default=0.0,
                   help="share of bins whose metadata count differs from the items drawn (default 0)")
    p.add_argument("--width", type=_positive, default=320, help="photo width in px before jitter (default 320)")
    p.add_argument("--height", type=_positive, default=288, help="photo height in px before jitter (default 288)")
    p.add_argument("--start-id", type=_non_negative, default=1, help="first bin id (default 1 -> 00001)")
    p.add_argument("--metadata-only", action="store_true", help="write metadata and truth only, no photos")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1, help="processes (default: CPU count)")

    p = sub.add_parser("download", help="download bins in ABID layout from S3 (resumable)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="s3://bucket/prefix holding bin-images/ and metadata/")
    src.add_argument("--abid", action="store_true", help="the public ABID bucket (s3://aft-vbi-pds, unsigned)")
    p.add_argument("--out", type=Path, required=True, help="local folder to fill in ABID layout")
    p.add_argument("--limit", type=_positive, default=None, help="only the first N bins")
    p.add_argument("--ids", type=Path, default=None,
                   help="id list: plain ids, file_list.json, or abid_challenge counting_*.json")
    p.add_argument("--unsigned", action="store_true", help="anonymous requests (public buckets)")
    p.add_argument("--metadata-only", action="store_true", help="fetch metadata/ only")
    p.add_argument("--region", default=None, help="bucket region (default: boto3's, us-east-1 for --abid)")
    p.add_argument("--workers", type=_positive, default=32, help="concurrent requests (default 32)")

    p = sub.add_parser("build", help="build the counting dataset (class folders, split, manifest)")
    p.add_argument("--source", type=Path, required=True, help="local folder in ABID layout")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (reruns keep earlier splits)")
    p.add_argument("--max-count", type=_non_negative, default=5,
                   help="N: one class per count 0..N (default 5)")
    p.add_argument("--top-class", choices=("open", "drop"), default="open",
                   help="bins with more than N items: open (default) keeps them in one more class, folder 'N+1+' "
                        "(e.g. 6+), so every bin can be audited; drop leaves them out (filtered.csv), the published "
                        "0..N setting")
    p.add_argument("--split", default="80/10/10", help="train/val/test shares (default 80/10/10)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--max-side", type=_positive, default=None, help="resize photos whose longer side exceeds this")
    p.add_argument("--metadata-only", action="store_true", help="manifest and stats from metadata alone, no images")
    p.add_argument("--workers", type=_positive, default=min(16, 2 * (os.cpu_count() or 1)), help="threads")

    p = sub.add_parser("upload", help="upload a built dataset to S3 and print the training channels")
    p.add_argument("--dataset", type=Path, required=True, help="a folder made by `build`")
    p.add_argument("--dest", default=None,
                   help="s3://bucket/prefix (default: the configured bucket and prefix + /dataset)")
    p.add_argument("--workers", type=_positive, default=32, help="concurrent requests (default 32)")
    p.add_argument("--keep-stale", action="store_true",
                   help="keep objects under <dest>/{train,val,test}/ that the dataset no longer has (default: "
                        "delete them, so a relabelled bin is not in the channel under both counts)")

    p = sub.add_parser("stats", help="class distribution of a built dataset or an ABID-layout folder")
    p.add_argument("path", type=Path)
    return parser


def _cmd_synth(args: argparse.Namespace) -> int:
    from data_tools.synth import SynthOptions, generate

    try:
        weights = tuple(float(w) for w in args.count_weights.split(",")) if args.count_weights else None
        truth = generate(SynthOptions(
            n=args.n, out=args.out, seed=args.seed, max_count=args.max_count, counts=args.counts,
            mismatch_rate=args.mismatch_rate, style=args.style,
            width=args.width, height=args.height, start_id=args.start_id, count_weights=weights, workers=args.workers,
            images=not args.metadata_only,
        ))
    except ValueError as exc:
        raise DataToolsError(str(exc)) from None
    mismatches = sum(r[3] for r in truth)
    print(f"wrote {len(truth)} bins to {args.out} ({mismatches} with injected stock mismatches; truth in truth.csv)")
    return EXIT_OK


def _cmd_download(args: argparse.Namespace) -> int:
    from data_tools.download import plan_download, run_transfers
    from data_tools.id_lists import read_id_list
    from data_tools.layout import ABID_BUCKET, ABID_REGION
    from data_tools.s3 import make_s3_client, parse_s3_uri

    loc = parse_s3_uri(f"s3://{ABID_BUCKET}" if args.abid else args.source)
    unsigned = args.unsigned or args.abid
    region = args.region or (ABID_REGION if args.abid else None)
    client = make_s3_client(unsigned=unsigned, region=region, max_pool=args.workers)
    ids = read_id_list(args.ids) if args.ids else None
    try:
        transfers = plan_download(client, loc, args.out, ids=ids, limit=args.limit, metadata_only=args.metadata_only)
    except Exception as exc:  # noqa: BLE001 - listing failures are fatal: say why in one line
        from data_tools.s3 import describe_error, fatal_reason

        raise DataToolsError(fatal_reason(exc) or f"cannot list {loc.uri}: {describe_error(exc)}") from None
    report = run_transfers(client, loc.bucket, transfers, workers=args.workers)
    print(f"{report.done} downloaded ({report.bytes / 1e6:.1f} MB), {report.skipped} already complete, "
          f"{len(report.failed)} failed -> {args.out}")
    for p in report.failed[:20]:
        print(f"  failed: {p.file}: {p.reason}", file=sys.stderr)
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _cmd_build(args: argparse.Namespace) -> int:
    from data_tools.build import BuildOptions, build_dataset, format_stats_tables
    from data_tools.problems import summarize
    from data_tools.split import parse_fractions
    from data_tools.stats import build_summary

    try:
        fractions = parse_fractions(args.split)
    except ValueError as exc:
        raise DataToolsError(str(exc)) from None
    result = build_dataset(BuildOptions(
        source=args.source, out=args.out, max_count=args.max_count, top_class=args.top_class, fractions=fractions,
        seed=args.seed, max_side=args.max_side, metadata_only=args.metadata_only, workers=args.workers,
    ))
    print(format_stats_tables(result.stats))
    print(f"\ninto {args.out}: {build_summary(result.stats)}")
    if result.problems:
        print(summarize(result.problems), file=sys.stderr)
    return EXIT_OK


def _cmd_upload(args: argparse.Namespace) -> int:
    from binaudit.config import ConfigError, load_settings
    from data_tools.s3 import make_s3_client, parse_s3_uri
    from data_tools.upload import channel_uris, delete_stale, plan_upload, run_uploads

    if args.dest:
        dest = parse_s3_uri(args.dest)
    else:
        try:
            dest = parse_s3_uri(load_settings().s3_root + "/dataset")
        except ConfigError as exc:
            raise DataToolsError(f"{exc}, or pass --dest s3://bucket/prefix") from None
    client = make_s3_client(max_pool=args.workers)
    try:
        plan = plan_upload(client, args.dataset, dest)
    except DataToolsError:
        raise
    except Exception as exc:  # noqa: BLE001
        from data_tools.s3 import describe_error, fatal_reason

        raise DataToolsError(fatal_reason(exc) or f"cannot list {dest.uri}: {describe_error(exc)}") from None
    report = run_uploads(client, dest.bucket, plan.uploads, workers=args.workers)
    if args.keep_stale:
        stale = f"{len(plan.stale)} stale kept (--keep-stale)"
    else:  # after the uploads: a relabelled bin is never missing from the channel, only briefly doubled
        deleted = delete_stale(client, dest, plan.stale)
        report.failed += deleted.failed
        stale = f"{deleted.done} stale deleted"
    print(f"{report.done} uploaded ({report.bytes / 1e6:.1f} MB), {plan.unchanged} unchanged, {stale}, "
          f"{len(report.failed)} failed -> {dest.uri}")
    for p in report.failed[:20]:
        print(f"  failed: {p.file}: {p.reason}", file=sys.stderr)
    print("training channels:")
    for name, uri in channel_uris(dest).items():
        print(f"  {name}: {uri}")
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    from data_tools.stats import stats_text

    print(stats_text(args.path))
    return EXIT_OK


COMMANDS = {"synth": _cmd_synth, "download": _cmd_download, "build": _cmd_build, "upload": _cmd_upload,
            "stats": _cmd_stats}


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DataToolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, permission denied on the output folder, ...
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FATAL
