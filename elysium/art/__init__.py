"""The product art: each piece drawn in a metal with a stone, served like a static file."""
