"""Styles: the built-in presets (drawn by code) and catalogs of user styles."""
