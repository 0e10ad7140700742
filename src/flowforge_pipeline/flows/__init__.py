"""The streaming dataflows (Bytewax), one module per flow, each exposing `flow`."""
