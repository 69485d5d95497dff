# The part of gunicorn that zoldyq.serve subclasses or runs (gunicorn ships no types).
SERVER_SOFTWARE: str
