"""Training started and stopped from the dashboard, and the wrapper process that records its end."""
