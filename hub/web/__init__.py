"""The web dashboard served at ``/`` (routes.py; its browser code in static/)."""
