"""GET /: the web page. page.html is one file with its script and style inline and
fetches nothing from elsewhere; it is served with a Content-Security-Policy that lets
the browser run only that script and style (by their sha256) and talk only to this
service."""
import base64
import hashlib
import os
import re

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


def _hashes(html, tag):
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


class Page:
    def __init__(self, path=PAGE):
        with open(path, encoding="utf-8") as handle:
            self.html = handle.read()
        policy = (f"default-src 'none'; connect-src 'self'; img-src 'self' blob: data:; "
                  f"script-src {_hashes(self.html, 'script')}; style-src {_hashes(self.html, 'style')}; "
                  f"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        self.headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                        "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
