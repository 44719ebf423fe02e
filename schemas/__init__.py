"""The event contract of polydub: envelopes, events, topics and status codes.

This package imports nothing else of polydub, so any producer or consumer can
depend on it alone.
"""
