"""The base layer: what every app uses, importing no app of the project.

The audit log (its model keeps the app label ``ops``), the error format, env helpers and
data folders, the OpenAPI schema, stream and temp-folder helpers, input rules, admin
helpers, blob storage, upload spooling, the Redis client, metric definitions, security
middleware, database roles and the ops commands (audit export and checks, TOTP, grants).
"""
