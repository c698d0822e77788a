"""The operators' dashboard: a Panel/Bokeh process that is a client of the management API only.

``aegis dashboard`` runs it (:func:`aegis.dashboard.server.serve_dashboard`). One :class:`~aegis.dashboard.feed.Feed`
per process polls the API with the dashboard's own read-only key and feeds every browser session; what a person
does (definitions, charts, configuration) goes to the API with that person's own token, kept server-side.
"""
