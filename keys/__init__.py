"""API clients (tenants), their hashed API keys, and evaluation-key checks and fingerprints.

Above base only. Ending a client's sessions when it is disabled or its keys are rotated
crosses layers: that is in actions.services, with the clients' admin and the commands
disable_client, enable_client and rotate_client_keys (create_client and rotate_api_key stay here).
"""
