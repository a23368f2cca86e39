"""The real command line: help, configuration errors, replay, and SIGTERM shutdown."""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict

import pytest

from cryptolake.common.trade import Trade
from cryptolake.producer.cli import main
from cryptolake.stack.kafka import free_port, read_topic

CLI = [sys.executable, "-m", "cryptolake.producer.cli"]


def test_help_explains_the_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--exchanges", "--symbols", "--bootstrap-servers", "--topic", "--metrics-port"):
        assert flag in text
    assert "simulate" in text and "replay" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--exchanges", "bitfinex"], "unknown exchange bitfinex"),
        (["--symbols", "BTC"], "BASE-QUOTE"),
        (["--metrics-port", "99999"], "metrics_port"),
        (["--exchange-urls", "binance"], "exchange=ws"),
    ],
)
def test_bad_configuration_is_a_clear_error_before_anything_starts(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_replay_publishes_dump_rows_as_binance_trades(kafka_topics, tmp_path):
    dump = tmp_path / "ETHUSDT-trades-2024-03-01.csv"
    rows = [
        f"{100 + i},3400.{i:02d},0.{i + 1},1,{1709251200000 + i},{i % 2 == 0},True"
        for i in range(50)
    ]
    dump.write_text("\n".join([*rows, "150,-1,1,1,1709251200999,True,True"]) + "\n")
    code = main(
        [
            "replay",
            str(dump),
            "--bootstrap-servers",
            kafka_topics.bootstrap_servers,
            "--topic",
            kafka_topics.trades,
            "--dlq-topic",
            kafka_topics.dlq,
        ]
    )
    assert code == 0
    trades = [
        Trade.from_json(r.value)
        for r in read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades, expected=50)
    ]
    assert [t.trade_id for t in trades] == [str(100 + i) for i in range(50)]
    assert {(t.exchange, t.symbol) for t in trades} == {("binance", "ETH-USDT")}
    assert trades[0].side == "sell" and trades[1].side == "buy"
    letters = read_topic(kafka_topics.bootstrap_servers, kafka_topics.dlq, expected=1)
    assert [json.loads(r.value)["reason"] for r in letters] == ["bad_price"]


def scrape(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_sigterm_flushes_and_loses_nothing_acknowledged(kafka_topics, tmp_path):
    sim_port, metrics_port = free_port(), free_port()
    truth_path = tmp_path / "truth.jsonl"
    simulator = subprocess.Popen(
        [
            *CLI,
            "simulate",
            "--port",
            str(sim_port),
            "--rate",
            "3000",
            "--ground-truth",
            str(truth_path),
        ]
    )
    producer = subprocess.Popen(
        [
            *CLI,
            "--source",
            "simulator",
            "--simulator-url",
            f"ws://127.0.0.1:{sim_port}/kraken",
            "--simulator-protocol",
            "kraken",
            "--bootstrap-servers",
            kafka_topics.bootstrap_servers,
            "--topic",
            kafka_topics.trades,
            "--dlq-topic",
            kafka_topics.dlq,
            "--metrics-port",
            str(metrics_port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while scrape(metrics_port, "cryptolake_producer_trades_produced_total") < 2000:
            assert time.monotonic() < deadline, "producer made no progress"
            assert producer.poll() is None, producer.stderr.read()
            time.sleep(0.1)
        producer.send_signal(signal.SIGTERM)
        _, stderr = producer.communicate(timeout=60)
    finally:
        producer.kill()
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
    assert producer.returncode == 0, stderr
    stopped = re.search(
        r"stopped: (\d+) trades produced, \d+ to DLQ, 0 failed, 0 undelivered", stderr
    )
    assert stopped, stderr
    acknowledged = int(stopped[1])
    records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades, expected=acknowledged)
    assert len(records) == acknowledged >= 2000
    # What reached Kafka is, per symbol, exactly the start of what the simulator sent.
    truth = defaultdict(list)
    for line in truth_path.read_text().splitlines():
        item = json.loads(line)
        truth[item["symbol"]].append(item["trade_id"])
    got = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        trade = Trade.from_json(record.value)
        got[trade.symbol].append(trade.trade_id)
    for symbol, ids in got.items():
        assert ids == truth[symbol][: len(ids)]
