"""Local stack: start, stop and check the real services on 127.0.0.1."""
