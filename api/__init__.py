"""FastAPI application: the read API, auth and the transparency page."""
