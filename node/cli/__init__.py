"""``credit-node``: the one command for operating a Credit Exchange Node."""

from __future__ import annotations

import typer

from creditexchange.node.cli import exchange, store
from creditexchange.node.cli.audit import audit_app
from creditexchange.node.cli.certs import certs_app
from creditexchange.node.cli.demo import demo
from creditexchange.node.cli.policy import policy_app

app = typer.Typer(
    name="credit-node",
    help="Credit Exchange Node: share public credit information between cities without pooling it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(store.init)
app.add_typer(store.db_app, name="db")
app.add_typer(store.catalog_app, name="catalog")
app.command("import")(store.import_)
app.command()(store.show)
app.command()(store.sample)
app.command("check-id")(store.check_id)
app.add_typer(store.objection_app, name="objection")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(certs_app, name="certs")
app.command()(exchange.serve)
app.command()(exchange.query)
app.command()(demo)


def main() -> None:
    app()
