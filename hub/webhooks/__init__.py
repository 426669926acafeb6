"""Durable, signed webhooks (API.md §6): the store, the matcher that turns stream entries into queued
deliveries, the durable queue, the senders, and the SSRF guard. ``service.Webhooks`` wires them per process."""
