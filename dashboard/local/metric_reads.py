"""The local provider's metric reads: quality per day (system and agents) over a window, one metric's points
(the database's overlaid by the metrics file), the agents' comparison table and the weekly trends."""
from __future__ import annotations

from datetime import datetime, timedelta

from dashboard.contract import Payload
from dashboard.local.agent_rows import agent_rows
from dashboard.local.analytics import natural_key, quality_trends, rank_desc
from dashboard.local.orchestrator_state import OrchestratorState
from dashboard.store import history_reads, history_store
from dashboard.web.errors import ApiError

# The warning of a large metrics file not yet wholly recorded: its metrics are not known yet, not unknown.
STILL_RECORDING = "its history is still being recorded"


class MetricReads:
    """A mixin of LocalDataProvider: quality series, metric history, comparison and trends."""

    def metrics_quality(self, days: int) -> Payload:
        s = self.state()
        return Payload(self._derived(s, ("quality", days), lambda: self._quality_series(s, days)), s.warnings)

    def _quality_series(self, s: OrchestratorState, days: int) -> dict:
        """Every day of the window, null where a series has no score that day."""
        window = self._window(s, days)
        series = {"system": self._daily(s, None, window[0])}
        series.update({agent_id: self._daily(s, agent_id, window[0]) for agent_id in self._history_agents(s, window[0])})
        data = {"timestamps": [d.isoformat() for d in window]}
        data.update({key: [values.get(d) for d in window] for key, values in series.items()})
        return data

    def metric_history(self, metric_name: str, days: int) -> Payload:
        s = self.state()
        points = self._derived(s, ("points", metric_name, days), lambda: self._metric_points(s, metric_name, days))
        return Payload({"metric": metric_name, "days": days, "points": points}, s.warnings)

    def _metric_points(self, s: OrchestratorState, metric_name: str, days: int) -> list[dict]:
        cutoff = datetime.combine(s.now.date() - timedelta(days=days - 1), datetime.min.time())
        points = self._from_db(s, lambda db: history_reads.metric_points(db, metric_name, s.iso(cutoff)),
                               key=("points", metric_name, cutoff))
        if metric_name in s.metrics and metric_name != "training_history":
            from_file = [{"timestamp": s.iso(p["timestamp"]), "agent": p.get("agent"),
                          "value": history_store.point_value(p)} for p in s.metrics[metric_name] if p["timestamp"] >= cutoff]
            by_time = {p["timestamp"]: p for p in points or []}
            by_time.update((p["timestamp"], p) for p in from_file)  # the file is the newest word
            points = sorted(by_time.values(), key=lambda p: p["timestamp"])
        if points is None:
            if any(STILL_RECORDING in w for w in s.warnings):
                return []  # not known yet: the warning says why
            # What could not be read may be why: say so with the 404.
            raise ApiError(404, f"unknown metric_name: {metric_name}", extra={"warnings": list(dict.fromkeys(s.warnings))})
        return points

    def metrics_comparison(self) -> Payload:
        s = self.state()
        rows = agent_rows(s, s.agent_ids)  # ranked among every agent; the listed ones shown
        ranks = rank_desc({r["id"]: r["quality_score"] for r in rows})
        table = [{"id": r["id"], "name": r["name"], "quality_score": r["quality_score"],
                  "processing_time_ms": r["processing_time_ms"], "improvement": r["improvement"],
                  "rank": ranks[r["id"]]} for r in rows[:len(s.listed_agent_ids)]]
        table.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, natural_key(r["id"])))
        return Payload(table, s.warnings)

    def metrics_trends(self, days: int) -> Payload:
        s = self.state()
        return Payload(self._derived(s, ("trends", days), lambda: self._trends(s, days)), s.warnings)

    def _trends(self, s: OrchestratorState, days: int) -> dict:
        lead = self._window(s, days + 6)  # six earlier days so the first average covers a full week
        system = self._daily(s, None, lead[0])
        agents = {agent_id: self._daily(s, agent_id, lead[0]) for agent_id in self._history_agents(s, lead[0])}
        return quality_trends(lead, days, system, agents)
