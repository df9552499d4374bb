"""Reading an orchestrator folder (LocalDataProvider): its files, logs, runs, agents and alerts."""
