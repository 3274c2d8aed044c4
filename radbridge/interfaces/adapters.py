"""Imports every adapter so that it registers its type with the engine."""

from radbridge.engine.correlation import destination as correlation_destination
from radbridge.engine.inference_runs import destination as inference_destination
from radbridge.engine.qa import destination as qa_reports_destination
from radbridge.engine.qa import source as qa_monitor_source
from radbridge.engine.registry import destination as registry_destination
from radbridge.engine.results import destination as results_destination
from radbridge.interfaces import directory_source, file_destination, http_destination
from radbridge.interfaces.dicomweb import destination as stow_rs_destination
from radbridge.interfaces.dimse import retrieve_destination as dicom_retrieve_destination
from radbridge.interfaces.dimse import scp as dimse_scp
from radbridge.interfaces.dimse import store_destination as dimse_store_destination
from radbridge.interfaces.fhir import destination as fhir_destination
from radbridge.interfaces.mllp import listener as mllp_listener
from radbridge.interfaces.mllp import sender as mllp_sender

__all__ = ["correlation_destination", "dicom_retrieve_destination", "dimse_scp",
           "dimse_store_destination", "directory_source", "fhir_destination",
           "file_destination",
           "http_destination", "inference_destination", "mllp_listener", "mllp_sender",
           "qa_monitor_source", "qa_reports_destination", "registry_destination",
           "results_destination", "stow_rs_destination"]
