"""The benchmark's baseline: a bare Flask app with one jsonify route, served like the dashboard.

`gunicorn --config gunicorn.conf.py bench.bare_app:app` (from the project folder): same workers,
threads and worker class as the dashboard, so the ratio dashboard/bare is the cost of our code.
"""
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    """A small JSON object, like the dashboard's smallest answers."""
    return jsonify({"status": "ok", "warnings": []})


@app.post("/api/storyboard/project/create")
def create():
    """The load test's write, bare: the JSON body parsed and answered, nothing stored (bench/load.py)."""
    return jsonify(request.get_json()), 201
