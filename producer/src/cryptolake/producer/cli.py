"""``cryptolake-producer``: stream exchange trades into Kafka, run the market simulator, or
replay Binance trade dumps. Every flag has a ``CRYPTOLAKE_*`` environment twin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from confluent_kafka import KafkaException
from pydantic import ValidationError

from cryptolake.common.dumps import DumpError
from cryptolake.common.symbols import canonical_symbol
from cryptolake.producer.app import install_stop_signals, run_stream
from cryptolake.producer.exchanges import ADAPTERS
from cryptolake.producer.kafka_sink import SinkError
from cryptolake.producer.replay import run_replay
from cryptolake.producer.settings import DEFAULT_SYMBOLS, ProducerSettings
from cryptolake.producer.simulator.server import SimulatorConfig, run_simulator

log = logging.getLogger("cryptolake.producer")

EPILOG = """\
examples:
  cryptolake-producer                                  # auto: live exchanges, else simulator
  cryptolake-producer --source simulator --simulator-rate 500
  cryptolake-producer --exchanges binance --symbols BTC-USDT,ETH-USDT
  cryptolake-producer --symbols binance:BTC-USDT,coinbase:BTC-USD
  cryptolake-producer --exchanges binance --symbols BTC-USDT,BTC-USDT-PERP   # spot + USD-M perp
  cryptolake-producer simulate --port 8765 --rate 1000
  cryptolake-producer replay BTCUSDT-trades-2024-01-01.zip --pace recorded --speed 60

metrics: http://HOST:METRICS_PORT/metrics and /healthz
default symbols: """ + "; ".join(f"{k} {','.join(v)}" for k, v in DEFAULT_SYMBOLS.items())


def _kafka_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("kafka")
    group.add_argument(
        "--bootstrap-servers",
        help="broker list (default 127.0.0.1:9092; env CRYPTOLAKE_BOOTSTRAP_SERVERS)",
    )
    group.add_argument(
        "--topic", dest="trades_topic", help="trades topic (default crypto.trades.v1)"
    )
    group.add_argument("--dlq-topic", help="dead-letter topic (default crypto.trades.dlq)")
    group.add_argument(
        "--partitions",
        dest="topic_partitions",
        type=int,
        help="partitions for topics this creates (default 3)",
    )
    group.add_argument(
        "--retention-ms",
        dest="topic_retention_ms",
        type=int,
        help="retention for topics this creates (default 7 days)",
    )
    group.add_argument(
        "--compression",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="producer compression (default lz4)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptolake-producer",
        description="Stream exchange trades (Binance, Kraken, Coinbase) as normalized trade v1 "
        "into Kafka; frames that cannot be normalized go to the DLQ topic with a reason.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    stream = parser.add_argument_group("streaming (the default command)")
    stream.add_argument(
        "--source",
        choices=["auto", "live", "simulator"],
        help="auto (default): live exchanges, or the simulator when none is "
        "reachable; env CRYPTOLAKE_SOURCE",
    )
    stream.add_argument("--exchanges", help="comma list of binance,kraken,coinbase (default all)")
    stream.add_argument(
        "--symbols",
        help="BASE-QUOTE list for every exchange, or "
        "exchange:BASE-QUOTE items (default: see below)",
    )
    stream.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics and /healthz port (default 9400; 0 disables)",
    )
    stream.add_argument(
        "--live-timeout",
        dest="live_timeout_s",
        type=float,
        help="seconds auto waits for a live exchange (default 5)",
    )
    stream.add_argument(
        "--exchange-urls",
        help="override live endpoints by protocol: binance=wss://host:port,"
        "binance-futures=wss://host,kraken=wss://host/v2 (proxies)",
    )
    stream.add_argument(
        "--simulator-protocol",
        choices=list(ADAPTERS),
        help="wire format of the built-in simulator (default coinbase; binance-futures: "
        "perpetual contracts, BASE-QUOTE-PERP)",
    )
    stream.add_argument("--simulator-rate", type=float, help="simulated trades/s (default 50)")
    stream.add_argument("--simulator-seed", type=int, help="simulator seed (default 42)")
    stream.add_argument(
        "--simulator-url",
        help="use a running simulator at this base URL, e.g. ws://127.0.0.1:8765/coinbase",
    )
    _kafka_flags(parser)

    commands = parser.add_subparsers(dest="command", metavar="{simulate,replay}")
    simulate = commands.add_parser(
        "simulate",
        help="run the market simulator (a WebSocket server speaking the exchanges' "
        "wire formats; data it feeds is labelled simulator)",
        description="Serve synthetic trades on "
        "ws://127.0.0.1:PORT/{binance,binance-futures,kraken,coinbase}.",
    )
    simulate.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any)")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--rate", type=float, default=50.0, help="trades/s when paced")
    simulate.add_argument("--symbols", default="BTC-USDT,ETH-USDT")
    simulate.add_argument("--flood", action="store_true", help="send as fast as possible")
    simulate.add_argument("--max-trades", type=int, help="stop emitting after this many")
    simulate.add_argument("--trades-per-frame", type=int, help="batch size (kraken, coinbase)")
    simulate.add_argument("--disconnect-every", type=float, metavar="SECONDS")
    simulate.add_argument(
        "--malformed-every", type=int, metavar="N", help="a bad frame after every Nth frame"
    )
    simulate.add_argument("--duplicate-every", type=int, metavar="N")
    simulate.add_argument(
        "--skip-frame-every",
        type=int,
        metavar="N",
        help="silently skip every Nth trade frame (connection stays open; the REST history "
        "still has the trades)",
    )
    simulate.add_argument(
        "--rest-fail-every",
        type=int,
        metavar="N",
        help="answer every Nth REST history request with 429 (Retry-After: 1) or 503",
    )
    simulate.add_argument("--out-of-order-every", type=int, metavar="N")
    simulate.add_argument("--shutdown-after", type=float, metavar="SECONDS")
    simulate.add_argument(
        "--ground-truth", type=Path, metavar="FILE", help="write every item sent as JSON lines"
    )

    replay = commands.add_parser(
        "replay",
        help="publish Binance trade dumps (SYMBOL-trades-DATE.csv or .zip)",
        description="Publish Binance public trade dumps as trade v1 with exchange=binance.",
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay.add_argument("--symbol", help="pair of every file (default: from the file name)")
    replay.add_argument(
        "--pace",
        choices=["full", "recorded"],
        default="full",
        help="full speed (default) or the recorded pace",
    )
    replay.add_argument("--speed", type=float, default=1.0, help="pace multiplier (recorded)")
    _kafka_flags(replay)
    return parser


_SETTINGS_FLAGS = (
    "log_level",
    "source",
    "exchanges",
    "symbols",
    "metrics_port",
    "live_timeout_s",
    "exchange_urls",
    "simulator_protocol",
    "simulator_rate",
    "simulator_seed",
    "simulator_url",
    "bootstrap_servers",
    "trades_topic",
    "dlq_topic",
    "topic_partitions",
    "topic_retention_ms",
    "compression",
)


def settings_from(args: argparse.Namespace) -> ProducerSettings:
    """Environment settings with the flags given on the command line on top."""
    names = ("log_level",) if args.command == "simulate" else _SETTINGS_FLAGS
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return ProducerSettings(**given)


def _simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    symbols = [canonical_symbol(s) for s in args.symbols.split(",") if s.strip()]
    extra = {} if args.trades_per_frame is None else {"trades_per_frame": args.trades_per_frame}
    return SimulatorConfig(
        seed=args.seed,
        rate_per_s=args.rate,
        flood=args.flood,
        max_trades=args.max_trades,
        symbols=symbols,
        disconnect_every_s=args.disconnect_every,
        malformed_every=args.malformed_every,
        duplicate_every=args.duplicate_every,
        skip_frame_every=args.skip_frame_every,
        rest_fail_every=args.rest_fail_every,
        out_of_order_every=args.out_of_order_every,
        shutdown_after_s=args.shutdown_after,
        ground_truth_path=args.ground_truth,
        **extra,
    )


def _simulate(args: argparse.Namespace) -> int:
    config = _simulator_config(args)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await run_simulator(config, args.port, stop, host=args.host)

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        parser.error(problems)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    # websockets logs every connection open/close, httpx every REST call, at INFO; the feeds,
    # the recovery and the kline checks log what matters.
    for chatty in ("websockets", "httpx"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "replay":
            summary = run_replay(
                settings, args.files, symbol=args.symbol, pace=args.pace, speed=args.speed
            )
            return 0 if summary.undelivered == 0 and summary.failed == 0 else 1
        stream = run_stream(settings)
        return 0 if stream.undelivered == 0 else 1
    except (DumpError, SinkError) as exc:
        log.error("%s", exc)
        return 2
    except KafkaException as exc:
        log.error("kafka at %s: %s", settings.bootstrap_servers, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
