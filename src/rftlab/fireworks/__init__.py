"""The wire: Fireworks' REST contract (states, enums, defaults, bounds), the httpx client, credentials, redaction."""
