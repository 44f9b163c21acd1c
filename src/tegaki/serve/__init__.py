"""tegaki's HTTP server: the JSON API and the drawing page (see app.py)."""
