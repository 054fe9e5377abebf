"""Deployment for scale: the local stack (``infra.stack``) and, elsewhere, container and cluster files."""
