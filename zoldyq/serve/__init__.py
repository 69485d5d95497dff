"""Process wiring: the launcher, the gunicorn config and worker class."""
