"""Releases: manifests with checksums, the registry in Postgres, atomic publish and swap."""
