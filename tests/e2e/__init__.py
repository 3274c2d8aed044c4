"""End-to-end tests: real `radbridge run` processes, a real HTTP peer, real signals."""
