"""placeholder"""

import panel as pn

from .frame import DashboardContext, html_pane, page


def groups_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/groups", "groups", lambda s, c: (html_pane("todo"), lambda snap: None))
