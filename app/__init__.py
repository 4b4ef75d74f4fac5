"""Composition: settings, runtime (lifespan), ASGI app, auth, CLI. Nothing imports app."""
