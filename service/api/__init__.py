"""The FastAPI application: routes, middleware and startup."""
