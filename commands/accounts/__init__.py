"""Accounts: registration, login, tokens, profile and privacy over HTTP.

The accounts application (event-sourced users and handle claims), the routes of
`/v1/auth` and `/v1/me`, and what they share (`access`: stores, tokens, rate limits).
"""
