"""The write side, one subpackage per process: `gateway/`, `processor/`, `accounts/`.

`command` is the record on Kafka `parley.commands` that the gateway sends and the
processor decides; `ratelimit` is shared by the gateway and the accounts routes;
`service` is the commands service's app (accounts routes, the WebSocket gateway and the
web client) and `web_client` the browser client's files. May import `projections`,
`infra` and `domain`; never `queries` or `streams`.
"""
