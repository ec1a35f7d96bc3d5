// A NATS cluster for tests: three private nats-server nodes on free 127.0.0.1 ports, routed to
// one another, each with its own JetStream store and MQTT listener, the MQTT streams and consumers
// replicated on all three (`stream_replicas`, `consumer_replicas`: a persistent session survives
// the loss of its node). Each node can be stopped, killed (SIGKILL) and started again on its ports.
import { randomBytes } from 'node:crypto';

import { freePorts } from './brokerProcess';
import { type ClusterNode, clusterRequired, type TestCluster } from './cluster';
import { type NatsBroker, natsSkip, startNats } from './nats';

/** A node of the cluster, with its nats-server (ports, folder, log). */
export interface NatsClusterNode extends ClusterNode {
    readonly broker: NatsBroker;
}

/** Three nodes, started together: JetStream needs a quorum (two of three) before any node answers MQTT. */
export interface NatsCluster extends TestCluster {
    readonly kind: 'nats';
    readonly nodes: readonly NatsClusterNode[];
}

/** For `describe(..., { skip: natsClusterSkip() })`: why the NATS cluster cannot run, or false. */
export function natsClusterSkip(): string | false {
    return clusterRequired('nats') ? false : natsSkip();
}

/** Starts a three-node cluster; resolves once every node answers an MQTT CONNECT. */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
    const routes = await freePorts(size);
    const name = `pip-mqtt-cluster-${randomBytes(4).toString('hex')}`;
    const started = await Promise.allSettled(routes.map((port) => startNats({ cluster: { name, port, routes } })));
    const brokers = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    const stop = async (): Promise<void> => {
        await Promise.all(brokers.map((broker) => broker.cleanup()));
    };
    if (failed) {
        await stop();
        throw failed.reason;
    }
    const nodes = brokers.map((broker, i): NatsClusterNode => ({
        name: `nats-${i + 1}`,
        url: broker.url,
        broker,
        start: () => broker.start(),
        stop: () => broker.stop(),
        kill: (signal) => broker.kill(signal),
    }));
    return {
        kind: 'nats',
        nodes,
        keepsSessions: true,
        losesAtPublisherLoss: 'NATS 2.9 loses some QoS 1 messages it acknowledged while the publisher\'s node shuts down ' +
            '(its log: `timeout for request type "MS"`, later `deleted message`)',
        settings: `${size} routed nodes with JetStream; \`mqtt { stream_replicas: ${size}, consumer_replicas: ${size} }\``,
        stop,
    };
}
