"""Access control for the HTTP API: who may call which route.

- `identity`: the roles (viewer, analyst, compliance, admin) and the caller's identity.
- `policy`: THE table, route by route, of the least role each needs.
- `tokens`: API tokens (made by `radbridge token create`, kept as digests).
- `oidc`: OIDC bearer JWTs from the site's identity provider.
- `authenticator`: one entry point for both kinds; `middleware`: the ASGI middleware
  that applies the policy to every request.
- `bootstrap`: what `radbridge run` sets up (the authenticator, the first admin token).
- `errors`: the exception tree.
"""
