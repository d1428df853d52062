"""The scheduler's REST API (Starlette on uvicorn)."""
