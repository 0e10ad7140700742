"""One client module per serving store, each reached by URL through its standard client."""
