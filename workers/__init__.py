"""Process entry points: thin wiring, no logic."""
