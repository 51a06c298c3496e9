"""Local stand-ins for the outside services the app talks to over HTTP."""
