"""Registries: the OCI distribution client, pull, push, login (docs/images.md, "Registries")."""
