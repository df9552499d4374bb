"""Background work done by one process at a time (ingester, health sampler), locks and memory tuning."""
