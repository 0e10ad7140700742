"""The serving-layer contract: catalog, DDL rendered from it, and the live check."""
