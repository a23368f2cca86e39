"""The I/O shell over the Delta tables: delta-rs (``deltalake``) handles, read without Spark.

``DeltaReader`` follows one table's log (``update_incremental``) and reads files as polars
frames; ``HotFiles`` keeps the files of the newest partitions in memory and on each new
version reads only the files that were added, dropping those that were removed (MERGE and
OPTIMIZE rewrite files), so a refresh costs what changed, not the table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, DeltaProtocolError, TableNotFoundError

log = logging.getLogger(__name__)

PartitionFilter = list[tuple[str, str, Any]]


class StorageUnavailable(Exception):
    """The object store or the table's files could not be read (a retryable condition)."""


class TableUnreadable(Exception):
    """The table uses a Delta feature delta-rs cannot read (e.g. deletion vectors)."""


class DeltaReader:
    """One Delta table: its newest snapshot and reads with partition pruning."""

    def __init__(self, uri: str, storage_options: dict[str, str]) -> None:
        self.uri = uri
        self._storage_options = storage_options
        self._table: DeltaTable | None = None

    def refresh(self) -> int | None:
        """Load the newest snapshot; its version, or None while the table does not exist."""
        try:
            if self._table is None:
                self._table = DeltaTable(self.uri, storage_options=self._storage_options)
            else:
                self._table.update_incremental()
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as error:
            raise StorageUnavailable(f"{self.uri}: {error}") from error
        return self._table.version()

    @property
    def table(self) -> DeltaTable:
        if self._table is None:
            raise StorageUnavailable(f"{self.uri}: not loaded yet")
        return self._table

    def dataset(self, partitions: PartitionFilter | None = None) -> pads.Dataset:
        try:
            return self.table.to_pyarrow_dataset(file_pruning_predicate=partitions or None)
        except DeltaProtocolError as error:
            raise TableUnreadable(f"{self.uri}: {error}") from error
        except (DeltaError, OSError) as error:
            raise StorageUnavailable(f"{self.uri}: {error}") from error

    def read(
        self, partitions: PartitionFilter | None = None, filters: pads.Expression | None = None
    ) -> pl.DataFrame:
        """Rows of the files in ``partitions`` matching ``filters`` (pruned reads for history)."""
        dataset = self.dataset(partitions)
        try:
            return _frame(dataset.to_table(filter=filters))
        except OSError as error:
            raise StorageUnavailable(f"{self.uri}: {error}") from error

    def newest_partition(self, column: str) -> date | None:
        """The greatest value of a date partition column among the live files."""
        actions = pa.table(self.table.get_add_actions(flatten=True))
        name = f"partition.{column}"
        if actions.num_rows == 0 or name not in actions.column_names:
            return None
        newest = pa.compute.max(actions[name]).as_py()
        return newest if isinstance(newest, date) else date.fromisoformat(str(newest))

    def recent_files(self, days: int, time_column: str) -> tuple[date | None, list[str]]:
        """The first date of the newest ``days`` trade_date partitions, and their live files
        with the newest data first (by each file's max ``time_column`` statistic); one read of
        the snapshot's file list."""
        actions = _frame(pa.table(self.table.get_add_actions(flatten=True)))
        if actions.is_empty() or "partition.trade_date" not in actions.columns:
            return None, []
        dates = actions["partition.trade_date"].cast(pl.Date)
        newest = dates.max()
        start = window_start(newest if isinstance(newest, date) else None, days)
        if start is None:
            return None, []
        recent = actions.filter(dates >= start)
        by_recency = recent.sort(f"max.{time_column}", descending=True, nulls_last=True)
        return start, by_recency["path"].to_list()


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def window_start(newest: date | None, days: int) -> date | None:
    """First partition date of a hot window of ``days`` ending at the newest partition."""
    return None if newest is None else newest - timedelta(days=days - 1)


@dataclass
class HotFiles:
    """The files of one table's newest ``days`` date partitions, in memory."""

    reader: DeltaReader
    days: int
    partition_column: str = "trade_date"
    version: int | None = None
    start: date | None = None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    frame: pl.DataFrame | None = None

    def refresh(self) -> pl.DataFrame | None:
        """Follow the log; on a new version return the rows of the newly added files (None
        when nothing changed)."""
        version = self.reader.refresh()
        if version is None or version == self.version:
            return None
        start = window_start(self.reader.newest_partition(self.partition_column), self.days)
        partitions: PartitionFilter = (
            [(self.partition_column, ">=", start.isoformat())] if start else []
        )
        dataset = self.reader.dataset(partitions)
        fragments = {fragment.path: fragment for fragment in dataset.get_fragments()}
        added = [path for path in fragments if path not in self.frames]
        try:
            new_frames = {
                path: _frame(fragments[path].to_table(schema=dataset.schema)) for path in added
            }
        except OSError as error:
            raise StorageUnavailable(f"{self.reader.uri}: {error}") from error
        self.frames = {
            path: self.frames[path] if path in self.frames else new_frames[path]
            for path in fragments
        }
        self.frame = _concat(list(self.frames.values()), dataset.schema)
        self.version, self.start = version, start
        log.debug("%s v%s: %d files (+%d)", self.reader.uri, version, len(fragments), len(added))
        return _concat(list(new_frames.values()), dataset.schema)


def _concat(frames: Sequence[pl.DataFrame], schema: pa.Schema) -> pl.DataFrame:
    if not frames:
        return _frame(schema.empty_table())
    return pl.concat(frames, how="vertical_relaxed")
