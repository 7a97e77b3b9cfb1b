"""The WebSocket gateway and the dashboard it serves (`[web]`)."""
