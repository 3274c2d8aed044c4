"""Imports every protocol adapter so that it registers its type with the engine."""

from radbridge.interfaces import directory_source, file_destination, http_destination

__all__ = ["directory_source", "file_destination", "http_destination"]
