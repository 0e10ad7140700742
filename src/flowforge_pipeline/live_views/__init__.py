"""Live views: the Materialize SQL of the production path and the command that applies it."""
