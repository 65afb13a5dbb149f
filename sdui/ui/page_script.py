"""A classic script at the top of the studio page's ``<head>``, run before Gradio's own modules.

Gradio's status tracker redraws its elapsed-time text on every animation frame while an event is
pending, and the tracker shown while the page loads keeps that loop running after the app is up:
60 wake-ups a second on an idle page (0.55 s of CPU every 7 s in headless Chromium on the bench
host, against 0.03 s for a blank page), taken from the job on a small machine that runs the browser
and the model both, and from a laptop's battery. Gradio's modules keep their own reference to
``requestAnimationFrame``, so a script that runs after them (``js=``, ``head=``) cannot reach the
loop; this one is written into the HTML before them. It spaces the tracker's frames to 4 a second
(the text shows tenths; nothing else waits on those frames) and leaves every other caller alone:
an idle page with the bench's models listed went from 0.61–0.88 s to 0.20–0.27 s of Chromium CPU
per 10 s. ``window.sduiSpacedFrames`` counts the spaced frames (the browser test reads it).
"""

from __future__ import annotations

from ..security import edit_html_answer

FRAME_THROTTLE = """<script>(() => {
  const frame = window.requestAnimationFrame.bind(window);
  let throttled = 0;
  window.requestAnimationFrame = (callback) => {
    if (!(new Error().stack || "").includes("/statustracker-")) return frame(callback);
    setTimeout(() => { window.sduiSpacedFrames = (window.sduiSpacedFrames || 0) + 1; frame(callback); }, 250);
    return --throttled;  // a negative id: cancelAnimationFrame ignores it, and the tracker never cancels
  };
})();</script>"""


class PageScript:
    """Pure ASGI middleware (the streaming answers pass through untouched): on ``GET`` of ``path``,
    an HTML answer gets ``script`` right after ``<head>`` and its Content-Length set to match."""

    def __init__(self, app, script: str = FRAME_THROTTLE, path: str = "/"):
        self.app, self.script, self.path = app, script.encode(), path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, edit_html_answer(
            send, lambda body: body.replace(b"<head>", b"<head>" + self.script, 1), encoded_too=False))
