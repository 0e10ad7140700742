"""flowforge-pipeline: the streaming and batch pipeline behind the FlowForge serving layer."""

__version__ = "0.1.0"
