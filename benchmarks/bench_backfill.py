"""Backfill: N trades in Binance daily-dump files → every table written, without a broker
(``python -m cryptolake.jobs backfill``, as ``make backfill`` runs it). Prints the time of each
step of the batch, peak RSS, and as its last line ``backfill_trades_per_s=<N / seconds from the
call to the last commit>`` (JVM start and writing the files not counted).

    make bench-backfill                                # 2,000,000 trades, 3 symbols, zip files
    .venv/bin/python benchmarks/bench_backfill.py --trades 200000 --csv

The files are written in Binance's layout (``SYMBOL-trades-YYYY-MM-DD.zip`` holding the CSV
``id,price,qty,quote_qty,time(ms),is_buyer_maker,is_best_match``, with its header): prices from
the simulator's market model, sequential trade ids per symbol, one day of event time per file.
The Spark session runs in this process (local mode, tables on local disk). Checks: silver holds
N rows and Gold's 1-minute bars count N trades.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from benchlib import build_parser, java_children, peak_rss_mib, scratch_dir
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cryptolake.jobs.backfill import backfill
from cryptolake.jobs.session import build_session
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.simulator.market import Market

DAY = datetime(2025, 1, 1, tzinfo=UTC)
HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"


def write_dumps(args: argparse.Namespace, folder: Path) -> list[Path]:
    """One file per symbol (one day, ``args.trades`` spread over the symbols); their paths."""
    symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
    start_us = int(DAY.timestamp() * 1_000_000)
    day_us = 86_400 * 1_000_000
    market = Market(symbols, seed=args.seed, rate_per_s=args.trades / 86_400, start_us=start_us)
    rows: dict[str, list[str]] = {symbol: [HEADER] for symbol in symbols}
    started = time.monotonic()
    chunk = 100_000
    for index in range(-(-args.trades // chunk)):
        count = min(chunk, args.trades - index * chunk)
        until = start_us + day_us * (index + 1) * chunk // max(args.trades, 1)
        for trade in market.next_trades(count, min(until, start_us + day_us - 1)):
            quote = f"{float(trade.price) * float(trade.qty):.8f}"  # not read by the lakehouse
            maker = "True" if trade.side == "sell" else "False"
            rows[trade.symbol].append(
                f"{trade.trade_id},{trade.price},{trade.qty},{quote},"
                f"{trade.event_time_us // 1000},{maker},True\n"
            )
    paths = []
    for symbol, lines in rows.items():
        name = f"{symbol.replace('-', '')}-trades-{DAY:%Y-%m-%d}"
        text = "".join(lines).encode()
        if args.csv:
            path = folder / f"{name}.csv"
            path.write_bytes(text)
        else:
            path = folder / f"{name}.zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{name}.csv", text)
        paths.append(path)
    size = sum(path.stat().st_size for path in paths) / 2**20
    print(f"files: {len(paths)} ({size:,.0f} MiB), {args.trades:,} trades written in "
          f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
    return paths


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--trades", type=int, default=2_000_000, help="trades in the files")
    parser.add_argument("--symbols", default="BTC-USDT,ETH-USDT,SOL-USDT", help="comma list")
    parser.add_argument("--seed", type=int, default=42, help="market simulator seed")
    parser.add_argument("--csv", action="store_true", help="plain .csv files instead of .zip")
    parser.add_argument("--shuffle-partitions", type=int, default=4, help="Spark SQL shuffles")
    parser.add_argument("--driver-memory", default="2g", help="Spark driver heap")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
          f"{args.trades:,} trades", flush=True)  # fmt: skip
    with scratch_dir("bench-backfill-", args.work_dir, args.keep) as root:
        files = write_dumps(args, root)
        settings = JobSettings(
            table_root=str(root / "lakehouse"),
            driver_memory=args.driver_memory,
            shuffle_partitions=args.shuffle_partitions,
            metrics_port=0,
        )
        spark = build_session(settings, "cryptolake-bench-backfill")
        try:
            started = time.monotonic()
            outcome = backfill(spark, settings, files)
            total = time.monotonic() - started
            assert outcome is not None, "a fresh lakehouse cannot hold these files already"
            steps = ", ".join(f"{step} {s:.1f} s" for step, s in outcome.seconds.items())
            print(f"backfill: {total:.1f} s; refine's writer: {steps}", flush=True)
            jvm = java_children(os.getpid())
            jvm_rss = [peak_rss_mib(pid) or 0.0 for pid in jvm]
            print(f"peak RSS: JVM {' + '.join(f'{rss:,.0f}' for rss in jvm_rss) or '?'} MiB, "
                  f"python {peak_rss_mib('self'):,.0f} MiB", flush=True)  # fmt: skip

            def table(name: str) -> DataFrame:
                return spark.read.format("delta").load(settings.table_path(name))

            silver = table("silver/trades").count()
            bronze = table("bronze/trades").count()
            row = table("gold/candles_1m").agg(F.sum("trades").alias("n")).first()
            gold = (row["n"] if row else None) or 0
        finally:
            spark.stop()
    print(f"check: bronze {bronze:,}, silver {silver:,} rows, gold candles {gold:,} trades")
    if not silver == gold == bronze == args.trades:
        raise SystemExit(f"check failed: expected {args.trades:,} in bronze, silver and gold")
    print(f"backfill_trades_per_s={args.trades / total:.0f}")


if __name__ == "__main__":
    main()
