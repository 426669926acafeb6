"""Alerts: rules (REST), their state across processes (Lua), and the alerts ingest evaluates them into."""
