# The part of gunicorn that zoldyq.serve subclasses (gunicorn ships no types).
