"""The catalog domain: items, users and engagement events, validated and stored in Postgres."""
