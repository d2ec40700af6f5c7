"""API clients (tenants), their hashed API keys, and evaluation-key checks and fingerprints.

Above base only. Ending a client's sessions when it is disabled or its keys are rotated
crosses layers: that is in actions.services.
"""
