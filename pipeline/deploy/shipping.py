"""`ship` as a use case: ask every node for its image ID, decide which lack the image, then move only
the layers each lacks; `--dry-run` prints the decision and moves nothing. The nodes a ship failed on are
recorded for `--limit @failed`."""

from __future__ import annotations

from pipeline import paths
from pipeline.config.cluster import ClusterSpec
from pipeline.deploy.failed import record_failed
from pipeline.engines.docker import Docker
from pipeline.nodes.hosts import Hosts
from pipeline.report import Reporter
from pipeline.ship.shipper import Shipper, ShipPlan, ShipResult


class ImageShipping:
    def __init__(self, spec: ClusterSpec, reporter: Reporter, docker: Docker | None = None):
        self.spec = spec
        self.hosts = Hosts(spec)
        self.shipper = Shipper(
            self.hosts, docker or Docker(), paths.ship_workdir(), spec.registry_port, progress=reporter.transfer
        )

    def plan(self, image: str, mode: str = "registry", force: bool = False) -> ShipPlan:
        return self.shipper.plan(image, self.spec.ordered(), mode, force)

    def ship(self, image: str, mode: str = "registry", force: bool = False) -> list[ShipResult]:
        """Plan and apply in one go (Docker's export starts while the nodes are asked)."""
        results = self.shipper.ship(image, self.spec.ordered(), mode=mode, force=force)
        record_failed(paths.failed_hosts_file(), [r.node.label for r in results if r.status == "failed"])
        return results

    def close(self) -> None:
        self.hosts.close()
