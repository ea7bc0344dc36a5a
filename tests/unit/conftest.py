"""Unit tests live in one folder per stage (tests/unit/<stage>/, as orchestrator/ is
laid out); the helpers they share (synth, package_index, report_data, report_checks)
stay here. pytest puts this folder on sys.path because this conftest is in it."""
