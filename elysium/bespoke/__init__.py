"""Bespoke requests: the shopper's side."""
