"""Postgres storage: tables, engine (embedded or external), repositories, bulk loads."""
