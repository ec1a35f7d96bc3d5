// A NATS cluster for tests: three private nats-server nodes on free 127.0.0.1 ports, routed to
// one another, each with its own JetStream store and MQTT listener, the MQTT streams and consumers
// replicated on all three (`stream_replicas`, `consumer_replicas`: a persistent session survives
// the loss of its node). Each node can be stopped, killed (SIGKILL) and started again on its ports.
import { randomBytes } from 'node:crypto';

import { freePorts } from './brokerProcess';
import { type NatsBroker, startNats } from './nats';

/** Three nodes, started together: JetStream needs a quorum (two of three) before any node answers MQTT. */
export interface NatsCluster {
    readonly nodes: readonly NatsBroker[];
    /** Stops every node and removes their folders. */
    stop(): Promise<void>;
}

/** Starts a three-node cluster; resolves once every node answers an MQTT CONNECT. */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
    const routes = await freePorts(size);
    const name = `pip-mqtt-cluster-${randomBytes(4).toString('hex')}`;
    const started = await Promise.allSettled(routes.map((port) => startNats({ cluster: { name, port, routes } })));
    const nodes = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    const stop = async (): Promise<void> => {
        await Promise.all(nodes.map((node) => node.cleanup()));
    };
    if (failed) {
        await stop();
        throw failed.reason;
    }
    return { nodes, stop };
}
