"""Benchmarks of snfs against curl (the wire's limit) and rclone mount: `python -m bench`."""
