"""Synthetic market data: a seeded, replayable tape of trades and quotes for the pipeline.

The stream is a pure function of the seed, the settings and event time, so the same command
replays the same bytes whether it runs in real time, accelerated or as a backfill.
"""
