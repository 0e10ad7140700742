"""The local stack: the component registry, process supervision, up/down/status."""
