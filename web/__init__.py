"""The web page's helpers: browser test harness and README screenshot (the page itself is app.py)."""
