"""Who the server's owner is, as the UI sees it: with ``--gradio-auth`` the first login (the same rule
as the API's admin, the first credential); without a login, whoever uses a local (not ``--listen``)
server. The History tab shows the owner the images of no known owner; the Settings tab lets only the
owner change the server's defaults when there are logins."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional

BROWSER_KEY_NAME = ".sdui-browser-key"


def login_of(request) -> Optional[str]:
    """The logged-in user of a Gradio request (None without --gradio-auth)."""
    return getattr(request, "username", None) if request is not None else None


def server_owner_login(settings) -> Optional[str]:
    """The first --gradio-auth (else --gradio-auth-path) user, or None without logins."""
    text = getattr(settings, "gradio_auth", None) or ""
    path = getattr(settings, "gradio_auth_path", None)
    if not text and path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            text = ""
    for part in text.replace("\n", ",").split(","):
        if ":" in part:
            return part.split(":", 1)[0].strip()
    return None


def is_server_owner(settings, request, local_counts: bool = True) -> bool:
    """With logins: the first one. Without: True where ``local_counts`` and the server is not --listen."""
    owner = server_owner_login(settings)
    if owner is not None:
        return login_of(request) == owner
    return local_counts and not getattr(settings, "listen", False)


def browser_secret(settings) -> str:
    """The key the page's browser-kept values (the session token, this browser's defaults) are encrypted
    with, kept in the outputs folder (owner-readable only) so that a restarted server still reads them:
    Gradio's own default is a new random key per start, which would give every browser a new session,
    and so an empty History, after each restart."""
    path = Path(getattr(settings, "outputs_dir", "outputs")) / BROWSER_KEY_NAME
    try:
        key = path.read_text(encoding="ascii").strip()
        if len(key) >= 32:
            return key
    except (OSError, UnicodeDecodeError):
        pass
    key = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key)
    except OSError:
        pass  # a read-only outputs folder: this run's key only
    return key
