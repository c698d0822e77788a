"""placeholder"""

import panel as pn

from .frame import DashboardContext, html_pane, page


def services_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/services", "services", lambda s, c: (html_pane("todo"), lambda snap: None))
