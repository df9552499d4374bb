"""Where every read comes from: one abstract contract, the providers beside it, a registry by name.

The providers live in their own modules (dashboard/local/provider.py, dashboard/cloud/provider.py); PROVIDERS names the module
and class of each, imported when ENVIRONMENT picks it, so a provider is added by a line here.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Iterator, Optional

from dashboard.contract import AckAlert, NewProject, Payload, StartTraining


class DataProvider(ABC):
    """The contract of every read the API serves; each returns a Payload(data, warnings).

    A method serves the row of endpoints.TABLE that names it: it takes the row's path parameters and query
    fields by name, then the validated body model (its last parameter) for a row with a body.
    """

    name = "abstract"
    reads_files = False  # True: the app runs the ingester, which records the files into SQLite

    @abstractmethod
    def dashboard_overview(self) -> Payload:
        """GET /api/dashboard/overview (contract.Overview)."""

    @abstractmethod
    def quick_stats(self) -> Payload:
        """GET /api/dashboard/quick-stats (contract.QuickStats)."""

    @abstractmethod
    def agents_status(self) -> Payload:
        """GET /api/agents/status (list of contract.AgentStatusRow)."""

    @abstractmethod
    def agent_detail(self, agent_id: str) -> Payload:
        """GET /api/agents/<agent_id> (contract.AgentDetail); ApiError 404 for an unknown agent."""

    @abstractmethod
    def agents_health(self) -> Payload:
        """GET /api/agents/health (contract.AgentsHealth)."""

    @abstractmethod
    def training_status(self) -> Payload:
        """GET /api/training/status (contract.TrainingStatus)."""

    @abstractmethod
    def training_history(self, days: int) -> Payload:
        """GET /api/training/history (list of contract.TrainingRun, newest first)."""

    @abstractmethod
    def training_run(self, run_id: str) -> Payload:
        """GET /api/training/runs/<run_id> (contract.TrainingRunRecord); 404 when unknown."""

    @abstractmethod
    def training_schedule(self) -> Payload:
        """GET /api/training/schedule (contract.TrainingSchedule)."""

    @abstractmethod
    def metrics_quality(self, days: int) -> Payload:
        """GET /api/metrics/quality (contract.MetricsQuality: {timestamps, system, <agent_id>...}, aligned)."""

    @abstractmethod
    def metric_history(self, metric_name: str, days: int) -> Payload:
        """GET /api/metrics/history/<metric_name> (contract.MetricHistory); 404 for an unknown metric."""

    @abstractmethod
    def metrics_comparison(self) -> Payload:
        """GET /api/metrics/comparison (list of contract.ComparisonRow, by rank)."""

    @abstractmethod
    def metrics_trends(self, days: int) -> Payload:
        """GET /api/metrics/trends (contract.Trends)."""

    @abstractmethod
    def system_health(self) -> Payload:
        """GET /api/system/health (contract.SystemHealth)."""

    @abstractmethod
    def health_history(self, hours: int) -> Payload:
        """GET /api/system/health/history (contract.HealthHistory): stored samples, oldest first."""

    @abstractmethod
    def recent_logs(self, limit: int, level: Optional[str]) -> Payload:
        """GET /api/system/logs/recent (list of contract.LogEvent, newest first)."""

    @abstractmethod
    def system_errors(self, limit: int) -> Payload:
        """GET /api/system/errors (ERROR/WARNING contract.LogEvent, newest first)."""

    @abstractmethod
    def system_alerts(self) -> Payload:
        """GET /api/system/alerts (list of contract.Alert)."""

    @abstractmethod
    def system_audit(self, limit: int) -> Payload:
        """GET /api/system/audit (list of contract.AuditEntry): this instance's own writes, from its database
        (a cloud proxy lists the writes made through it, not the upstream's)."""

    @abstractmethod
    def acknowledge_alert(self, alert_id: str, ack: AckAlert) -> Payload:
        """POST /api/system/alerts/<alert_id>/ack (contract.Alert, acknowledged); 404 when not active."""

    @abstractmethod
    def system_notifications(self, limit: int) -> Payload:
        """GET /api/system/notifications (list of contract.NotificationDelivery, newest first)."""

    @abstractmethod
    def test_notification(self) -> Payload:
        """POST /api/system/notifications/test (contract.NotificationTestQueued, answered 202)."""

    @abstractmethod
    def training_logs(self, limit: int, offset: int) -> Payload:
        """GET /api/logs/training (contract.TrainingLogs)."""

    @abstractmethod
    def export_logs(self, days: int) -> Iterator[dict]:
        """GET /api/logs/export: log events of the last `days`, oldest first, as contract.LogEvent dicts."""

    @abstractmethod
    def storyboard_projects(self, limit: int, offset: int) -> Payload:
        """GET /api/storyboard/projects (list of contract.ProjectSummary, newest first, a page of them)."""

    @abstractmethod
    def storyboard_project(self, project_id: str) -> Payload:
        """GET /api/storyboard/project/<project_id> (contract.Project); 404 when unknown."""

    @abstractmethod
    def create_storyboard_project(self, project: NewProject) -> Payload:
        """POST /api/storyboard/project/create (contract.Project, stored)."""

    @abstractmethod
    def source_status(self) -> str:
        """Whether the data source is readable: ok, degraded or error (for /api/status)."""

    @abstractmethod
    def start_training(self, options: StartTraining) -> Payload:
        """POST /api/training/start (contract.TrainingStarted, answered 202); ApiError 409 while a run goes."""

    @abstractmethod
    def stop_training(self) -> Payload:
        """POST /api/training/stop (contract.TrainingSession; an Answer of 202 while "stopping"); 409 when idle."""

    @abstractmethod
    def training_session(self, session_id: int) -> Payload:
        """GET /api/training/session/<session_id> (contract.TrainingSession); 404 when unknown."""


PROVIDERS: dict[str, str] = {"local": "dashboard.local.provider:LocalDataProvider", "cloud": "dashboard.cloud.provider:CloudDataProvider"}


class DataProviderFactory:
    """Picks the provider class registered under ENVIRONMENT's name."""

    @staticmethod
    def provider_class(environment: str) -> type[DataProvider]:
        """The class registered as `environment`; ValueError naming the choices otherwise."""
        where = PROVIDERS.get(environment)
        if where is None:
            raise ValueError(f"unknown ENVIRONMENT {environment!r} (choose from: {', '.join(sorted(PROVIDERS))})")
        module, _, name = where.partition(":")
        return getattr(importlib.import_module(module), name)

    @staticmethod
    def get_provider(environment: str, config: dict) -> DataProvider:
        """An instance of the provider named `environment`; ValueError naming the choices otherwise."""
        return DataProviderFactory.provider_class(environment)(config)
