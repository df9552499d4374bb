"""Quality Critic

Scores every output against the quality rubric and flags weak spots.
"""

AGENT_ID = "agent_8"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
