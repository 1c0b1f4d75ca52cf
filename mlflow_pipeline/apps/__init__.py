"""Programs built on the engine: score, serve, simulate, reproduce, schedule."""
