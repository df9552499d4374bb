"""CORS for /api/: the browsers of CORS_ORIGINS (exact strings) may call it; never credentials, never others.
A request without `Origin` (not a cross-origin browser call: curl, the page itself) gets no CORS headers."""
from __future__ import annotations

from flask import Flask, request
from flask_cors import CORS


def enable_cors(app: Flask) -> None:
    """Let the browsers of CORS_ORIGINS (exact strings) call /api/; never credentials, never others."""
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    if "*" not in origins:
        @app.after_request  # registered first, so it runs after flask-cors' own hook
        def exact_origins_only(response):
            # flask-cors compares origins case-insensitively; browsers send them lower-case, so an
            # origin that differs from the configured string in any way is refused.
            vary = response.headers.get("Vary", "")
            if "Origin" not in vary:
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            origin = request.headers.get("Origin")
            if origin is not None and origin not in origins:
                for header in [h for h in response.headers.keys() if h.lower().startswith("access-control-")]:
                    del response.headers[header]
            return response
    CORS(app, resources={r"/api/*": {"origins": "*" if "*" in origins else origins}},
         methods=["GET", "POST", "OPTIONS"], supports_credentials=False, always_send=False,
         expose_headers=["X-Data-Warnings", "Content-Disposition"], max_age=600)
