"""API clients (tenants), their hashed API keys, and evaluation-key checks and fingerprints."""
