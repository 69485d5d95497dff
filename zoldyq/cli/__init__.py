"""The ``zoldyq`` command line."""
