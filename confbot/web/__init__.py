"""confbot's web pages: host dashboard, participant room, photo analyzer and post-call report.

The live pages are static HTML + plain JavaScript in `static/`, talking to the JSON API, the
feed websocket and the WHIP endpoint. The report is rendered on the server
(`confbot.report_render`) with SVG plots (`confbot.web.plots`). `confbot.web.routes` serves them.
See docs/pages.md.
"""
