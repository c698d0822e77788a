"""``aegis bench``: ``runner`` (the client side, the measurement and its report) and ``server`` (the responder
process)."""
