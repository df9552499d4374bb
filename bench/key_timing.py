"""How long a wrong API key takes to refuse, by where it differs from a real one (docs/access.md#keys).

A real SQLite file with one named key and API_KEY set; the app's own check (auth.Gate.identify: API_KEY and
the named keys, through the KeyRing) is asked --tries times for each of these wrong keys, in turn:

- `first`: the real key with its first character changed (not our key form: compared against a dummy hash);
- `id`: its key id's first character changed (no such row: the dummy hash);
- `secret`: its secret's first character changed (the row is found, its hash differs);
- `last`: its last character changed (the row is found, its hash differs);
- `api_key_first` / `api_key_last`: API_KEY with its first or last character changed.

Prints, per series, the median in microseconds, the interquartile range and the noise of the same run (the
difference between the medians of its even and odd tries), then the differences of the medians. A difference
well inside the noise is what constant time looks like on a shared machine. Timings are never asserted in
tests (machines are noisy); run it by hand: `.venv/bin/python bench/key_timing.py`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import database  # noqa: E402
from dashboard.store import api_keys  # noqa: E402
from dashboard.web.auth import Gate  # noqa: E402

API_KEY = "bench-admin-key-5b2e8d1f0c7a4963"


def changed(key: str, index: int) -> str:
    """`key` with the character at `index` replaced by another of the same kind."""
    index %= len(key)
    other = "b" if key[index] == "a" else "a"
    return key[:index] + other + key[index + 1:]


def series_stats(ns: list[int]) -> dict:
    """Median and interquartile range (µs) of a series, and its noise: |median(even tries) - median(odd)|."""
    q = statistics.quantiles(ns, n=4)
    return {"median": statistics.median(ns) / 1000, "iqr": (q[2] - q[0]) / 1000,
            "noise": abs(statistics.median(ns[::2]) - statistics.median(ns[1::2])) / 1000}


def measure(tries: int) -> dict[str, dict]:
    """Time gate.identify on each wrong key `tries` times, the series interleaved so drift hits all alike."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db.sqlite"
        database.migrate(db)
        with closing(database.connect(db)) as conn:
            key = api_keys.create(conn, "bench", "read")
        gate = Gate({"API_KEY": API_KEY}, api_keys.KeyRing(db, flush_seconds=3600))
        id_at = len(api_keys.PREFIX)
        wrong = {"first": changed(key, 0), "id": changed(key, id_at),
                 "secret": changed(key, id_at + api_keys.KEY_ID_CHARS + 1), "last": changed(key, -1),
                 "api_key_first": changed(API_KEY, 0), "api_key_last": changed(API_KEY, -1)}
        assert gate.identify(key) is not None and all(gate.identify(w) is None for w in wrong.values())
        timings: dict[str, list[int]] = {name: [] for name in wrong}
        for _ in range(100):  # warm up: the thread's connection, the rows in memory
            for w in wrong.values():
                gate.identify(w)
        for _ in range(tries):
            for name, w in wrong.items():
                started = time.perf_counter_ns()
                gate.identify(w)
                timings[name].append(time.perf_counter_ns() - started)
    return {name: series_stats(ns) for name, ns in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=1000)
    args = parser.parse_args()
    results = measure(args.tries)
    print(f"{'wrong key differs in':<22}{'median µs':>10}{'IQR µs':>9}{'noise µs':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['median']:>10.2f}{r['iqr']:>9.2f}{r['noise']:>10.2f}")
    for a, b in (("first", "last"), ("id", "last"), ("secret", "last"), ("api_key_first", "api_key_last")):
        diff = results[a]["median"] - results[b]["median"]
        noise = max(results[a]["noise"], results[b]["noise"])
        print(f"{a} - {b}: {diff:+.2f} µs (the run's own noise: {noise:.2f} µs)")


if __name__ == "__main__":
    main()
