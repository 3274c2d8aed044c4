"""Channel files: every problem reported with its file, line, field path and what was expected.

Each golden case is a small broken channel written as YAML text; the line numbers in
the assertions count from the first line of that text (the texts start right after
the opening quotes, so line 1 is `name: ...`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radbridge.channels import DEFAULT_DIR
from radbridge.engine.config import FileDestination, HttpDestination
from radbridge.engine.config_loader import (
    channel_files,
    load_channel_files,
    load_channel_text,
    load_channels,
)
from radbridge.errors import ConfigError, ConfigIssue

VALID = """\
name: alpha
source:
  type: http
destinations:
  - name: archive
    type: file
    directory: outbox/alpha
"""

RECEIVER = """\
name: receiver
source: {type: channel}
destinations: [{name: discard, type: "null"}]
"""


def issues_in(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    """The issues `text` raises, checked as a file of its own named 'c.yaml'."""
    with pytest.raises(ConfigError) as caught:
        load_channel_text(text, "c.yaml", env={} if env is None else env)
    return caught.value.issues


def where(issues: list[ConfigIssue]) -> list[tuple[int | None, str]]:
    return [(issue.line, issue.path) for issue in issues]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- valid files ---------------------------------------------------------------------


def test_valid_channel_loads() -> None:
    [channel] = load_channel_text(VALID, "c.yaml", env={})
    assert channel.name == "alpha"
    destination = channel.destination("archive")
    assert isinstance(destination, FileDestination)
    assert destination.directory == "outbox/alpha"


def test_several_channels_in_one_file_as_yaml_documents() -> None:
    channels = load_channel_text(VALID + "---\n" + RECEIVER + "---\n", "c.yaml", env={})
    assert [channel.name for channel in channels] == ["alpha", "receiver"]


def test_shipped_default_channels_validate() -> None:
    loaded = load_channel_files([DEFAULT_DIR], env={})
    assert sorted(channel.config.name for channel in loaded) == [
        "ai-results", "dicom-in", "dicomweb-in", "drop-folder", "ehr-fhir", "ehr-reports",
        "hl7-in", "inbox", "inference-done", "pacs-out", "ris-oru", "ris-priority",
        "study-ready"]
    by_name = {channel.config.name: channel.config for channel in loaded}
    assert by_name["inbox"].source.type == "http"
    assert by_name["drop-folder"].source.type == "directory"
    hl7_in = by_name.pop("hl7-in")
    assert (hl7_in.source.type, hl7_in.source.port) == ("mllp", 2575)  # type: ignore[union-attr]
    assert hl7_in.destination("registry").queue.ordering_key == "patient_id"
    dicom_in = by_name.pop("dicom-in")
    assert (dicom_in.source.type, dicom_in.source.port) == ("dimse", 11112)  # type: ignore[union-attr]
    assert dicom_in.assembly is not None and dicom_in.assembly.ready_channel == "study-ready"
    assert by_name.pop("dicomweb-in").source.type == "stow-rs"
    assert by_name.pop("study-ready").source.type == "channel"
    outputs = {"ris-priority": "outbox/ris", "ris-oru": "outbox/ris", "ehr-fhir": "outbox/ehr",
               "pacs-out": "outbox/pacs"}
    for name, folder in outputs.items():
        written = by_name.pop(name).destinations[0]
        assert isinstance(written, FileDestination) and written.directory == folder
    assert by_name.pop("ai-results").source.type == "channel"
    assert by_name.pop("ehr-reports").destination("qa").type == "qa-reports"
    for config in by_name.values():
        archive = config.destination("archive")
        assert isinstance(archive, FileDestination)
        assert archive.directory == f"outbox/{config.name}"


def test_loaded_channel_remembers_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "two.yaml", VALID + "---\n" + RECEIVER)
    loaded = load_channel_files([path], env={})
    assert [(item.file, item.line) for item in loaded] == [(str(path), 1), (str(path), 9)]


def test_directory_takes_yaml_and_yml_sorted_not_recursive(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", RECEIVER)
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "notes.txt", "not a channel")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "c.yaml", "broken: [")
    files, issues = channel_files([tmp_path, tmp_path / "a.yaml"])
    assert [file.name for file in files] == ["a.yaml", "b.yml"]
    assert issues == []
    assert [c.name for c in load_channels([tmp_path], env={})] == ["alpha", "receiver"]


# --- one file, one problem -----------------------------------------------------------


def test_unknown_key_points_at_the_key_and_lists_allowed_keys() -> None:
    issues = issues_in("""\
name: alpha
source:
  type: http
destinations:
  - name: archive
    type: file
    directry: outbox
""")
    # directory is then also missing: reported at the item's first line
    assert where(issues) == [(5, "destinations[0].directory"), (7, "destinations[0].directry")]
    assert issues[1].message == (
        "unknown key 'directry'; expected one of: directory, filename, filter, name, queue,"
        " type (did you mean 'directory'?)"
    )


def test_unknown_key_lists_aliases() -> None:
    issues = issues_in("""\
name: alpha
source: {type: http}
filter:
  rules:
    - field: content
      equals: x
      equal: y
destinations: [{name: a, type: "null"}]
""")
    assert where(issues) == [(7, "filter.rules[0].equal")]
    assert issues[0].message.startswith(
        "unknown key 'equal'; expected one of: contains, equals, exists, field, in, matches,"
        " negate"
    )


def test_missing_key_points_at_the_parent_mapping() -> None:
    issues = issues_in("""\
name: alpha
source:
  type: http
destinations:
  - name: archive
    type: file
""")
    assert [(i.line, i.path, i.message) for i in issues] == [
        (5, "destinations[0].directory", "required"),
    ]


def test_missing_top_level_key_points_at_the_document() -> None:
    issues = issues_in("""\
name: alpha
destinations: [{name: a, type: "null"}]
""")
    assert [(i.line, i.path, i.message) for i in issues] == [(1, "source", "required")]


def test_unknown_type_names_the_types_from_the_models() -> None:
    issues = issues_in("""\
name: alpha
source: {type: http}
destinations:
  - name: archive
    type: fiel
""")
    assert [(i.line, i.path, i.message) for i in issues] == [
        (5, "destinations[0].type",
         "unknown type 'fiel'; expected one of: null, file, http, channel, mllp, registry, dimse, "
         "stow-rs, dicom-retrieve, correlation, inference, fhir, results, qa-reports"
         " (did you mean 'file'?)"),
    ]


def test_unknown_source_type() -> None:
    [issue] = issues_in("""\
name: alpha
source:
  type: mlp
destinations: [{name: a, type: "null"}]
""")
    assert (issue.line, issue.path) == (3, "source.type")
    assert issue.message == ("unknown type 'mlp'; expected one of: http, directory, channel,"
                             " mllp, dimse, stow-rs, qa-monitor, alerts (did you mean 'mllp'?)")


def test_missing_type() -> None:
    [issue] = issues_in("""\
name: alpha
source: {type: http}
destinations:
  - name: archive
    directory: out
""")
    assert (issue.line, issue.path) == (4, "destinations[0].type")
    assert issue.message == ("required; expected one of: null, file, http, channel, mllp,"
                             " registry, dimse, stow-rs, dicom-retrieve, correlation,"
                             " inference, fhir, results, qa-reports")


def test_bare_null_type_means_the_null_destination() -> None:
    [channel] = load_channel_text("""\
name: alpha
source: {type: http}
destinations:
  - {name: archive, type: null}
""", env={})
    assert channel.destinations[0].type == "null"


def test_bad_value_says_what_was_expected_and_what_was_given() -> None:
    [issue] = issues_in("""\
name: alpha
source: {type: http}
destinations:
  - name: archive
    type: file
    directory: out
    queue:
      max_attempts: 0
""")
    assert (issue.line, issue.path) == (8, "destinations[0].queue.max_attempts")
    assert issue.message == "Input should be greater than or equal to 1; got 0"
    assert str(issue) == (
        "c.yaml:8: destinations[0].queue.max_attempts:"
        " Input should be greater than or equal to 1; got 0"
    )


def test_tag_and_field_of_the_same_name_keep_the_field() -> None:
    # pydantic's loc is ('destinations', 0, 'channel', 'channel'): tag, then field.
    [issue] = issues_in("""\
name: alpha
source: {type: http}
destinations:
  - name: next
    type: channel
    channel: [not, a, name]
""")
    assert (issue.line, issue.path) == (6, "destinations[0].channel")
    assert issue.message == "Input should be a valid string"


def test_bad_name_pattern_and_long_value_shortened() -> None:
    [issue] = issues_in(f"""\
name: {"Alpha" * 20}
source: {{type: http}}
destinations: [{{name: a, type: "null"}}]
""")
    assert (issue.line, issue.path) == (1, "name")
    assert issue.message.startswith("expected lower-case letters, digits, '-' and '_'")
    assert issue.message.endswith("; got 'AlphaAlphaAlphaAlphaAlphaAlphaAlphaA...")


def test_not_a_mapping_where_one_is_expected() -> None:
    [issue] = issues_in("""\
name: alpha
source: http
destinations: [{name: a, type: "null"}]
""")
    assert (issue.line, issue.path) == (2, "source")
    assert issue.message == "expected a mapping; got 'http'"


def test_duplicate_destination_names() -> None:
    [issue] = issues_in("""\
name: alpha
source: {type: http}
destinations:
  - {name: archive, type: "null"}
  - {name: archive, type: "null"}
""")
    assert (issue.line, issue.path) == (3, "destinations")
    assert issue.message == "destination name 'archive' is used twice"


def test_duplicate_yaml_key() -> None:
    issues = issues_in("""\
name: alpha
source: {type: http}
destinations: [{name: a, type: "null"}]
name: beta
""")
    assert [(i.line, i.path, i.message) for i in issues] == [
        (4, "", "key 'name' appears twice in one mapping (first on line 1)"),
    ]


def test_yaml_syntax_error_has_its_line() -> None:
    [issue] = issues_in("""\
name: alpha
source: {type: http
destinations: [{name: a, type: "null"}]
""")
    assert issue.line == 3
    assert issue.path == ""
    assert issue.message.startswith("invalid YAML: ")


def test_yaml_tab_indentation_error() -> None:
    [issue] = issues_in("name: alpha\nsource:\n\ttype: http\n")
    assert issue.line == 3
    assert issue.message.startswith("invalid YAML: ")


def test_empty_file_and_comment_only_file() -> None:
    for text in ("", "# nothing here\n", "---\n"):
        assert [(i.line, i.message) for i in issues_in(text)] == [
            (1, "empty file; expected a channel mapping")
        ]


def test_top_level_not_a_mapping() -> None:
    [issue] = issues_in("- name: alpha\n")
    assert (issue.line, issue.path) == (1, "")
    assert issue.message == "expected a channel mapping (name, source, destinations), got a list"


# --- environment substitution --------------------------------------------------------


ENV_TEXT = """\
name: alpha
source: {type: http}
destinations:
  - name: upstream
    type: http
    url: ${UPSTREAM_URL}
    headers:
      Authorization: "Bearer ${TOKEN}"
      X-Site: ${SITE:-main}
      X-Literal: $${NOT_A_VARIABLE}
"""


def test_env_variables_are_substituted() -> None:
    env = {"UPSTREAM_URL": "https://ehr.example/fhir", "TOKEN": "s3cret"}
    [channel] = load_channel_text(ENV_TEXT, "c.yaml", env=env)
    destination = channel.destination("upstream")
    assert isinstance(destination, HttpDestination)
    assert destination.url == "https://ehr.example/fhir"
    assert destination.headers == {
        "Authorization": "Bearer s3cret",
        "X-Site": "main",
        "X-Literal": "${NOT_A_VARIABLE}",
    }


def test_default_is_used_when_the_variable_is_empty() -> None:
    env = {"UPSTREAM_URL": "https://ehr.example/", "TOKEN": "t", "SITE": ""}
    [channel] = load_channel_text(ENV_TEXT, "c.yaml", env=env)
    destination = channel.destination("upstream")
    assert isinstance(destination, HttpDestination)
    assert destination.headers["X-Site"] == "main"


def test_unset_variable_is_reported_with_file_and_line() -> None:
    issues = issues_in(ENV_TEXT, env={"TOKEN": "t"})
    # only the unset variable: the url left empty is not reported a second time
    assert [(i.file, i.line, i.path) for i in issues] == [("c.yaml", 6, "")]
    assert issues[0].message.startswith("environment variable UPSTREAM_URL is not set")


def test_substituted_value_is_never_printed() -> None:
    issues = issues_in(ENV_TEXT, env={"UPSTREAM_URL": "ftp://hunter2@ehr", "TOKEN": "t"})
    [issue] = issues
    assert (issue.line, issue.path) == (6, "destinations[0].url")
    assert "hunter2" not in str(issue)
    assert issue.message == (
        "expected an http:// or https:// URL; got the value of ${UPSTREAM_URL} (not shown)"
    )


def test_substituted_value_is_blanked_out_of_validator_messages() -> None:
    [issue] = issues_in("""\
name: alpha
source:
  type: http
  max_size: ${MAX_SIZE}
destinations: [{name: a, type: "null"}]
""", env={"MAX_SIZE": "lots-of-secret"})
    assert (issue.line, issue.path) == (4, "source.max_size")
    assert "lots-of-secret" not in issue.message


def test_malformed_reference_is_reported() -> None:
    [issue] = issues_in("""\
name: alpha
source: {type: http}
description: costs ${1 dollar}
destinations: [{name: a, type: "null"}]
""")
    assert issue.line == 3
    assert issue.message.startswith("malformed '${'")


# --- checks across files -------------------------------------------------------------


def test_duplicate_channel_names_across_files_name_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", "# the same name again\n" + VALID)
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path], env={})
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.path) == (str(second), 2, "name")
    assert issue.message == f"channel 'alpha' is defined twice; first in {first}:1"


def test_channel_destination_to_a_missing_channel(tmp_path: Path) -> None:
    write(tmp_path, "receiver.yaml", RECEIVER)
    path = write(tmp_path, "sender.yaml", """\
name: sender
source: {type: http}
destinations:
  - name: next
    type: channel
    channel: recever
""")
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path], env={})
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.path) == (str(path), 6, "destinations[0].channel")
    assert issue.message == (
        "no channel named 'recever'; expected one of the channels with source type"
        " 'channel': receiver"
    )


def test_study_assembly_announces_to_a_channel_that_exists(tmp_path: Path) -> None:
    write(tmp_path, "receiver.yaml", RECEIVER)
    path = write(tmp_path, "dicom.yaml", """\
name: dicom
source: {type: dimse, port: 11112}
assembly:
  ready_channel: reciever
  quiet_period: {default: 20s, CT: 1m}
destinations: [{name: a, type: "null"}]
""")
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path], env={})
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.path) == (str(path), 4, "assembly.ready_channel")
    assert issue.message.startswith("no channel named 'reciever'")


def test_study_assembly_needs_a_default_quiet_period(tmp_path: Path) -> None:
    write(tmp_path, "receiver.yaml", RECEIVER)
    path = write(tmp_path, "dicom.yaml", """\
name: dicom
source: {type: dimse}
assembly: {ready_channel: receiver, quiet_period: {CT: 1m}}
destinations: [{name: a, type: "null"}]
""")
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path], env={})
    [issue] = caught.value.issues
    assert (issue.file, issue.line) == (str(path), 3)
    assert "expected a 'default' entry" in issue.message


def test_channel_destination_needs_a_channel_source(tmp_path: Path) -> None:
    write(tmp_path, "alpha.yaml", VALID)
    write(tmp_path, "sender.yaml", """\
name: sender
source: {type: http}
destinations: [{name: next, type: channel, channel: alpha}]
""")
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path], env={})
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (3, "destinations[0].channel")
    assert issue.message == (
        "channel 'alpha' has source type 'http'; expected a channel whose source type is"
        " 'channel'"
    )


def test_channel_destination_to_a_channel_source_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "receiver.yaml", RECEIVER)
    write(tmp_path, "sender.yaml", """\
name: sender
source: {type: http}
destinations: [{name: next, type: channel, channel: receiver}]
""")
    assert [c.name for c in load_channels([tmp_path], env={})] == ["receiver", "sender"]


def test_unknown_mapping_name() -> None:
    issues = issues_in("""\
name: alpha
source: {type: http}
transformers:
  - text.strp
  - name: text.normalise_newlines
    options: {newline: "\\r"}
destinations: [{name: a, type: "null"}]
""")
    assert where(issues) == [(4, "transformers[0]"), (5, "transformers[1].name")]
    assert issues[0].message == (
        "unknown mapping 'text.strp'; expected one of: dicom.deidentify, fhir.bundle, "
        "hl7.oru_r01,"
        " hl7.worklist_priority, json.extract, text.normalize_newlines, text.strip"
        " (did you mean 'text.strip'?)"
    )


def test_dotted_paths_must_import_and_be_callable() -> None:
    issues = issues_in("""\
name: alpha
source: {type: http}
filter:
  function: radbridge_no_such_module.rules:keep
transformers:
  - os.path:no_such_function
  - function: os.path:sep
  - function: os.path:basename
destinations:
  - name: a
    type: "null"
    filter: {function: "radbridge.mappings.text:strip"}
""")
    assert [(i.line, i.path, i.message) for i in issues] == [
        (4, "filter.function",
         "cannot import 'radbridge_no_such_module.rules':"
         " No module named 'radbridge_no_such_module'"),
        (6, "transformers[0]", "module 'os.path' has no attribute 'no_such_function'"),
        (7, "transformers[1].function", "'os.path:sep' is not callable (it is a str)"),
    ]


def test_module_failing_at_import_is_reported_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "radbridge_test_broken_rules.py", "raise RuntimeError('boom\\nmore')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [issue] = issues_in("""\
name: alpha
source: {type: http}
filter: {function: "radbridge_test_broken_rules:keep"}
destinations: [{name: a, type: "null"}]
""")
    assert (issue.line, issue.path) == (3, "filter.function")
    assert issue.message == (
        "importing 'radbridge_test_broken_rules' raised RuntimeError: boom more"
    )


# --- many problems at once -----------------------------------------------------------


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """\
name: alpha
source:
  type: http
  bogus: 1
transformers:
  - text.strp
destinations:
  - name: one
    type: foo
  - name: two
    type: file
  - name: three
    type: file
    directory: ${OUT_DIR}
    queue: {max_attempts: 0}
  - name: four
    type: channel
    channel: nowhere
""")
    b = write(tmp_path, "b.yaml", VALID)
    c = write(tmp_path, "c.yml", "name: [\n")
    d = write(tmp_path, "d.yaml", "")
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path, tmp_path / "missing.yaml"], env={})
    found = [(i.file, i.line, i.path) for i in caught.value.issues]
    assert found == [
        (str(tmp_path / "missing.yaml"), None, ""),
        (str(a), 4, "source.bogus"),
        (str(a), 6, "transformers[0]"),
        (str(a), 9, "destinations[0].type"),
        (str(a), 10, "destinations[1].directory"),
        (str(a), 14, ""),  # OUT_DIR is not set
        (str(a), 15, "destinations[2].queue.max_attempts"),
        (str(b), 1, "name"),  # alpha again
        (str(c), 2, ""),
        (str(d), 1, ""),
    ]
    # c.yml could not be parsed, so 'nowhere' might be defined there: not reported


def test_no_paths_empty_directory_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_channels([], env={})
    assert [i.message for i in caught.value.issues] == ["no channel files or directories given"]
    with pytest.raises(ConfigError) as caught:
        load_channels([tmp_path, tmp_path / "nope"], env={})
    assert [(i.file, i.message) for i in caught.value.issues] == [
        (str(tmp_path), "no *.yaml or *.yml files in directory"),
        (str(tmp_path / "nope"), "no such file or directory"),
    ]


def test_config_error_text_lists_every_issue() -> None:
    with pytest.raises(ConfigError) as caught:
        load_channel_text("name: alpha\n", "c.yaml", env={})
    assert str(caught.value).splitlines() == [
        "c.yaml:1: source: required",
        "c.yaml:1: destinations: required",
    ]
