import io
import logging
from collections.abc import Iterator

import pytest

from cascade_server.logs import bind_request, configure_logging, get_logger
from cascade_server.settings import Settings


@pytest.fixture
def warning_lines() -> Iterator[io.StringIO]:
    configure_logging(Settings(_env_file=None, log_level="WARNING"), service="logs-test")
    [handler] = logging.getLogger().handlers
    lines = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(lines)
    yield lines
    configure_logging(Settings(_env_file=None, log_level="DEBUG"), service="test")


def test_lines_below_the_level_are_dropped_and_the_rest_keep_their_fields(
    warning_lines: io.StringIO,
) -> None:
    log = get_logger("cascade_server.logs_test")
    bind_request(request_id="r-42")
    log.debug("quiet detail", n=1)
    log.info("page served", n=2)
    log.warning("stage degraded", n=3)
    [line] = warning_lines.getvalue().splitlines()
    assert "stage degraded" in line
    assert "request_id=r-42" in line
    assert "n=3" in line
    assert "service=logs-test" in line
