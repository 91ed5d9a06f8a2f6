import io
import json
import logging
from collections.abc import Iterator

import pytest

from cascade_server.logs import bind_request, configure_logging, get_logger
from cascade_server.settings import LogFormat, Settings

EARLY = get_logger("cascade_server.logs_test.early")
"""Made at import, before any configuration, as modules make theirs."""


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What is logged at WARNING and above, as console lines."""
    stream = io.StringIO()
    configure_logging(
        Settings(_env_file=None, log_level="WARNING"), service="logs-test", stream=stream
    )
    yield stream
    configure_logging(Settings(_env_file=None, log_level="DEBUG"), service="test")


def test_lines_below_the_level_are_dropped_and_the_rest_keep_their_fields(
    lines: io.StringIO,
) -> None:
    log = get_logger("cascade_server.logs_test")
    bind_request(request_id="r-42")
    log.debug("quiet detail", n=1)
    log.info("page served", n=2)
    log.warning("stage degraded", n=3)
    [line] = lines.getvalue().splitlines()
    assert "stage degraded" in line
    assert "request_id=r-42" in line
    assert "n=3" in line
    assert "service=logs-test" in line
    assert "[cascade_server.logs_test]" in line


def test_a_logger_made_before_configuration_follows_each_later_one(lines: io.StringIO) -> None:
    EARLY.warning("first", n=1)
    other = io.StringIO()
    configure_logging(
        Settings(_env_file=None, log_level="ERROR"), service="logs-test", stream=other
    )
    EARLY.warning("second", n=2)
    EARLY.error("third", n=3)
    assert ["first" in line for line in lines.getvalue().splitlines()] == [True]
    assert ["third" in line for line in other.getvalue().splitlines()] == [True]


def test_our_lines_and_the_libraries_share_one_json_format(lines: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging(
        Settings(_env_file=None, log_level="INFO", log_format=LogFormat.JSON),
        service="logs-test",
        stream=stream,
    )
    bind_request(request_id="r-7")
    get_logger("cascade_server.logs_test").info("page served", items=["a", "b"])
    logging.getLogger("some.library").warning("retrying %s", "connect")
    try:
        raise ValueError("bad row")
    except ValueError:
        get_logger("cascade_server.logs_test").exception("import failed")
    ours, theirs, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    common = {"request_id": "r-7", "service": "logs-test"}
    assert ours == {
        **common,
        "event": "page served",
        "items": ["a", "b"],
        "level": "info",
        "logger": "cascade_server.logs_test",
        "timestamp": ours["timestamp"],
    }
    assert theirs == {
        **common,
        "event": "retrying connect",
        "level": "warning",
        "logger": "some.library",
        "timestamp": theirs["timestamp"],
    }
    assert ours["timestamp"].endswith("Z")
    assert theirs["timestamp"].endswith("Z")
    assert failed["level"] == "error"
    assert "ValueError: bad row" in failed["exception"]
