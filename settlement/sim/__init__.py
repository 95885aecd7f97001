"""Traffic generator with bad actors, and the demo built on it."""
