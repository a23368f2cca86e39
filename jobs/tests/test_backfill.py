"""``backfill``: Binance dump files into every table without a broker. Each hostile line gets
the reason the producer's ``replay`` gives it, Gold equals a Decimal recomputation from the
CSV, and a second run changes nothing. (Trades silver already holds are not counted twice:
``tests/integration/test_backfill.py`` backfills dumps into the lakehouse that streamed them.)"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs import tables
from cryptolake.jobs.backfill import backfill
from cryptolake.producer.replay import read_dump

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
# Lines a broken export or an attacker could put in a dump, after a header and a good line.
HOSTILE = (
    b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
    b"1,100.5,0.5,50.25,1735689600000,True,True\n"
    b"2,abc,0.5,1,1735689600001,False,True\n"  # the poison pill of silver's past
    b"3,100.5,0.5,50.25,17356896000x1,False,True\n"
    b"4,100.5\n"
    b"5,100.5,0.5,50.25,1735689600002,maybe,True\n"
    b"6,100.5,0.5,50.25,1735689600003,\xff\xfe,True\n"
    b"1,100.5,0.5,50.25,1735689600000,True,True\n"  # a duplicate of line 2
    b'7,"100.5",0.5,1,1735689600004,true,true\n'
    b"8,100.5,-0.5,1,1735689600005,true,true\n"
    b"9,1" + b"0" * 30 + b",0.5,1,1735689600006,true,true\n"
    b"10,100.5,0.5,1,1735689600007,true,true," + b"x" * 70_000 + b"\n"
    b"\n"
    b" 11 ,100.6,0.25,1,1735689660000,false,true\n"
    b"12,100.7,0.25,1,99999999999999999,false,true\n"  # year 5138: from the future
)


def table(spark, settings, name: str):
    return spark.read.format("delta").load(settings.table_path(name))


def producer_reasons(path: Path) -> dict[int, str]:
    """Line number → the reason ``replay`` dead-letters it with (its detail names the line)."""
    reasons = {}
    for item in read_dump(path):
        if item.dead_letter is not None:
            line = int(item.dead_letter.detail.split(" line ")[1].split(":")[0])
            reasons[line] = str(item.dead_letter.reason)
    return reasons


def test_hostile_lines_get_the_producers_reasons_and_nothing_is_lost(spark, job_lake, tmp_path):
    settings = job_lake("refine")
    dump = tmp_path / "ETHUSDT-trades-2025-01-01.csv"
    dump.write_bytes(HOSTILE)
    outcome = backfill(spark, settings, [dump])
    assert outcome is not None

    quarantine = {
        row.kafka_offset: row.reason
        for row in table(spark, settings, tables.SILVER_QUARANTINE).collect()
    }
    # The producer dead-letters what silver would reject too (make_trade holds the same rules).
    assert quarantine == producer_reasons(dump)
    assert quarantine == {3: "bad_price", 4: "bad_timestamp", 5: "missing_field",
                          6: "bad_side", 7: "bad_encoding", 9: "bad_price", 10: "bad_qty",
                          11: "bad_price", 12: "too_large", 15: "bad_timestamp"}  # fmt: skip
    silver = sorted(row.trade_id for row in table(spark, settings, tables.SILVER_TRADES).collect())
    assert silver == ["1", "11"]
    # Every line is in exactly one place: a trade, a quarantined row or a duplicate.
    lines = [n for n, line in enumerate(HOSTILE.split(b"\n"), start=1) if line][1:]
    assert len(lines) == len(silver) + len(quarantine) + 1
    assert outcome.rule_rows["valid"] == 2
    assert table(spark, settings, tables.BRONZE_TRADES).count() == 13 - 5  # rendered lines


def test_gold_equals_the_csv_and_a_second_run_changes_nothing(spark, job_lake, tmp_path):
    settings = job_lake("refine")
    dumps = sorted(FIXTURES.glob("*.csv"))
    backfill(spark, settings, dumps)
    versions = {
        name: spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(name)}`").count()
        for name in (tables.BRONZE_TRADES, tables.SILVER_TRADES, tables.SILVER_QUARANTINE,
                     tables.GOLD_CANDLES_1M)
    }  # fmt: skip
    # The same files again: found done by the candles' txnAppId, nothing is written.
    assert backfill(spark, settings, dumps) is None
    for name, count in versions.items():
        assert spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(name)}`").count() == count

    trades = [item.trade.to_dict() for dump in dumps for item in read_dump(dump) if item.trade]
    expected = reference_bars(trades)
    candles = (
        table(spark, settings, tables.GOLD_CANDLES_1M)
        .withColumn("minute_us", F.unix_micros("minute"))
        .withColumn("first_trade_time_us", F.unix_micros("first_trade_time"))
        .withColumn("last_trade_time_us", F.unix_micros("last_trade_time"))
        .collect()
    )
    fields = next(iter(expected.values())).keys()
    got = {(row.symbol, row.minute_us // 60_000_000): {name: row[name] for name in fields}
           for row in candles}  # fmt: skip
    assert got == expected
