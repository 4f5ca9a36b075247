"""API keys, tenants and scopes: the authenticator (a cached key lookup) and the bind check
that refuses a public address with authentication off. May import store/; no web framework."""
