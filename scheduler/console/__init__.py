"""The operator console: server-rendered pages under /console on the scheduler's API port,
with the API's keys and scopes (read keys see, write keys act). See docs/console.md."""
