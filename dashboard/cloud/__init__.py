"""Proxying a remote instance of this API (CloudDataProvider): client, retries, breaker, cache."""
