"""A store's leaf link to HQ can be switched off and on by config reload (SIGHUP),
without restarting the till's nats-server: how a store is cut from HQ alone."""

from __future__ import annotations

from dataclasses import replace

from broker.config import render_config
from broker.server import EmbeddedNatsServer
from tests.broker.kit import ServerPool, Site, hq_config, store_configs, wait_leafs, wait_until


def _with_leaf(srv: EmbeddedNatsServer, *, disabled: bool):
    remotes = tuple(replace(r, disabled=disabled) for r in srv.config.leaf_remotes)
    return replace(srv.config, leaf_remotes=remotes)


async def _leafs(srv: EmbeddedNatsServer) -> int:
    return int((await srv.monitor("/leafz"))["leafnodes"])


async def test_disabling_the_leaf_remote_drops_the_link_and_enabling_restores_it(
    servers: ServerPool, site: Site
) -> None:
    hub = await servers.start(hq_config(site, ["s1"]))
    (config,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.leaf_port}"])
    till = await servers.start(config)
    await wait_leafs(hub, 1)
    pid = till.pid

    await till.reload(_with_leaf(till, disabled=True))
    assert "disabled: true" in render_config(till.config)

    async def hub_has_no_leaf() -> bool:
        return await _leafs(hub) == 0

    await wait_until(hub_has_no_leaf, "the hub to lose the store's leaf", timeout=10)
    assert till.pid == pid and till.running  # reloaded, not restarted

    await till.reload(_with_leaf(till, disabled=False))
    await wait_leafs(hub, 1)
    assert till.pid == pid
