"""The command processor process: decides commands from Kafka and stores their events.

`handlers` decide one command with the domain against a `Chats` store (any: the event
store's cache in production, a dict in tests) and `People` (the user directory, or a
test's); `processor` groups a batch, saves it in one transaction, retries an
optimistic-concurrency conflict, and replies; `consumer` is the Kafka loop around it.
"""
