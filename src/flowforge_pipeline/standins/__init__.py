"""Local stand-ins for each role, started by `up` when the role's URL is not set."""
