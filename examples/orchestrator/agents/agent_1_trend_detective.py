"""Trend Detective

Finds rising music trends in charts, short-video sounds and listener feedback.
"""

AGENT_ID = "agent_1"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
