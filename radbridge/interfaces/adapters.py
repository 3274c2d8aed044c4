"""Imports every adapter so that it registers its type with the engine."""

from radbridge.engine.registry import destination as registry_destination
from radbridge.interfaces import directory_source, file_destination, http_destination
from radbridge.interfaces.mllp import listener as mllp_listener
from radbridge.interfaces.mllp import sender as mllp_sender

__all__ = ["directory_source", "file_destination", "http_destination", "mllp_listener",
           "mllp_sender", "registry_destination"]
