"""Mix Engineer

Balances, equalises and masters the stems into the final mix.
"""

AGENT_ID = "agent_7"


def run(context: dict) -> dict:
    """Return this agent's (simulated) contribution to a production run."""
    return {"agent": AGENT_ID, "status": "ok", "inputs": sorted(context)}
