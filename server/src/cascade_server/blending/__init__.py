"""Blending: filters, caps, paging and the Recommend orchestration."""
