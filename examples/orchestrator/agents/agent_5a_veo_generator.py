"""Veo Generator

Generates the music video clips that accompany a finished track.
"""

AGENT_ID = "agent_5a"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
