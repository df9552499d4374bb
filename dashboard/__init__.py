"""The dashboard's modules, in groups; the four files of the design card (app.py, data_providers.py,
database.py, data_loader.py) stay at the top of the checkout.

- web/: the HTTP side: the endpoint table, views, validation, errors, keys, headers, caches, OpenAPI,
  the stream, /metrics and the probes, gunicorn's worker.
- local/: reading an orchestrator folder: files, logs, runs, agents, alerts (LocalDataProvider).
- cloud/: proxying a remote instance of this API (CloudDataProvider): client, retries, breaker, cache.
- store/: what SQLite keeps: history, events, storyboard projects, migrations.
- training/: starting and stopping runs from the dashboard, and the wrapper that records their end.
- ops/: background work in one process at a time: the ingester, the health sampler, locks, memory."""
