"""Beat Architect

Builds the rhythm section: tempo, drum patterns and groove for each track.
"""

AGENT_ID = "agent_3"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
