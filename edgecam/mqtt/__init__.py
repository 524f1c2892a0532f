"""The broker side, the only place paho is imported: the publisher that drains the outbox, and the client."""
