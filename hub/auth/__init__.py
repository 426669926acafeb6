"""Authentication and authorization: credentials, JWTs, principals and roles."""
