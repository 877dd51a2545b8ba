"""The web page's helpers: browser test harness and docs/web.md screenshot (the page itself is app.py)."""
