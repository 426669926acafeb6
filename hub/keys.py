"""Every Redis key telehub uses, in one place.

Keys of one organization share the hash tag ``{org_id}`` so that they live in one Redis Cluster slot and
can be read and written together (multi-key transactions, Lua). Global lookups (by email, by credential
digest, by registration token) are single-key reads and carry no tag.
"""

from __future__ import annotations

PREFIX = "th"

# Global keys.
ORGS = f"{PREFIX}:orgs"  # set of organization ids


def org(org_id: str) -> str:
    """Hash: id, name, created_at."""
    return f"{PREFIX}:{{{org_id}}}:org"


def email_index(email: str) -> str:
    """String: '<org_id> <user_id>' for the user with this (lower-cased) email."""
    return f"{PREFIX}:email:{email}"


def api_key_by_digest(digest: str) -> str:
    """Hash: id, org_id, role, name: the API key whose secret has this SHA-256 digest."""
    return f"{PREFIX}:apikey:{digest}"


def device_key_by_digest(digest: str) -> str:
    """Hash: org_id, device_id: the device key whose secret has this digest."""
    return f"{PREFIX}:devkey:{digest}"


def registration_token(digest: str) -> str:
    """Hash: org_id, device_id, device_name, type, expires_at (ms), used (0|1), used_at (ms)."""
    return f"{PREFIX}:regtoken:{digest}"


def rate_bucket(credential: str) -> str:
    """Hash: tokens, ts: the token bucket of one credential or IP."""
    return f"{PREFIX}:rate:{credential}"


def login_failures(kind: str, value: str) -> str:
    """Counter of failed logins for one email or IP in the current window."""
    return f"{PREFIX}:loginfail:{kind}:{value}"


# Per-organization keys.


def users(org_id: str) -> str:
    """Sorted set: user ids by creation time (ms)."""
    return f"{PREFIX}:{{{org_id}}}:users"


def user(org_id: str, user_id: str) -> str:
    """Hash: id, org_id, email, role, password_hash, created_at."""
    return f"{PREFIX}:{{{org_id}}}:user:{user_id}"


def api_keys(org_id: str) -> str:
    """Sorted set: API key ids by creation time (ms)."""
    return f"{PREFIX}:{{{org_id}}}:apikeys"


def api_key(org_id: str, key_id: str) -> str:
    """Hash: id, name, role, digest, prefix, created_at."""
    return f"{PREFIX}:{{{org_id}}}:apikey:{key_id}"


def devices(org_id: str) -> str:
    """Sorted set: device ids by creation number (see device_sequence)."""
    return f"{PREFIX}:{{{org_id}}}:devices"


def device(org_id: str, device_id: str) -> str:
    """Hash: the device record (JSON-encoded metadata, tags, location), ``seq`` (creation number), ``key_digest``.

    ``status`` (online|offline) and ``last_seen`` (epoch ms, or empty) are the fields ingest updates.
    """
    return f"{PREFIX}:{{{org_id}}}:device:{device_id}"


def device_sequence(org_id: str) -> str:
    """Counter: the creation number of the org's last device (the score of the device indexes)."""
    return f"{PREFIX}:{{{org_id}}}:devseq"


def devices_by_type(org_id: str, device_type: str) -> str:
    """Sorted set: ids of the devices of one type, by creation number."""
    return f"{PREFIX}:{{{org_id}}}:devtype:{device_type}"


def idempotency(org_id: str, principal_id: str, key: str) -> str:
    """String: the first reply to a request with this Idempotency-Key, kept 24 h."""
    return f"{PREFIX}:{{{org_id}}}:idem:{principal_id}:{key}"


# Channels of Redis pub/sub for control messages between processes.
CONTROL_CHANNEL = f"{PREFIX}:control"


# Commands (hub.commands.store).


def command(org_id: str, command_id: str) -> str:
    """Hash: one command."""
    return f"{PREFIX}:{{{org_id}}}:cmd:{command_id}"


def device_command_index(org_id: str, device_id: str) -> str:
    """Sorted set: every command of the device, by creation sequence."""
    return f"{PREFIX}:{{{org_id}}}:cmds:{device_id}"


def command_queue(org_id: str, device_id: str) -> str:
    """Sorted set: the device's queued commands, by creation sequence."""
    return f"{PREFIX}:{{{org_id}}}:cmdq:{device_id}"


def command_sequence(org_id: str) -> str:
    """Counter: the organization's command creation sequence."""
    return f"{PREFIX}:{{{org_id}}}:cmdseq"


# Webhooks (hub.webhooks). Global: the set of organizations that have webhooks. The delivery queue, the retry
# schedule and the delivery records share the hash tag {webhooks}: one slot, so one script settles an attempt.
WEBHOOK_ORGS = f"{PREFIX}:webhook-orgs"
WEBHOOK_QUEUE = f"{PREFIX}:{{webhooks}}:queue"  # stream: d delivery id; consumer group 'senders'
WEBHOOK_RETRIES = f"{PREFIX}:{{webhooks}}:retry"  # sorted set: delivery ids by the ms they are due


def webhook_delivery(delivery_id: str) -> str:
    """Hash: org, webhook, type, event, body, attempts, state (pending|delivered|failed|dropped)."""
    return f"{PREFIX}:{{webhooks}}:delivery:{delivery_id}"


def webhook(org_id: str, webhook_id: str) -> str:
    """Hash: id, url, events (comma list), secret, created_at, created_ms."""
    return f"{PREFIX}:{{{org_id}}}:webhook:{webhook_id}"


def webhooks(org_id: str) -> str:
    """Sorted set: webhook ids by creation time (ms)."""
    return f"{PREFIX}:{{{org_id}}}:webhooks"


def webhook_log(org_id: str, webhook_id: str) -> str:
    """Stream: the webhook's delivery attempts (j: the attempt as GET /webhooks/{id}/deliveries shows it)."""
    return f"{PREFIX}:{{{org_id}}}:whlog:{webhook_id}"


def webhook_reader(org_id: str) -> str:
    """String with a TTL: the process that reads the organization's streams for webhooks (a lease)."""
    return f"{PREFIX}:{{{org_id}}}:webhook-reader"


# Alerts (hub.alerts). The org's alerts stream (the `alerts` channel) is hub.fanout.channels.org_alerts.


def alert_rules(org_id: str) -> str:
    """Hash: rule id -> the rule as JSON, as the API shows it."""
    return f"{PREFIX}:{{{org_id}}}:alert-rules"


def alert_rule_order(org_id: str) -> str:
    """Sorted set: rule ids by creation (the rules version at creation)."""
    return f"{PREFIX}:{{{org_id}}}:alert-rules:order"


def alert_rules_version(org_id: str) -> str:
    """Counter: moves with every rule created or deleted; processes re-read the rules when it has moved."""
    return f"{PREFIX}:{{{org_id}}}:alert-rules:version"


def alert_state(org_id: str, rule_id: str) -> str:
    """Hash: device id -> '<pending since ms>,<open alert id>,<newest ts evaluated>' once the rule's condition
    has held on the device (both of the first empty when idle again); no field before."""
    return f"{PREFIX}:{{{org_id}}}:alert-state:{rule_id}"


def alert(org_id: str, alert_id: str) -> str:
    """Hash: one alert."""
    return f"{PREFIX}:{{{org_id}}}:alert:{alert_id}"


def alert_index(org_id: str, status: str = "all") -> str:
    """Sorted set: alert ids by creation sequence; every alert (``all``) or those in one status."""
    return f"{PREFIX}:{{{org_id}}}:alert-index:{status}"


def alert_sequence(org_id: str) -> str:
    """Counter: the organization's alert creation sequence."""
    return f"{PREFIX}:{{{org_id}}}:alert-seq"
