"""Operator tools above the services: the `ota` CLI, the demo, the supervisor, the fleet front-end."""
