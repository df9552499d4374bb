"""Lyric Composer

Writes lyrics that fit the requested genre, mood and the current trends.
"""

AGENT_ID = "agent_2"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
