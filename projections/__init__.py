"""The read model: its tables, and the code that applies events from the log to them.

Live: `projector` (per event) and `bulk` (per batch, the same results), `cache` (Redis),
`schema` (the tables), `directory` (users, written by the accounts application), `status`
(lag). Pure: `fold` (the oracle). `replay/` rebuilds them. May import `infra` and
`domain` only.
"""
