"""training_metrics.json of any size, read as a stream: each series' points one at a time, in file
order, in bounded memory (ijson's C parser), for the ingester. The request path keeps
data_loader.parse_training_metrics, which reads files up to its size cap whole."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import ijson
from ijson.common import ObjectBuilder

import data_loader as dl


class MetricsStream:
    """Iterate to get (series key, point or None for an entry without a valid timestamp); afterwards
    `complete` says whether the file was read to its end as valid JSON (a file being rewritten is not),
    and `problem` why not."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.complete = False
        self.problem: Optional[str] = None

    def __iter__(self) -> Iterator[tuple[str, Optional[dict]]]:
        fd, _stat, warnings = dl.open_regular(self.path)
        if fd is None:
            self.problem = "; ".join(warnings)
            return
        with open(fd, "rb") as handle:
            try:
                for key, entry in _items(ijson.parse(handle, use_float=True)):
                    yield key, dl.metric_point(entry)[0]
                self.complete = True
            except (ijson.JSONError, ValueError, OSError) as err:
                self.problem = f"{self.path.name}: unreadable JSON ({str(err).splitlines()[0]})"


def _items(events) -> Iterator[tuple[str, object]]:
    """(top-level key, each element of its list) from ijson parse events of a {key: [...]} document."""
    key = item = None
    builder: Optional[ObjectBuilder] = None
    for prefix, event, value in events:
        if builder is not None:
            builder.event(event, value)
            if prefix == item and event in ("end_map", "end_array"):
                yield key, builder.value
                builder = None
        elif prefix == "" and event == "map_key":
            key, item = value, f"{value}.item"
        elif prefix == item:
            if event in ("start_map", "start_array"):
                builder = ObjectBuilder()
                builder.event(event, value)
            else:
                yield key, value
