"""Process entry points of a checkout: thin wiring over ``zoldyq.serve.workers`` (not packaged)."""
