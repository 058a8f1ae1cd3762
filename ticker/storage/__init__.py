"""PostgreSQL adapters: schema migrations and the subscriptions table."""
