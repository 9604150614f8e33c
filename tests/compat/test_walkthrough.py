"""README's "Run it on a Raspberry Pi cluster", steps 2 and 3, as written: the .deb starts the
service with the packaged config (no node id), then deploy.sh gives the node the config that
step 3's heredoc writes and restarts it. The node must come up as the id that config names
(pi2 is broker 2), seen by a real client (confluent-kafka's metadata). Before the fix the first
start pinned node.toml to id 1 and pi2/pi3 refused to start.

The packaged config and the step-3 heredoc are read from the repository itself, so the test
follows the files and the README rather than a copy of them. Only `--listen` and `--raft-listen` are
overridden (the heredoc's 0.0.0.0 ports may be taken on a test machine); everything else is the
node's own. Step 3 names pi1..pi3 as the quorum's voters, which this machine cannot reach: the
node answers alone, as a Pi does until the others come up."""

from __future__ import annotations

import re
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import REPO_ROOT, Broker, finish_broker, free_port

PACKAGED_CONFIG = REPO_ROOT / "packaging" / "bramble.toml"
README = REPO_ROOT / "README.md"
# Bound on one metadata request to the node. A node whose quorum's other voters are not up
# answers only once its quorum wait (5 s) has passed; twice that leaves room on a loaded box.
METADATA_TIMEOUT_S = 20


def step3_config(host_index: int) -> str:
    """The TOML that README step 3's heredoc writes for pi<host_index>."""
    text = README.read_text()
    m = re.search(r"cat > nodes/pi\$i\.local\.toml <<EOF\n(.*?)\nEOF\n", text, re.S)
    assert m, "README step 3 no longer writes nodes/pi$i.local.toml with a heredoc"
    return m.group(1).replace("$i", str(host_index))


class ServiceNode(Broker):
    """A node started the way bramble.service starts it: `--config FILE --data-dir DIR`."""

    def __init__(self, workdir: Path, config_file: Path):
        super().__init__(workdir)
        self.config_file = config_file
        self.raft_port = free_port()

    def _command(self) -> list[str]:
        # The step-3 quorum port, 0.0.0.0:9192, may be taken on a test machine too.
        return [str(self.binary), "serve", "--config", str(self.config_file),
                "--data-dir", str(self.data_dir), "--listen", self.bootstrap,
                "--raft-listen", f"127.0.0.1:{self.raft_port}"]


def broker_ids(node: Broker) -> set[int]:
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    return set(admin.list_topics(timeout=METADATA_TIMEOUT_S).brokers)


def test_packaged_first_start_then_step3_identity(tmp_path, request):
    etc = tmp_path / "etc-bramble.toml"
    etc.write_text(PACKAGED_CONFIG.read_text())
    node = ServiceNode(tmp_path, etc)
    try:
        # Step 2: the package's postinst starts the service with its own config.
        node.start()
        assert broker_ids(node) == {1}
        assert node.stop() == 0
        # Step 3: deploy.sh installs pi2's config and restarts the service.
        etc.write_text(step3_config(2))
        node.start()
        assert broker_ids(node) == {2}, node.log_tail()
        # And a plain restart keeps it node 2.
        assert node.stop() == 0
        node.start()
        assert broker_ids(node) == {2}
    finally:
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        problems = finish_broker(node, failed)
    assert not problems, "\n".join(problems)
