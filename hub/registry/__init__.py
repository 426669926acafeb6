"""The registry stores: organizations, users, API keys, devices and provisioning, kept in Redis hashes."""
