"""Every ``credit-node`` command, in the order ``credit-node --help`` lists them.

Development commands (``demo``, ``sample``) are found through the entry points of the
``creditexchange.commands`` group, so the node's own modules never import them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from creditexchange.node.cli import exchange, gateway, history, node, records, repair, report
from creditexchange.node.cli.audit import audit_app
from creditexchange.node.cli.backup import backup, restore
from creditexchange.node.cli.catalog import catalog_app
from creditexchange.node.cli.certs import certs_app
from creditexchange.node.cli.config import config_app
from creditexchange.node.cli.departments import departments_app
from creditexchange.node.cli.health import health
from creditexchange.node.cli.measures import measures_app
from creditexchange.node.cli.objections import objection_app
from creditexchange.node.cli.policy import policy_app
from creditexchange.node.cli.sync import sync_app

__all__ = ["app"]

COMMANDS_GROUP = "creditexchange.commands"

app = typer.Typer(
    name="credit-node",
    help="Credit Exchange Node: share public credit information between cities without pooling it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(node.init)
app.add_typer(node.db_app, name="db")
app.add_typer(config_app, name="config")
app.command()(backup)
app.command()(restore)
app.add_typer(catalog_app, name="catalog")
app.command("import")(records.import_)
app.command()(records.show)
app.command("check-id")(records.check_id)
app.command()(history.history)
app.add_typer(objection_app, name="objection")
app.command()(repair.repair)
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(certs_app, name="certs")
app.command()(exchange.serve)
app.command()(exchange.query)
app.add_typer(report.report_app, name="report")
app.command()(report.check)
app.command("gateway")(gateway.gateway)
app.add_typer(gateway.partners_app, name="partners")
app.add_typer(gateway.auditors_app, name="auditors")
app.add_typer(measures_app, name="measures")
app.add_typer(sync_app, name="sync")
app.add_typer(departments_app, name="departments")
app.command()(health)
for _command in entry_points(group=COMMANDS_GROUP):
    app.command(_command.name)(_command.load())
