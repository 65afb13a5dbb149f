"""Browser-session plumbing without a browser: a page that has no session token yet can never act
under a shared owner (that was how two fresh pages could cancel each other's jobs)."""

from __future__ import annotations

import pytest

from sdui.jobs import Job, JobQueue
from sdui.types import GenerationRequest, JobState
from sdui.ui import session


@pytest.fixture()
def queue(make_engine):
    q = JobQueue(make_engine()).start()
    yield q
    q.stop()


def _long_request() -> GenerationRequest:
    return GenerationRequest(prompt="a long job", model="tiny", steps=150, width=64, height=64)


def test_owner_needs_a_token():
    assert session.owner_for("") is None and session.owner_for(None) is None
    a, b = session.new_token(), session.new_token()
    assert a != b and session.owner_for(a) != session.owner_for(b)


def test_no_token_submits_nothing_and_says_the_page_is_loading(queue):
    updates = list(session.run_job(queue, _long_request(), session.owner_for("")))
    assert len(updates) == 1 and updates[0]["error"] == session.NOT_READY
    assert queue.pending_count == 0 and queue.running is None and not queue._jobs


def test_a_page_without_token_cannot_cancel_or_list_anothers_job(queue):
    owner = session.owner_for(session.new_token())
    job = queue.submit(_long_request(), owner)
    try:
        assert "Nothing of yours" in session.interrupt(queue, "")
        assert session.history_items(queue, session.owner_for(""), session.Publisher()) == []
        assert not job.cancel_event.is_set() and job.state in ("queued", "running")
    finally:
        queue.cancel(owner)
        job.wait(60)
    assert job.state == "cancelled"


def test_interrupt_is_said_on_the_jobs_own_line_and_the_button_leaves_the_line_alone(queue):
    """The Interrupt button's answer and the Generate event's final "Interrupted" are two events writing
    one status line: whichever reached the page last stayed. Only the job's own line speaks now."""
    token = session.new_token()
    updates = session.run_job(queue, _long_request(), session.owner_for(token))
    next(updates)  # submitted
    job = next(j for j in queue._jobs.values() if j.owner == session.owner_for(token))
    for _ in range(600):  # until it is sampling (the model loads first)
        if job.progress is not None:
            break
        job.wait(0.1)
    assert session.interrupt(queue, token) is None  # no status line from the button (the page keeps its line)
    assert "Interrupting…" in session.progress_html(job, 0)
    last = list(updates)[-1]
    assert job.state == "cancelled" and "Interrupted" in last["status"]
    assert "Nothing of yours is running." in session.interrupt(queue, token)  # nothing left: the button says so


def test_skip_is_said_on_the_jobs_own_line():
    job = Job(request=_long_request(), owner="ui:x", state=JobState.RUNNING)
    assert "Skipping" not in session.progress_html(job, 0)
    job.skip_event.set()
    assert "Skipping this image…" in session.progress_html(job, 0)
    job.cancel_event.set()
    assert "Interrupting…" in session.progress_html(job, 0)


def test_queue_refuses_a_job_without_owner(queue):
    with pytest.raises(ValueError, match="owner"):
        queue.submit(_long_request(), "")


def test_refusals_read_as_sentences_and_an_empty_seed_is_random():
    from sdui.types import InvalidRequest

    assert session.request_fields({"seed": None})["seed"] == -1
    assert session.request_fields({"seed": ""})["seed"] == -1
    with pytest.raises(InvalidRequest) as too_long:
        session.request_fields({"seed": 12345678901234567890123.0})
    assert session.sentence(too_long.value) == "The seed must be at most 4294967295."
    assert session.sentence(InvalidRequest("mask", "empty", "x")) == "Paint over the part to change, then Generate."
    assert session.sentence(InvalidRequest("steps", 0, "an integer from 1 to 150")) == \
        "Sampling steps must be an integer from 1 to 150."


def test_token_counts_as_a1111_shows_them_without_loading_a_model(make_engine):
    engine = make_engine()
    assert engine.prompt_tokens("") == (0, 75)
    assert engine.prompt_tokens("a photo of a cat <lora:style:0.8>") == (5, 75)
    assert engine.prompt_tokens("cat " * 80) == (80, 150)
    assert engine.prompt_tokens("a BREAK b") == (2, 150)
    assert engine.manager.status()["current"] is None  # nothing was loaded to count


def test_a_closed_page_leaves_no_traceback_but_real_errors_stay():
    import logging
    import sys

    from starlette.requests import ClientDisconnect

    from sdui.ui.app import QuietDisconnects

    def record(exc):
        try:
            raise exc
        except BaseException:  # noqa: B036 - the record needs the live exc_info
            return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application",
                                     None, sys.exc_info())

    def wrapped():
        try:
            raise GeneratorExit
        except GeneratorExit:
            raise RuntimeError("async generator ignored GeneratorExit")  # noqa: B904 - as asyncio reports it

    quiet = QuietDisconnects()
    assert not quiet.filter(record(ClientDisconnect()))
    try:
        wrapped()
    except RuntimeError as e:
        assert not quiet.filter(record(e))
    assert quiet.filter(record(ValueError("a real bug")))
