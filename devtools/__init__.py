"""Development-only tools (fakes for local demos and tests). Never imported by the shop."""
