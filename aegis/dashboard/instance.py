"""placeholder"""

import panel as pn

from .frame import DashboardContext, html_pane, page


def instance_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/instance", "instance", lambda s, c: (html_pane("todo"), lambda snap: None))
