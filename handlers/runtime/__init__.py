"""Plumbing shared by every handler: settings, errors, logs, object store, media I/O."""
