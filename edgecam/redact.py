"""Credentials in URLs hidden wherever a camera source is shown: logs, status lines, ``check-config``, errors."""

import re

_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/?#\s]*)@", re.IGNORECASE)
"""A URL's scheme and user information: up to the authority's last '@' (RFC 3986 section 3.2.1)."""


SECRET_PARAMETERS = ("password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "api_key", "access_token")
"""Query parameters whose values are secrets, from camera URL forms in use: Foscam's CGI (``usr=..&pwd=..``),
Reolink's and Amcrest's HTTP APIs (``user=..&password=..``, ``token=..``), and OAuth 2 bearer tokens in a URI
(RFC 6750 section 2.3, ``access_token=..``); the rest are their common spellings."""
_SECRET_QUERY = re.compile(rf"([?&;](?:{'|'.join(SECRET_PARAMETERS)})=)[^&;#\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden, fit for logs, status lines and ``check-config``.

    ``user:password@`` becomes ``user:***@``; a user alone (it may be a token) becomes ``***@``; the value of a
    query parameter named in SECRET_PARAMETERS (any case) becomes ``***``.
    """

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match[2].partition(":")
        return f"{match[1]}{user}:***@" if colon else f"{match[1]}***@"

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(hide, text))
