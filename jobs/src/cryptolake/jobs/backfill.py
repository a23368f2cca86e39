"""``backfill``: Binance trade dumps → bronze, silver, quarantine and Gold in one batch, without
a broker. The files' lines are staged as Parquet (Python reads them, Spark cannot number the
lines of a file), rendered as the trade v1 records the producer's ``replay`` would publish
(``transforms.dump_records``), appended to bronze, and refined by refine's own writer: the same
parse, rules, dedup, candle fold and derived tables as streaming.

Run with the streams stopped (one writer per table). Exactly once: every commit is tagged
with an id of the files' contents, so running the same files again after a crash writes only
what is missing, and after a success (the candles' ``txnAppId`` is there) nothing. Trades
silver already holds (a live stream, an earlier backfill of an overlapping file) are left
out, so no candle counts a trade twice.
Lateness does not apply: history is what a backfill is for.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptolake.common.dumps import (
    DumpError,
    missing_files,
    open_dump,
    row_lines,
    symbol_from_filename,
)
from cryptolake.common.symbols import canonical_symbol
from cryptolake.jobs import tables
from cryptolake.jobs.refine import (
    QUERY,
    BatchOutcome,
    RefineWriter,
    deduplicate_whole,
    refuse_legacy_layout,
    timed,
)
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.streams import RECENT_COMMITS, BatchAppender, committed_txn, ensure_tables
from cryptolake.jobs.transforms import (
    DEDUP_KEY,
    dump_records,
    dump_rejects,
    parse_trades,
)

log = logging.getLogger(__name__)

# Lines per Parquet row group while staging: bounded memory for files of any size.
STAGE_CHUNK_LINES = 500_000
STAGE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("part", pa.int32()),
        ("line_no", pa.int64()),
        ("size", pa.int64()),
        ("symbol", pa.string()),
        ("line", pa.binary()),
    ]
)


@dataclass(frozen=True)
class StagedDumps:
    folder: Path
    lines: int
    # Content digest of every file: the commit tags of this input.
    digest: str


def _chunks(path: Path, symbol: str) -> Iterator[pa.RecordBatch]:
    """A file's lines (every CSV member of an archive) as record batches; the header and
    empty lines are skipped, as ``replay`` skips them."""
    for part, binary in enumerate(open_dump(path)):
        numbers: list[int] = []
        sizes: list[int] = []
        lines: list[bytes] = []
        for line_no, line, size in row_lines(binary):
            numbers.append(line_no)
            sizes.append(size)
            lines.append(line)
            if len(lines) == STAGE_CHUNK_LINES:
                yield _batch(path.name, part, symbol, (numbers, sizes, lines))
                numbers, sizes, lines = [], [], []
        if lines:
            yield _batch(path.name, part, symbol, (numbers, sizes, lines))


def _batch(
    source: str, part: int, symbol: str, columns: tuple[list[int], list[int], list[bytes]]
) -> pa.RecordBatch:
    numbers, sizes, lines = columns
    count = len(lines)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([source] * count, pa.string()),
            pa.array([part] * count, pa.int32()),
            pa.array(numbers, pa.int64()),
            pa.array(sizes, pa.int64()),
            pa.array([symbol] * count, pa.string()),
            pa.array(lines, pa.binary()),
        ],
        schema=STAGE_SCHEMA,
    )


def stage_dumps(files: list[Path], folder: Path, symbol: str | None = None) -> StagedDumps:
    """Every line of the files → one Parquet file per dump in ``folder``."""
    missing = missing_files(files)
    if missing:
        raise DumpError(f"no such file: {', '.join(missing)}")
    digest = hashlib.sha256()
    total = 0
    for index, path in enumerate(files):
        canonical = canonical_symbol(symbol) if symbol else symbol_from_filename(path)
        digest.update(f"{path.name}\0{canonical}\0".encode())
        with path.open("rb") as raw:
            for block in iter(lambda: raw.read(1 << 20), b""):
                digest.update(block)
        with pq.ParquetWriter(folder / f"{index:05d}.parquet", STAGE_SCHEMA) as writer:
            for batch in _chunks(path, canonical):
                writer.write_batch(batch)
                total += batch.num_rows
        log.info("backfill: staged %s (%d lines so far)", path.name, total)
    return StagedDumps(folder, total, digest.hexdigest()[:16])


def _silver_before(spark: SparkSession, settings: JobSettings, tag: str) -> DataFrame:
    """Silver as it was before this input's own commit (the latest version when it has none):
    the trades already there, which this backfill leaves out."""
    path = settings.table_path(tables.SILVER_TRADES)
    # Where BatchAppender looks for a replayed batch's commit too.
    history = DeltaTable.forPath(spark, path).history(RECENT_COMMITS)
    own = history.where(F.col("userMetadata") == tag).select("version").first()
    reader = spark.read.format("delta")
    if own is not None:
        reader = reader.option("versionAsOf", int(own["version"]) - 1)
    return reader.load(path)


def backfill(
    spark: SparkSession, settings: JobSettings, files: list[Path], symbol: str | None = None
) -> BatchOutcome | None:
    """The dump files through bronze and refine's writer, as one batch (see the module); None
    when they were backfilled before."""
    seconds: dict[str, float] = {}
    with timed(seconds, "tables"):
        refuse_legacy_layout(spark, settings)
        ensure_tables(spark, settings, "bronze")
        ensure_tables(spark, settings, QUERY)
    received = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="cryptolake-backfill-") as folder:
        with timed(seconds, "stage"):
            staged = stage_dumps(files, Path(folder), symbol)
        log.info("backfill: %d lines of %d file(s) staged in %.1f s", staged.lines, len(files),
                 seconds["stage"])  # fmt: skip
        app_id = f"cryptolake-backfill-{staged.digest}"
        # The candles MERGE is the last commit: these files are in the lakehouse already (the
        # commit tags below are only looked up in recent commits).
        if committed_txn(spark, settings.table_path(tables.GOLD_CANDLES_1M), app_id) is not None:
            log.info("backfill: these files are in the lakehouse already (%s); nothing to do",
                     app_id)  # fmt: skip
            return None
        with timed(seconds, "render"):
            records = dump_records(spark.read.parquet(folder), received).localCheckpoint(eager=True)
        with timed(seconds, "bronze"):
            BatchAppender(settings, "backfill", app_id=app_id).append(
                records.where(F.col("value").isNotNull()).select(
                    *tables.BRONZE_SCHEMA.fieldNames()
                ),
                tables.BRONZE_TRADES,
                0,
            )
        parsed = parse_trades(
            records.where(F.col("value").isNotNull()),
            max_future_skew_s=settings.max_future_skew_s,
        )
        known = _silver_before(spark, settings, f"{app_id}:0").select(
            *DEDUP_KEY, F.lit(True).alias("_known")
        )
        # Only valid trades are looked up: a rejected row is quarantined whatever its key.
        fresh = (
            parsed.join(known, DEDUP_KEY, "left")
            .where(F.col("reason").isNotNull() | F.col("_known").isNull())
            .drop("_known")
        )
        with timed(seconds, "parse"):
            batch = deduplicate_whole(fresh.unionByName(dump_rejects(records, parsed.schema)))
        log.info("backfill: %s; refining", ", ".join(f"{step} {s:.1f} s" for step, s in
                                                      seconds.items()))  # fmt: skip
        outcomes: list[BatchOutcome] = []
        writer = RefineWriter(settings, on_batch=outcomes.append, app_id=app_id, newest_us={},
                              materialize=False)  # fmt: skip
        writer(batch, 0)
        (outcome,) = outcomes
        outcome.seconds.update(seconds)
        return outcome
