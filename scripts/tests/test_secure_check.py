"""The metric checks of embedstream_py.secure_check: they pass on a faithful
pair of scrapes (the layout `embedstream serve --metrics-addr` writes) and
fail, saying why, on each injected fault. The grpcio and pyarrow.flight
parts need a TLS server with a token and run in scripts/ci_crosschecks.sh.

    python -m pytest scripts/tests/test_secure_check.py -q
"""
from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from embedstream_py.secure_check import metric_problems  # noqa: E402

EXPECT = {"rows": {"StreamEmbedding": 2499, "DoGet": 1499},
          "finished_ok": {"StreamEmbedding": 3, "DoGet": 2},
          "refused": {"UNAUTHENTICATED": 5}, "file_rows": 1000}


def exposition(rows_se=0, rows_dg=0, ok_se=0, ok_dg=0, unauth=0, active_se=0,
               rows_type="counter", rows_name="embedstream_rows_sent_total",
               histogram_sum=True, help_rows=True, file_rows=1000) -> str:
    hist = []
    for rpc, count in (("StreamEmbedding", ok_se and 1), ("DoGet", ok_dg and 1)):
        for le in ("0.001", "0.01", "+Inf"):
            hist.append(f'embedstream_resume_first_message_seconds_bucket{{rpc="{rpc}",le="{le}"}}'
                        f" {count}")
        if histogram_sum:
            hist.append(f'embedstream_resume_first_message_seconds_sum{{rpc="{rpc}"}} 0.0009')
        hist.append(f'embedstream_resume_first_message_seconds_count{{rpc="{rpc}"}} {count}')
    lines = [
        "# HELP embedstream_build_info Always 1; the labels describe the build.",
        "# TYPE embedstream_build_info gauge",
        'embedstream_build_info{version="0.1.0"} 1',
        "# HELP embedstream_bytes_sent_total Response bytes.",
        "# TYPE embedstream_bytes_sent_total counter",
        'embedstream_bytes_sent_total{rpc="DoGet"} 2466818',
        'embedstream_bytes_sent_total{rpc="StreamEmbedding"} 4050540',
        "# HELP embedstream_file_bytes Size of the file.",
        "# TYPE embedstream_file_bytes gauge",
        "embedstream_file_bytes 1646114",
        "# HELP embedstream_file_generation Generation.",
        "# TYPE embedstream_file_generation gauge",
        "embedstream_file_generation 1",
        "# HELP embedstream_file_rows Rows in the file served now.",
        "# TYPE embedstream_file_rows gauge",
        f"embedstream_file_rows {file_rows}",
        "# HELP embedstream_requests_refused_total Refused calls.",
        "# TYPE embedstream_requests_refused_total counter",
        f'embedstream_requests_refused_total{{code="UNAUTHENTICATED"}} {unauth}',
        "# HELP embedstream_resume_first_message_seconds Resume latency.",
        "# TYPE embedstream_resume_first_message_seconds histogram",
        *hist,
        *(["# HELP embedstream_rows_sent_total Rows handed to the transport."]
          if help_rows else []),
        f"# TYPE {rows_name} {rows_type}",
        f'{rows_name}{{rpc="DoGet"}} {rows_dg}',
        f'{rows_name}{{rpc="StreamEmbedding"}} {rows_se}',
        "# HELP embedstream_streams_active Calls running now.",
        "# TYPE embedstream_streams_active gauge",
        'embedstream_streams_active{rpc="DoGet"} 0',
        f'embedstream_streams_active{{rpc="StreamEmbedding"}} {active_se}',
        "# HELP embedstream_streams_finished_total Finished calls.",
        "# TYPE embedstream_streams_finished_total counter",
        f'embedstream_streams_finished_total{{code="OK",rpc="DoGet"}} {ok_dg}',
        f'embedstream_streams_finished_total{{code="OK",rpc="StreamEmbedding"}} {ok_se}',
        "# HELP embedstream_streams_started_total Started calls.",
        "# TYPE embedstream_streams_started_total counter",
        f'embedstream_streams_started_total{{rpc="DoGet"}} {ok_dg}',
        f'embedstream_streams_started_total{{rpc="StreamEmbedding"}} {ok_se}',
        "# HELP process_cpu_seconds_total CPU time.",
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 0.5",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 21045248",
    ]
    return "\n".join(lines) + "\n"


BEFORE = exposition()
GOOD = dict(rows_se=2499, rows_dg=1499, ok_se=3, ok_dg=2, unauth=5)


def test_faithful_scrapes_pass():
    assert metric_problems(BEFORE, exposition(**GOOD), EXPECT) == []


@pytest.mark.parametrize("fault,message", [
    ({"rows_se": 2498}, "rows_sent_total{rpc=StreamEmbedding} went up by 2498"),
    ({"rows_dg": 1500}, "rows_sent_total{rpc=DoGet} went up by 1500"),
    ({"ok_se": 2}, "streams_finished_total{rpc=StreamEmbedding,code=OK} went up by 2"),
    ({"unauth": 4}, "requests_refused_total{code=UNAUTHENTICATED} went up by 4"),
    ({"active_se": 1}, "streams_active{rpc=StreamEmbedding} is not 0"),
    ({"file_rows": 999}, "file_rows is 999"),
    ({"rows_type": "gauge", "rows_name": "embedstream_rows_sent"},
     "embedstream_rows_sent is a gauge, expected a counter"),
    ({"histogram_sum": False}, "embedstream_resume_first_message_seconds{rpc=StreamEmbedding} has samples"),
    ({"help_rows": False}, "embedstream_rows_sent has no HELP text"),
])
def test_metric_faults_are_caught(fault, message):
    problems = metric_problems(BEFORE, exposition(**{**GOOD, **fault}), EXPECT)
    assert any(message in p for p in problems), problems


def test_missing_families_and_garbage():
    problems = metric_problems(BEFORE, "embedstream_file_rows 1000\n", EXPECT)
    assert "family embedstream_rows_sent is missing" in problems
    assert "family process_cpu_seconds is missing" in problems
    assert metric_problems(BEFORE, "not { an exposition", EXPECT)[0].startswith(
        "prometheus_client cannot parse the exposition")
